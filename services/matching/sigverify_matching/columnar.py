"""The columnar roll index: one roll version as integer-coded numpy columns.

Pure: no I/O. Every voter is a row of small integers (codes into sorted vocabularies of
normalised strings, dates as integers); blocking keys are sorted int64 arrays, so that the
candidate voters of a whole batch of signatures come from one ``np.searchsorted`` per rule.
Nothing on the hot path is a Python object per voter.

Built once per roll version (``IndexBuilder``: chunks of roll rows in, ``VoterIndex`` out),
saved as one byte string (``VoterIndex.dumps``) and loaded by every matcher replica
(``VoterIndex.loads``) in a fraction of the build time.

Normalisation is ``sigverify_matching.domain``'s (unidecode, nameparser-free token rules,
usaddress with scourgify's USPS tables, the ``nicknames`` package, metaphone), so a
signature and a voter are normalised by one code path.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
from rapidfuzz import process
from rapidfuzz.distance import OSA

from sigverify_matching import hypocorisms
from sigverify_matching.domain import (
    _NICKNAMER,
    PersonName,
    first_name_keys,
    normalize_address,
    normalize_county,
    normalize_text,
    person_name,
    phonetic,
)

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]

FORMAT = 4  # bumped when the saved layout or what it is built from (nicknames) changes

STATUSES = ("ACTIVE", "INACTIVE", "CANCELLED")
SUFFIX_CODES = {"": 0, "JR": 1, "SR": 2, "II": 3, "III": 4, "IV": 5}
_NICK_WIDTH = 8  # canonical keys kept per given name (nicknames of many names are cut)
#: keys kept for a misspelt name (the names one edit from a short one are many: AT is ANT,
#: ART, NAT, PAT ... and their canonical names 44 keys; cut to 8, ANTHONY was lost)
_TYPO_WIDTH = 64


# ----------------------------------------------------------------------------- vocabularies


class Vocab:
    """Sorted distinct ASCII strings; a string's code is its position."""

    __slots__ = ("_decoded", "_unicode", "values")

    def __init__(self, values: npt.NDArray[np.bytes_]) -> None:
        self.values = values
        self._decoded: dict[int, str] = {}
        #: ``values`` decoded once (made on first use; kept with the array it decodes)
        self._unicode: tuple[npt.NDArray[np.bytes_], npt.NDArray[np.str_]] | None = None

    def __len__(self) -> int:
        return len(self.values)

    @classmethod
    def of(cls, strings: Iterable[str]) -> tuple[Vocab, dict[str, int]]:
        """A vocabulary of ``strings`` and the map from each to its code."""
        ordered = sorted(set(strings))
        arr = np.array([s.encode("ascii", "replace") for s in ordered], dtype="S")
        if not ordered:
            arr = np.zeros(0, dtype="S1")
        return cls(arr), {s: i for i, s in enumerate(ordered)}

    def codes(self, strings: Sequence[str]) -> I32:
        """Codes of ``strings`` (-1 for a string not in the vocabulary or empty)."""
        if not strings or not len(self.values):
            return np.full(len(strings), -1, dtype=np.int32)
        try:  # normalised strings are ASCII: numpy encodes them itself
            q = np.array(strings, dtype="S")
        except UnicodeEncodeError:
            q = np.array([s.encode("ascii", "replace") for s in strings], dtype="S")
        pos = np.searchsorted(self.values, q).astype(np.int32)
        pos[pos >= len(self.values)] = 0
        found = self.values[pos] == q
        out = np.where(found, pos, -1).astype(np.int32)
        out[q == b""] = -1
        return out

    def text(self, code: int) -> str:
        s = self._decoded.get(code)
        if s is None:
            s = self._decoded[code] = self.values[code].decode("ascii")
        return s

    def strs(self, codes: npt.NDArray[Any]) -> npt.NDArray[np.str_]:
        """The strings of ``codes`` (all valid) as a numpy unicode array."""
        if not len(codes):
            return np.zeros(0, dtype="U1")
        got = self._unicode
        if got is None or got[0] is not self.values:
            got = self._unicode = (self.values, np.asarray(self.values.astype("U")))
        return np.asarray(got[1][codes])


# ------------------------------------------------------------------------- key hashing

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M3 = np.uint64(0x165667B19E3779F9)


def mix(*parts: npt.NDArray[Any]) -> U64:
    """One 64-bit key from integer columns (a collision only adds a spurious candidate)."""
    with np.errstate(over="ignore"):
        h = np.full(len(parts[0]), 0x27D4EB2F165667C5, dtype=np.uint64)
        for i, p in enumerate(parts):
            h ^= (p.astype(np.int64).astype(np.uint64) + np.uint64(i + 1)) * (_M1, _M2, _M3)[i % 3]
            h = (h ^ (h >> np.uint64(29))) * _M2
        return h ^ (h >> np.uint64(32))


# ------------------------------------------------------------------ per-name side tables


def _names_by_length() -> dict[int, tuple[str, ...]]:
    names = {n.upper() for n in _NICKNAMER.nickname_lookup} | {
        n.upper() for n in _NICKNAMER.canonical_lookup} | hypocorisms.names()
    out: dict[int, list[str]] = {}
    for n in sorted(names):
        out.setdefault(len(n), []).append(n)
    return {k: tuple(v) for k, v in out.items()}


_NICK_NAMES = _names_by_length()


def _one_deleted(name: str) -> set[str]:
    """The name and every string one character shorter than it (one deleted)."""
    return {name} | {name[:i] + name[i + 1:] for i in range(len(name))}


_NICK_DELETED: dict[str, tuple[str, ...]] = {}


def _nick_deleted() -> dict[str, tuple[str, ...]]:
    """The names of the ``nicknames`` package by each string ``_one_deleted`` gives of them.
    Two strings one edit apart (OSA: a character changed, added, dropped, or two neighbours
    swapped) share such a string, so the names one edit from a name are among those filed
    under its own ``_one_deleted`` strings."""
    if not _NICK_DELETED:
        out: dict[str, list[str]] = {}
        for names in _NICK_NAMES.values():
            for n in names:
                for d in _one_deleted(n):
                    out.setdefault(d, []).append(n)
        _NICK_DELETED.update({k: tuple(v) for k, v in out.items()})
    return _NICK_DELETED


@lru_cache(maxsize=1 << 16)
def typo_names(name: str) -> frozenset[str]:
    """The names of the ``nicknames`` package one edit from ``name`` (``MKIE`` -> MIKE)."""
    if len(name) < 2:
        return frozenset()
    filed = _nick_deleted()
    near: set[str] = set()
    for d in _one_deleted(name):
        near.update(filed.get(d, ()))
    return frozenset(c for c in near
                     if c != name and OSA.distance(name, c, score_cutoff=1) <= 1)


@lru_cache(maxsize=1 << 16)
def typo_keys(name: str) -> frozenset[str]:
    """Nickname keys of the names of the ``nicknames`` package one edit from ``name``
    (``MKIE`` -> MIKE -> {MIKE, MICHAEL}): a misspelt nickname."""
    out: set[str] = set()
    for cand in typo_names(name):
        out |= first_name_keys(cand)
    return frozenset(out)


def typo_keys_by_scan(name: str) -> frozenset[str]:
    """``typo_keys`` by comparing ``name`` with every name of a neighbouring length (the
    reference ``typo_keys`` is checked against; slow)."""
    if len(name) < 2:
        return frozenset()
    out: set[str] = set()
    for length in (len(name) - 1, len(name), len(name) + 1):
        for cand, _, _ in process.extract(name, _NICK_NAMES.get(length, ()), scorer=OSA.distance,
                                          score_cutoff=1, limit=None):
            if cand != name:
                out |= first_name_keys(cand)
    return frozenset(out)


class KeyIds:
    """Integer ids for nickname keys (canonical names), shared by a roll and its batches;
    new keys get new ids (under a lock: matcher threads share one roll index)."""

    def __init__(self, ids: dict[str, int] | None = None) -> None:
        self.ids: dict[str, int] = ids if ids is not None else {}
        self._rows: dict[tuple[str, bool | str], npt.NDArray[np.int32]] = {}
        self._lock = threading.Lock()

    def of(self, keys: Iterable[str], width: int = _NICK_WIDTH) -> list[int]:
        ids = self.ids
        out = []
        for k in sorted(keys):  # ids in one order whatever the hash seed
            i = ids.get(k)
            if i is None:
                with self._lock:
                    i = ids.setdefault(k, len(ids))
            out.append(i)
        return sorted(out)[:width]

    def row(self, name: str, typo: bool | str = False) -> npt.NDArray[np.int32]:
        """The -1 padded key ids of one name (its nickname keys; with ``typo`` the keys of
        the names one edit from it; with ``typo="near"`` the ids of those names themselves),
        remembered."""
        got = self._rows.get((name, typo))
        if got is None:
            width = _TYPO_WIDTH if typo else _NICK_WIDTH
            got = np.full(width, -1, dtype=np.int32)
            if name:
                keys = (typo_names(name) if typo == "near"
                        else typo_keys(name) if typo else first_name_keys(name))
                ids = self.of(keys, width)
                got[: len(ids)] = ids
            if len(self._rows) > 200_000:
                self._rows.clear()
            self._rows[(name, typo)] = got
        return got

    def table(self, names: Sequence[str], typo: bool | str = False) -> I32:
        """(len(names), width) key ids of each name's nickname keys (-1 padded; width
        ``_NICK_WIDTH``, with ``typo`` ``_TYPO_WIDTH``)."""
        if not len(names):
            return np.full((0, _TYPO_WIDTH if typo else _NICK_WIDTH), -1, dtype=np.int32)
        return np.stack([self.row(n, typo) for n in names])

    def self_id(self, name: str) -> int:
        """The key id of the name itself (-1 for none)."""
        return self.of([name])[0] if name else -1


def key_ids(ix: VoterIndex) -> KeyIds:
    got = ix.cache.get("key_ids")
    if got is None:
        got = ix.cache.setdefault("key_ids", KeyIds(dict(ix.nick_ids)))
    return got  # type: ignore[no-any-return]


def last_parts(last_spaced: str) -> list[str]:
    return [p for p in last_spaced.split() if len(p) > 1]


# ------------------------------------------------------------------------------- the index

#: Columns per voter (name, dtype); codes are -1 where a value is missing.
VOTER_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("first", np.int32), ("middle", np.int32), ("last", np.int32), ("suffix", np.int8),
    ("dob", np.int32), ("house", np.int32), ("street", np.int32), ("stype", np.int16),
    ("sdir", np.int16), ("unit", np.int32), ("city", np.int32), ("zip", np.int32),
    ("county", np.int16), ("status", np.int8), ("registered", np.int32),
    ("n_addr", np.int32), ("n_last_addr", np.int32),
)

VOCABS = ("given", "last", "house", "street", "stype", "sdir", "unit", "city", "zip", "county",
          "phon")

#: Blocking rules: name -> the largest block that is compared whole (bigger blocks are left
#: to the other rules; the statewide name rule records how many it left, see engine).
RULES = {
    "zl": 100,   # zip + surname sound (and the sound of each part of a compound surname)
    "zf": 400,   # zip + first-name sound (and its nicknames') + surname initial: surname slips
    "hs": 300,   # house number + street name, statewide: the address, any name
    "lf": 300,   # surname + first name, statewide: moved voters, another county
    "zh": 200,   # zip + house number: street-name slips
    "sl": 300,   # county + street name + surname sound: house-number and zip slips
    "sf": 300,   # county + street name + first-name sound (its nicknames' too): surname,
                 # house-number and zip slips together
    "bf": 300,   # birth date + first initial
    "bl": 300,   # birth date + surname initial
    "bz": 300,   # birth date + zip: both names changed
    "pl": 300,   # zip's first three digits + surname sound + first initial: zip and
                 # address slips together
    "hl": 200,   # county + house number + surname sound: zip and street both wrong
    "hf": 200,   # county + house number + first-name sound (its nicknames' too): surname,
                 # street and zip all slipped
    "si": 200,   # county + street name + first initial, for a signature giving only an
                 # initial ("P MORAGN, 11113 PINE DR"): surname and house number slipped
}


@dataclass
class VoterIndex:
    """One roll version, columnar. Immutable after build; safe to read from threads."""

    version: int
    size: int
    cols: dict[str, npt.NDArray[Any]]
    vocabs: dict[str, Vocab]
    #: Per given-name code: phonetic code, first letter, nickname key ids.
    given_phon: I32
    given_nick: I32
    #: Per surname code: phonetic code and the phonetic codes of its parts (-1 padded, 3).
    last_phon: I32
    last_part_phon: I32
    #: Counts for term frequencies: voters per first name, per surname.
    n_first: I32
    n_last: I32
    #: voter ids: one ASCII blob and offsets.
    id_blob: bytes
    id_offsets: I64
    #: rule -> (sorted keys, voter index per key)
    keys: dict[str, tuple[U64, I32]]
    nick_ids: dict[str, int]
    #: Derived tables computed on first use (nickname sounds, key ids of new spellings).
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return self.size

    def voter_id(self, i: int) -> str:
        o = self.id_offsets
        return self.id_blob[o[i]: o[i + 1]].decode("ascii", "replace")

    def voter_ids(self, idx: Sequence[int]) -> list[str]:
        o, blob = self.id_offsets, self.id_blob
        return [blob[o[i]: o[i + 1]].decode("ascii", "replace") for i in idx]

    def status_text(self, i: int) -> str:
        return STATUSES[int(self.cols["status"][i])]

    def county_text(self, i: int) -> str:
        return self.vocabs["county"].text(int(self.cols["county"][i]))

    def nbytes(self) -> int:
        total = len(self.id_blob) + self.id_offsets.nbytes
        total += sum(a.nbytes for a in self.cols.values())
        total += sum(v.values.nbytes for v in self.vocabs.values())
        total += sum(k.nbytes + p.nbytes for k, p in self.keys.values())
        total += sum(a.nbytes for a in (self.given_phon, self.given_nick, self.last_phon,
                                        self.last_part_phon, self.n_first, self.n_last))
        return total

    # -- saving and loading ------------------------------------------------------------

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        """Every array of the index by its saved name."""
        arrays: dict[str, npt.NDArray[Any]] = {f"c_{k}": v for k, v in self.cols.items()}
        arrays.update({f"v_{k}": v.values for k, v in self.vocabs.items()})
        for rule, (k, p) in self.keys.items():
            arrays[f"k_{rule}"], arrays[f"p_{rule}"] = k, p
        for name in ("given_phon", "given_nick", "last_phon", "last_part_phon", "n_first",
                     "n_last", "id_offsets"):
            arrays[name] = getattr(self, name)
        arrays["id_blob"] = np.frombuffer(self.id_blob, dtype=np.uint8)
        nick = sorted(self.nick_ids.items(), key=lambda kv: kv[1])
        arrays["nick_names"] = np.array([k.encode() for k, _ in nick] or [b""], dtype="S")
        arrays["meta"] = np.array([FORMAT, self.version, self.size, len(nick)], dtype=np.int64)
        return arrays

    def chunks(self, part_bytes: int = 32 << 20) -> Iterator[bytes]:
        """The saved form in pieces of at most ``part_bytes``: a header (magic, the length
        and text of a JSON table of (name, dtype, shape, offset)), then every array's bytes
        at its offset (64-byte aligned). Made without a copy of the whole index."""
        arrays = self.arrays()
        table, offset = [], 0
        for name, a in arrays.items():
            table.append([name, a.dtype.str, list(a.shape), offset])
            offset += -(-a.nbytes // _ALIGN) * _ALIGN
        head = json.dumps(table).encode()
        start = -(-(len(_MAGIC) + 8 + len(head)) // _ALIGN) * _ALIGN
        pieces: list[memoryview | bytes] = [
            _MAGIC + len(head).to_bytes(8, "little") + head
            + b"\0" * (start - len(_MAGIC) - 8 - len(head))]
        for a in arrays.values():
            pieces.append(memoryview(np.ascontiguousarray(a)).cast("B"))  # type: ignore[arg-type]
            pad = -a.nbytes % _ALIGN
            if pad:
                pieces.append(b"\0" * pad)
        buf, size = bytearray(), 0
        for piece in pieces:
            view = memoryview(piece)
            while len(view):
                take = min(part_bytes - size, len(view))
                buf += view[:take]
                size += take
                view = view[take:]
                if size == part_bytes:
                    yield bytes(buf)
                    buf, size = bytearray(), 0
        if size:
            yield bytes(buf)

    def dumps(self) -> bytes:
        return b"".join(self.chunks())

    @classmethod
    def loads(cls, data: bytes | bytearray | memoryview) -> VoterIndex:
        """The index saved in ``data`` (``dumps``/``chunks`` joined); its arrays are views
        of ``data`` (no copy), so ``data`` is kept alive by them."""
        view = memoryview(data)
        if bytes(view[: len(_MAGIC)]) != _MAGIC:
            raise ValueError("not a saved roll index of this format (an older matcher's, or not an index)")
        n = int.from_bytes(view[len(_MAGIC): len(_MAGIC) + 8], "little")
        table = json.loads(bytes(view[len(_MAGIC) + 8: len(_MAGIC) + 8 + n]))
        base = -(-(len(_MAGIC) + 8 + n) // _ALIGN) * _ALIGN
        z: dict[str, npt.NDArray[Any]] = {}
        for name, dtype, shape, offset in table:
            dt = np.dtype(dtype)
            count = int(np.prod(shape)) if shape else 1
            z[name] = np.frombuffer(view, dtype=dt, count=count,
                                    offset=base + offset).reshape(shape)
        fmt, version, size, n_nick = (int(x) for x in z["meta"])
        if fmt != FORMAT:
            raise ValueError(f"saved index format {fmt}, this matcher reads {FORMAT}")
        names = z["nick_names"][:n_nick]
        return cls(
            version=version, size=size,
            cols={name: z[f"c_{name}"] for name, _ in VOTER_COLUMNS},
            vocabs={name: Vocab(z[f"v_{name}"]) for name in VOCABS},
            given_phon=z["given_phon"], given_nick=z["given_nick"], last_phon=z["last_phon"],
            last_part_phon=z["last_part_phon"], n_first=z["n_first"], n_last=z["n_last"],
            id_blob=z["id_blob"].tobytes(), id_offsets=z["id_offsets"],
            keys={rule: (z[f"k_{rule}"], z[f"p_{rule}"]) for rule in RULES},
            nick_ids={n.decode(): i for i, n in enumerate(names)},
        )


_MAGIC = b"SIGVERIFY-ROLL-INDEX\n"
_ALIGN = 64


# ------------------------------------------------------------------------------ building

#: A roll row as read and validated: (voter_id, first, middle, last, suffix, birth_date,
#: street, unit, city, zip, county, status, registered_on).
RollRow = tuple[str, str, str, str, str, "date | None", str, str, str, str, str, str,
                "date | None"]


def _ymd(d: date | None) -> int:
    return d.year * 10000 + d.month * 100 + d.day if d else 0


def _days(d: date | None) -> int:
    return d.toordinal() if d else 0


def long_type(stype: str) -> str:
    return _LONG_TYPES.get(stype, stype)


def _long_types() -> dict[str, str]:
    from scourgify.address_constants import STREET_TYPE_ABBREVIATIONS

    out: dict[str, str] = {}
    for long_, short in STREET_TYPE_ABBREVIATIONS.items():
        if len(long_) > len(out.get(short, "")):
            out[short] = long_
    return out


_LONG_TYPES = _long_types()


@lru_cache(maxsize=1 << 17)
def split_last(last: str) -> str:
    """The normalised surname with its words (suffixes dropped), for compound surnames."""
    return " ".join(w for w in normalize_text(last).split()
                    if w not in ("JR", "SR", "II", "III", "IV"))


class _Codes:
    """A growing string -> provisional code map (insertion order)."""

    __slots__ = ("d", "strings")

    def __init__(self) -> None:
        self.d: dict[str, int] = {}
        self.strings: list[str] = []

    def code(self, s: str) -> int:
        if not s:
            return -1
        c = self.d.get(s)
        if c is None:
            c = self.d[s] = len(self.strings)
            self.strings.append(s)
        return c

    def finish(self) -> tuple[Vocab, I32]:
        """The sorted vocabulary and the map provisional code -> final code."""
        order = sorted(range(len(self.strings)), key=self.strings.__getitem__)
        remap = np.empty(len(order), dtype=np.int32)
        remap[np.array(order, dtype=np.int64)] = np.arange(len(order), dtype=np.int32)
        arr = np.array([self.strings[i].encode("ascii", "replace") for i in order] or [b""],
                       dtype="S")
        return Vocab(arr[: len(order)]), remap


def _remap(codes: I32, remap: I32) -> I32:
    out = codes.copy()
    ok = codes >= 0
    out[ok] = remap[codes[ok]]
    return out


class IndexBuilder:
    """Builds a ``VoterIndex`` from chunks of roll rows (validated, as ``read_roll`` yields)."""

    def __init__(self, version: int = 0) -> None:
        self.version = version
        self._codes = {name: _Codes() for name in VOCABS}
        self._cols: dict[str, list[npt.NDArray[Any]]] = {n: [] for n, _ in VOTER_COLUMNS}
        #: voter ids: one ASCII blob and one array of lengths per chunk (no object per voter)
        self._id_blobs: list[bytes] = []
        self._id_lengths: list[I64] = []
        self._last_spaced: dict[str, str] = {}
        self.size = 0

    def add(self, rows: Sequence[RollRow]) -> None:
        c = self._codes
        given, last, house, street = c["given"].code, c["last"].code, c["house"].code, c["street"].code
        stype, sdir, unit, city = c["stype"].code, c["sdir"].code, c["unit"].code, c["city"].code
        zip_, county = c["zip"].code, c["county"].code
        spaced = self._last_spaced
        n = len(rows)
        out = {name: np.empty(n, dtype=dt) for name, dt in VOTER_COLUMNS}
        first_a, middle_a, last_a, suffix_a = out["first"], out["middle"], out["last"], out["suffix"]
        dob_a, house_a, street_a, stype_a = out["dob"], out["house"], out["street"], out["stype"]
        sdir_a, unit_a, city_a, zip_a = out["sdir"], out["unit"], out["city"], out["zip"]
        county_a, status_a, reg_a = out["county"], out["status"], out["registered"]
        status_code = {s: i for i, s in enumerate(STATUSES)}
        ids = [r[0].encode("ascii", "replace") for r in rows]
        self._id_blobs.append(b"".join(ids))
        self._id_lengths.append(np.fromiter(map(len, ids), dtype=np.int64, count=n))
        del ids
        for i, (_, first, middle, lst, suffix, birth, st, un, ci, zp, co, status, reg) in enumerate(rows):
            nm: PersonName = person_name(first or "", middle or "", lst or "", suffix or "")
            first_a[i] = given(nm.first)
            middle_a[i] = given(nm.middle)
            last_a[i] = last(nm.last)
            if nm.last and nm.last not in spaced:
                spaced[nm.last] = split_last(lst or "")
            suffix_a[i] = SUFFIX_CODES.get(nm.suffix, 0)
            dob_a[i] = _ymd(birth)
            a = normalize_address(st or "", un or "", zp or "")
            house_a[i] = house(a.house)
            street_a[i] = street(a.name)
            stype_a[i] = stype(a.street_type)
            sdir_a[i] = sdir(a.direction)
            unit_a[i] = unit(a.unit)
            city_a[i] = city(normalize_text(ci or ""))
            zip_a[i] = zip_(a.zip)
            county_a[i] = county(normalize_county(co or ""))
            status_a[i] = status_code.get((status or "").strip().upper(), 0)
            reg_a[i] = _days(reg)
        for name, arr in out.items():
            if name not in ("n_addr", "n_last_addr"):
                self._cols[name].append(arr)
        self.size += n

    def part(self) -> BuiltPart:
        """What this builder holds, as a picklable part for another builder's ``merge``
        (codes local to this builder; a worker process codes a chunk, the parent merges)."""
        return BuiltPart(
            strings={name: c.strings for name, c in self._codes.items()},
            cols={name: np.concatenate(parts) for name, parts in self._cols.items() if parts},
            id_blob=b"".join(self._id_blobs),
            id_lengths=np.concatenate(self._id_lengths) if self._id_lengths
            else np.zeros(0, dtype=np.int64),
            last_spaced=self._last_spaced, size=self.size)

    def merge(self, part: BuiltPart) -> None:
        """Append a part coded elsewhere (rows in the order parts are merged)."""
        remap: dict[str, I32] = {}
        for name, strings in part.strings.items():
            code = self._codes[name].code
            remap[name] = np.fromiter((code(x) for x in strings), dtype=np.int32,
                                      count=len(strings))
        for name, arr in part.cols.items():
            vocab = _COL_VOCAB.get(name)
            if vocab is not None and len(arr):
                arr = _remap(arr.astype(np.int32), remap[vocab]).astype(arr.dtype)
            self._cols[name].append(arr)
        self._id_blobs.append(part.id_blob)
        self._id_lengths.append(part.id_lengths)
        for k, v in part.last_spaced.items():
            self._last_spaced.setdefault(k, v)
        self.size += part.size

    def finish(self) -> VoterIndex:
        vocabs: dict[str, Vocab] = {}
        remaps: dict[str, I32] = {}
        for name in VOCABS:
            if name == "phon":
                continue
            vocabs[name], remaps[name] = self._codes[name].finish()
        col_vocab = _COL_VOCAB
        cols: dict[str, npt.NDArray[Any]] = {}
        for name, dt in VOTER_COLUMNS:
            if name in ("n_addr", "n_last_addr"):
                continue
            parts = self._cols.pop(name)
            arr = np.concatenate(parts) if parts else np.empty(0, dtype=dt)
            if name in col_vocab:
                arr = _remap(arr.astype(np.int32), remaps[col_vocab[name]]).astype(dt)
            cols[name] = arr
        n = self.size
        # Term frequencies and household counts.
        given_v, last_v = vocabs["given"], vocabs["last"]
        n_first = np.bincount(cols["first"][cols["first"] >= 0], minlength=len(given_v)).astype(np.int32)
        n_last = np.bincount(cols["last"][cols["last"] >= 0], minlength=len(last_v)).astype(np.int32)
        addr = mix(cols["house"], cols["street"], cols["zip"])
        has_addr = (cols["house"] >= 0) & (cols["street"] >= 0)
        cols["n_addr"] = _group_counts(addr, has_addr)
        cols["n_last_addr"] = _group_counts(mix(addr, cols["last"]), has_addr & (cols["last"] >= 0))
        # Phonetic codes of names (one vocabulary of codes).
        phon = _Codes()
        given_strs = [given_v.text(i) for i in range(len(given_v))]
        last_strs = [last_v.text(i) for i in range(len(last_v))]
        given_phon = np.array([phon.code(phonetic(s)) for s in given_strs], dtype=np.int32)
        last_phon = np.array([phon.code(phonetic(s)) for s in last_strs], dtype=np.int32)
        part_codes = np.full((len(last_strs), 3), -1, dtype=np.int32)
        spaced = self._last_spaced
        for i, s in enumerate(last_strs):
            ps = last_parts(spaced.get(s, s))
            if len(ps) > 1:
                for j, p in enumerate(ps[:3]):
                    part_codes[i, j] = phon.code(phonetic(p))
        phon_v, phon_remap = phon.finish()
        vocabs["phon"] = phon_v
        given_phon, last_phon = _remap(given_phon, phon_remap), _remap(last_phon, phon_remap)
        part_codes = np.where(part_codes >= 0, phon_remap[np.maximum(part_codes, 0)],
                              -1).astype(np.int32)
        nick = KeyIds()
        given_nick = nick.table(given_strs)
        offsets = np.zeros(n + 1, dtype=np.int64)
        if n:
            np.cumsum(np.concatenate(self._id_lengths), out=offsets[1:])
        blob = b"".join(self._id_blobs)
        self._id_blobs, self._id_lengths = [], []
        index = VoterIndex(
            version=self.version, size=n, cols=cols, vocabs=vocabs, given_phon=given_phon,
            given_nick=given_nick, last_phon=last_phon, last_part_phon=part_codes,
            n_first=n_first,
            n_last=n_last, id_blob=blob, id_offsets=offsets, keys={}, nick_ids=nick.ids)
        sides = voter_sides(index)
        index.keys = {rule: _sorted(*rule_keys(rule, *sides)) for rule in RULES}
        return index


#: Which vocabulary codes each coded column.
_COL_VOCAB = {"first": "given", "middle": "given", "last": "last", "house": "house",
              "street": "street", "stype": "stype", "sdir": "sdir", "unit": "unit",
              "city": "city", "zip": "zip", "county": "county"}


@dataclass
class BuiltPart:
    """Roll rows coded by one ``IndexBuilder`` (its own codes), for another to ``merge``."""

    strings: dict[str, list[str]]
    cols: dict[str, npt.NDArray[Any]]
    id_blob: bytes
    id_lengths: I64
    last_spaced: dict[str, str]
    size: int


def code_rows(rows: Sequence[RollRow]) -> BuiltPart:
    """Code one chunk of roll rows (what a worker process of a parallel build runs)."""
    builder = IndexBuilder()
    builder.add(rows)
    return builder.part()


def build_parallel(chunks: Iterable[Sequence[RollRow]], version: int, workers: int,
                   ahead: int = 2) -> VoterIndex:
    """The index of ``chunks`` (in order), coded by ``workers`` processes and merged here;
    at most ``workers + ahead`` chunks are in flight, so memory does not grow with the roll."""
    builder = IndexBuilder(version)
    if workers <= 1:
        for rows in chunks:
            builder.add(rows)
        return builder.finish()
    import multiprocessing
    from collections import deque
    from concurrent.futures import Future, ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        pending: deque[Future[BuiltPart]] = deque()
        for rows in chunks:
            pending.append(pool.submit(code_rows, rows))
            while len(pending) >= workers + ahead:
                builder.merge(pending.popleft().result())
        while pending:
            builder.merge(pending.popleft().result())
    return builder.finish()


def _group_counts(keys: U64, valid: npt.NDArray[np.bool_]) -> I32:
    out = np.zeros(len(keys), dtype=np.int32)
    if valid.any():
        _, inverse, counts = np.unique(keys[valid], return_inverse=True, return_counts=True)
        out[valid] = counts[inverse].astype(np.int32)
    return out


def _sorted(keys: U64, who: I32) -> tuple[U64, I32]:
    order = np.argsort(keys, kind="stable")
    return keys[order], who[order].astype(np.int32)


# ------------------------------------------------------------------------- blocking keys

def _explode(who: I32, table: I32) -> tuple[I32, I32]:
    """(row, value) for every non-negative value of ``table[row]`` (a -1 padded table)."""
    rows, cols = np.nonzero(table >= 0)
    return who[rows], table[rows, cols]


def voter_sides(ix: VoterIndex) -> tuple[Any, ...]:
    """The voters' arguments of ``rule_keys`` (the sound tables made once for every rule)."""
    c = ix.cols
    who = np.arange(ix.size, dtype=np.int32)
    return (who, c["zip"], c["house"], c["street"], c["county"], c["dob"],
            first_sound_table(ix, c["first"]), last_sound_table(ix, c["last"]),
            first_initial(ix, c["first"]), last_initial(ix, c["last"]), c["first"], c["last"],
            zip_prefix(ix, c["zip"]))


def voter_keys(ix: VoterIndex, rule: str) -> tuple[U64, I32]:
    """The voter side of a blocking rule: (keys, voter index per key)."""
    return rule_keys(rule, *voter_sides(ix))


def zip_prefix(ix: VoterIndex, zip_codes: I32) -> I32:
    """The first three digits of each zip (as a number; -1 for none)."""
    table = ix.cache.get("zip3")
    if table is None:
        v = ix.vocabs["zip"]
        table = ix.cache.setdefault("zip3", np.array(
            [int(v.text(i)[:3]) for i in range(len(v))] + [-1], dtype=np.int32))
    n = len(table) - 1
    return table[np.where((zip_codes >= 0) & (zip_codes < n), zip_codes, n)]  # type: ignore[no-any-return]


def first_sound_table(ix: VoterIndex, first: I32) -> I32:
    """(rows, 1 + _NICK_WIDTH): the first name's sound, then the sounds of its nickname keys."""
    n = len(first)
    t = np.full((n, 1 + _NICK_WIDTH), -1, dtype=np.int32)
    ok = first >= 0
    t[ok, 0] = ix.given_phon[first[ok]]
    t[ok, 1:] = nick_sounds(ix)[first[ok]]
    return t


def nick_sounds(ix: VoterIndex) -> I32:
    """Per given-name code, the sounds of its nickname keys (-1 padded)."""
    got = ix.cache.get("nick_sounds")
    if got is not None:
        return got  # type: ignore[no-any-return]
    key_names = [""] * len(ix.nick_ids)
    for k, i in ix.nick_ids.items():
        key_names[i] = k
    phon = ix.vocabs["phon"]
    if key_names:
        key_sound = phon.codes([phonetic(k) for k in key_names])
        t = np.where(ix.given_nick >= 0, key_sound[np.maximum(ix.given_nick, 0)], -1)
    else:
        t = np.full(ix.given_nick.shape, -1)
    t = t.astype(np.int32)
    ix.cache["nick_sounds"] = t
    return t


def last_sound_table(ix: VoterIndex, last: I32) -> I32:
    """(rows, 4): the surname's sound, then its parts' sounds (-1 padded)."""
    n = len(last)
    t = np.full((n, 4), -1, dtype=np.int32)
    ok = last >= 0
    t[ok, 0] = ix.last_phon[last[ok]]
    t[ok, 1:] = ix.last_part_phon[last[ok]]
    return t


def _initials(vocab: Vocab) -> npt.NDArray[np.int16]:
    v = vocab.values
    if not len(v):
        return np.zeros(0, dtype=np.int16)
    return np.frombuffer(v.tobytes(), dtype=np.uint8)[:: v.itemsize].astype(np.int16)


def first_initial(ix: VoterIndex, first: I32) -> npt.NDArray[np.int16]:
    ini = _initials(ix.vocabs["given"])
    return np.where(first >= 0, ini[np.maximum(first, 0)] if len(ini) else 0, -1).astype(np.int16)


def last_initial(ix: VoterIndex, last: I32) -> npt.NDArray[np.int16]:
    ini = _initials(ix.vocabs["last"])
    return np.where(last >= 0, ini[np.maximum(last, 0)] if len(ini) else 0, -1).astype(np.int16)


def _unique_per_row(table: I32) -> I32:
    """``table`` (-1 padded) with each row's values sorted and repeats blanked (-1), so that
    a row's keys made from them are distinct (nickname sounds repeat the name's own)."""
    t = np.sort(table, axis=1)
    t[:, 1:][t[:, 1:] == t[:, :-1]] = -1
    return t


def _dedupe_rows(who: I32, keys: U64) -> tuple[U64, I32]:
    """One key per (row, key) pair, ordered by row then key."""
    if not len(keys):
        return keys, who
    order = np.lexsort((keys, who))
    keys, who = keys[order], who[order]
    keep = np.ones(len(keys), dtype=bool)
    keep[1:] = (keys[1:] != keys[:-1]) | (who[1:] != who[:-1])
    return keys[keep], who[keep].astype(np.int32)


def rule_keys(rule: str, who: I32, zip_: I32, house: I32, street: I32, county: npt.NDArray[Any],
              dob: I32, first_sounds: I32, last_sounds: I32, f_init: npt.NDArray[Any],
              l_init: npt.NDArray[Any], first: I32, last: I32, zip3: I32) -> tuple[U64, I32]:
    """Keys of ``rule`` for rows (voters or signatures); rows lacking a part get none."""
    empty = (np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int32))
    if rule in ("zl", "zf", "lf"):
        if rule == "zl":
            r, s = _explode(who, last_sounds)
            ok = zip_[r] >= 0
            return _dedupe_rows(r[ok], mix(zip_[r[ok]], s[ok]))
        if rule == "zf":
            r, s = _explode(who, first_sounds)
            ok = (zip_[r] >= 0) & (l_init[r] >= 0)
            r, s = r[ok], s[ok]
            return _dedupe_rows(r, mix(zip_[r], s, l_init[r]))
        ok = (last >= 0) & (first >= 0)
        return mix(last[ok], first[ok], np.full(int(ok.sum()), 17)), who[ok]
    if rule == "hs":
        ok = (house >= 0) & (street >= 0)
        return mix(house[ok], street[ok]), who[ok]
    if rule == "zh":
        ok = (house >= 0) & (zip_ >= 0)
        return mix(zip_[ok], house[ok], np.full(int(ok.sum()), 7)), who[ok]
    if rule == "sf":
        r, snd = _explode(who, _unique_per_row(first_sounds))
        ok = street[r] >= 0
        r, snd = r[ok], snd[ok]
        return mix(county[r], street[r], snd, np.full(len(r), 23)), r
    if rule == "sl":
        r, s = _explode(who, last_sounds[:, :1])
        ok = street[r] >= 0
        r, s = r[ok], s[ok]
        return mix(county[r], street[r], s), r
    if rule == "si":
        ok = (street >= 0) & (f_init >= 0)
        return mix(county[ok], street[ok], f_init[ok], np.full(int(ok.sum()), 31)), who[ok]
    if rule == "hf":
        r, snd = _explode(who, _unique_per_row(first_sounds))
        ok = house[r] >= 0
        r, snd = r[ok], snd[ok]
        return mix(county[r], house[r], snd, np.full(len(r), 29)), r
    if rule == "hl":
        r, snd = _explode(who, last_sounds[:, :1])
        ok = house[r] >= 0
        r, snd = r[ok], snd[ok]
        return mix(county[r], house[r], snd), r
    if rule == "pl":
        r, snd = _explode(who, last_sounds[:, :1])
        ok = (zip3[r] >= 0) & (f_init[r] >= 0)
        r, snd = r[ok], snd[ok]
        return mix(zip3[r], snd, f_init[r]), r
    if rule == "bz":
        ok = (dob > 0) & (zip_ >= 0)
        return mix(dob[ok], zip_[ok], np.full(int(ok.sum()), 19)), who[ok]
    if rule in ("bf", "bl"):
        ini = f_init if rule == "bf" else l_init
        ok = (dob > 0) & (ini >= 0)
        return mix(dob[ok], ini[ok], np.full(int(ok.sum()), 11 if rule == "bf" else 13)), who[ok]
    return empty

