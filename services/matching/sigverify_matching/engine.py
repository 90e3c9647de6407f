"""The vectorised matcher: a batch of signatures against a columnar roll index.

Pure: no I/O. Per batch, in bulk:

1. the signatures are normalised (the same code as the roll's) and coded against the roll's
   vocabularies (a spelling the roll lacks gets a code of its own for the batch);
2. candidate pairs come from each blocking rule's sorted keys (``columnar.RULES``), found
   through a directory of their top bits (``_block_bounds``); a block too large to compare
   whole is left to the other rules, and a crowded statewide name block is remembered as
   uncompared namesakes;
3. every comparison's level is computed once per distinct pair of values (rapidfuzz's
   bulk ``cpdist`` with ``workers``), then spread to the pairs with numpy;
4. match weights and the posterior per signature come from the model (``fs``); the
   decision follows from the posterior, the residence level and the county, then the
   eligibility rules.

Steps 2-4 run first without the two widest rules (``WIDE_RULES``), then again with them for
the signatures that the first pass leaves in doubt (``match_batch``, ``_beyond_doubt``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt
from rapidfuzz import process
from rapidfuzz.distance import OSA, JaroWinkler

from sigverify_common.vocab import Decision, Reason
from sigverify_matching import fs
from sigverify_matching.columnar import (
    RULES,
    STATUSES,
    SUFFIX_CODES,
    Vocab,
    VoterIndex,
    first_initial,
    key_ids,
    last_initial,
    last_parts,
    long_type,
    mix,
    nick_sounds,
    rule_keys,
    split_last,
    typo_keys,
    zip_prefix,
)
from sigverify_matching.domain import (
    Address,
    MatchConfig,
    MatchResult,
    ScoredCandidate,
    SignatureInput,
    first_name_keys,
    house_digit_reading,
    long_direction,
    normalize_address,
    normalize_county,
    normalize_text,
    person_name,
    phonetic,
    run_together_types,
    split_house_reading,
    swapped_names,
)

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]
S = npt.NDArray[np.str_]

WORKERS = 2  # rapidfuzz threads for the bulk string metrics
#: fewer pairs than this are compared on one thread (starting threads costs more)
THREADED_FROM = 20_000


def _workers(n: int) -> int:
    return WORKERS if n >= THREADED_FROM else 1


# ----------------------------------------------------------------------- coded batches

class Coder:
    """Codes strings against a roll vocabulary; strings the roll lacks get codes from
    ``len(vocab)`` on, local to the batch."""

    __slots__ = ("_ext_arr", "_ext_meta", "ext", "index", "vocab")

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        self.ext: list[str] = []
        self.index: dict[str, int] = {}
        self._ext_arr: S = np.zeros(0, dtype="U1")
        self._ext_meta: tuple[npt.NDArray[np.int16], npt.NDArray[np.int16]] | None = None

    def codes(self, strings: Sequence[str]) -> I32:
        out = self.vocab.codes(strings)
        n = len(self.vocab)
        for i in np.nonzero(out < 0)[0].tolist():
            s = strings[i]
            if s:
                c = self.index.get(s)
                if c is None:
                    c = self.index[s] = n + len(self.ext)
                    self.ext.append(s)
                out[i] = c
        return out

    def ext_meta(self) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.int16]]:
        """(length, first character) of the batch's own strings, by code - len(vocab)."""
        if self._ext_meta is None or len(self._ext_meta[0]) != len(self.ext):
            self._ext_meta = (np.array([len(t) for t in self.ext], dtype=np.int16),
                              np.array([ord(t[0]) if t else 0 for t in self.ext],
                                       dtype=np.int16))
        return self._ext_meta

    def text(self, code: int) -> str:
        n = len(self.vocab)
        return self.vocab.text(code) if code < n else self.ext[code - n]

    def strs(self, codes: npt.NDArray[np.integer[Any]]) -> S:
        """The strings of valid codes, as a numpy unicode array."""
        n = len(self.vocab)
        known = codes < n
        if known.all():
            return self.vocab.strs(codes)
        if len(self._ext_arr) != len(self.ext):
            self._ext_arr = np.array(self.ext, dtype="U")
        out = self._ext_arr[np.where(known, 0, codes - n)]
        if known.any():
            out = np.where(known, self.vocab.strs(np.where(known, codes, 0)), out)
        return out


@dataclass
class SigBatch:
    """A batch of signatures as coded columns (codes of the roll's vocabularies, extended)."""

    n: int
    cols: dict[str, npt.NDArray[Any]]
    coders: dict[str, Coder]
    first_sounds: I32
    last_sounds: I32
    f_init: npt.NDArray[np.int16]
    l_init: npt.NDArray[np.int16]
    signed_on: I32
    deadline: I32
    inputs: Sequence[SignatureInput] = field(default_factory=list)
    #: each street line as written, spaceless, its directionals and types written out
    lines: S = field(default_factory=lambda: np.zeros(0, dtype="U1"))
    #: house and street codes of the line read with its house number across a space
    #: ("453 6SMITH" as 4536 SMITH; ``split_house_reading``), -1 where it does not read so
    split_house: I32 = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    split_street: I32 = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    _swapped: tuple[I32, I32] | None = None
    _swapped_middle: I32 | None = None
    _swapped_sounds: tuple[I32, I32] | None = None

    def swapped(self) -> tuple[I32, I32]:
        """The names read the other way round: (first-name codes, last-name codes). The
        surname is the whole first-name box ("De La Cruz" -> DELACRUZ, as a surname is
        kept), the first name the first word of the surname box."""
        if self._swapped is None:
            g, lc = self.coders["given"], self.coders["last"]
            middles: list[str] = []
            if len(self.inputs) == self.n:
                firsts, middles, lasts = swapped_names(
                    [sig.first_name for sig in self.inputs], [sig.last_name for sig in self.inputs])
            else:
                # Voters posing as signatures (a million of them for ``estimate_u``): each
                # distinct name looked up once.
                self._swapped = (_recoded(self.cols["last"], lc, g),
                                 _recoded(self.cols["first"], g, lc))
                self._swapped_middle = np.full(self.n, -1, dtype=np.int32)
                return self._swapped
            self._swapped = (g.codes(firsts), lc.codes(lasts))
            self._swapped_middle = g.codes(middles)
        return self._swapped

    def swapped_middle(self) -> I32:
        """Read the other way round, the second word of the surname box ("HUANG / YI JING":
        JING), the given name's second word; -1 for none."""
        self.swapped()
        assert self._swapped_middle is not None
        return self._swapped_middle

    def swapped_sounds(self, ix: VoterIndex) -> tuple[I32, I32]:
        """The sounds (the roll's phonetic codes, -1 for none) of ``swapped``'s names."""
        if self._swapped_sounds is None:
            phon = ix.vocabs["phon"]
            out = []
            for codes, coder in zip(self.swapped(), (self.coders["given"], self.coders["last"]),
                                    strict=True):
                uc, inv = np.unique(codes, return_inverse=True)
                out.append(phon.codes([phonetic(coder.text(int(x))) if x >= 0 else ""
                                       for x in uc.tolist()])[inv.reshape(-1)])
            self._swapped_sounds = (out[0], out[1])
        return self._swapped_sounds


def _recoded(codes: I32, source: Coder, target: Coder) -> I32:
    """``codes`` of ``source``'s strings as codes of ``target`` (-1 stays -1), each distinct
    string looked up once."""
    uc, inv = np.unique(codes, return_inverse=True)
    got = target.codes([source.text(c) if c >= 0 else "" for c in uc.tolist()])
    return got[inv.reshape(-1)].astype(np.int32)


def _ymd(d: date | None) -> int:
    return d.year * 10000 + d.month * 100 + d.day if d else 0


CODERS = ("given", "last", "house", "street", "stype", "sdir", "unit", "city", "zip",
          "county", "phon")


def _scatter(table: I32, rows: list[int], words: list[list[str]], phon: Coder) -> None:
    """``table[row, 1:]`` = the sounds of that row's words, all coded in one call."""
    if not rows:
        return
    flat = phon.codes([phonetic(w) for ws in words for w in ws])
    at = 0
    for i, ws in zip(rows, words, strict=True):
        table[i, 1: 1 + len(ws)] = flat[at: at + len(ws)]
        at += len(ws)


def prepare(ix: VoterIndex, sigs: Sequence[SignatureInput]) -> SigBatch:
    """Normalise and code a batch of signatures against the roll's vocabularies."""
    n = len(sigs)
    names = [person_name(s.first_name, s.middle_name, s.last_name) for s in sigs]
    addrs = [normalize_address(s.street, s.unit, s.zip) for s in sigs]
    coders = {k: Coder(ix.vocabs[k]) for k in CODERS}
    g, lc = coders["given"], coders["last"]
    cols: dict[str, npt.NDArray[Any]] = {
        "first": g.codes([x.first for x in names]),
        "middle": g.codes([x.middle for x in names]),
        "last": lc.codes([x.last for x in names]),
        "suffix": np.array([SUFFIX_CODES.get(x.suffix, 0) for x in names], dtype=np.int8),
        "dob": np.array([_ymd(s.birth_date) for s in sigs], dtype=np.int32),
        "house": coders["house"].codes([a.house for a in addrs]),
        "street": coders["street"].codes([a.name for a in addrs]),
        "stype": coders["stype"].codes([a.street_type for a in addrs]),
        "sdir": coders["sdir"].codes([a.direction for a in addrs]),
        "unit": coders["unit"].codes([a.unit for a in addrs]),
        "city": coders["city"].codes([normalize_text(s.city) for s in sigs]),
        "zip": coders["zip"].codes([a.zip for a in addrs]),
        "county": coders["county"].codes([normalize_county(s.county) for s in sigs]),
    }
    phon = coders["phon"]
    first_sounds = np.full((n, 1 + ix.given_nick.shape[1]), -1, dtype=np.int32)
    first_sounds[:, 0] = phon.codes([phonetic(x.first) for x in names])
    known = (cols["first"] >= 0) & (cols["first"] < len(ix.vocabs["given"]))
    if known.any():
        first_sounds[known, 1:] = nick_sounds(ix)[cols["first"][known]]
    # A spelling the roll lacks: the sounds of the names it may be a nickname of, or a
    # misspelt nickname of ("MKIE": MIKE, MICHAEL).
    width = first_sounds.shape[1] - 1
    odd = np.nonzero(~known & (cols["first"] >= 0))[0].tolist()
    key_lists = [sorted((first_name_keys(names[i].first) | typo_keys(names[i].first))
                        - {names[i].first})[:width] for i in odd]
    _scatter(first_sounds, odd, key_lists, phon)
    last_sounds = np.full((n, 4), -1, dtype=np.int32)
    last_sounds[:, 0] = phon.codes([phonetic(x.last) for x in names])
    compound = [(i, ps[:3]) for i, s in enumerate(sigs)
                if len(ps := last_parts(split_last(s.last_name))) > 1]
    _scatter(last_sounds, [i for i, _ in compound], [ps for _, ps in compound], phon)
    f_init = np.array([ord(x.first[0]) if x.first else -1 for x in names], dtype=np.int16)
    l_init = np.array([ord(x.last[0]) if x.last else -1 for x in names], dtype=np.int16)
    split_house = np.full(n, -1, dtype=np.int32)
    split_street = np.full(n, -1, dtype=np.int32)
    split = _other_readings(ix, sigs, addrs)
    if split:
        rows = np.array([i for i, _, _ in split], dtype=np.int64)
        split_house[rows] = coders["house"].codes([h for _, h, _ in split])
        split_street[rows] = coders["street"].codes([nm for _, _, nm in split])
    return SigBatch(
        n=n, cols=cols, coders=coders, first_sounds=first_sounds, last_sounds=last_sounds,
        f_init=f_init, l_init=l_init, split_house=split_house, split_street=split_street,
        signed_on=np.array([s.signed_on.toordinal() if s.signed_on else 0 for s in sigs],
                           dtype=np.int32),
        deadline=np.array([s.deadline.toordinal() if s.deadline else 0 for s in sigs],
                          dtype=np.int32),
        inputs=sigs, lines=np.array([a.line for a in addrs] or [""], dtype="U")[:n])


# --------------------------------------------------------------------------- candidates

def _other_readings(ix: VoterIndex, sigs: Sequence[SignatureInput], addrs: Sequence[Address]
                    ) -> list[tuple[int, str, str]]:
    """(row, house, street name) of the signatures whose street line reads another way
    too, for looking up candidates: a house number with letters that look like digits
    ("1A793"), a digit of it written onto the street ("453 6SMITH"), a street type run onto
    the name ("ANGELICAAVENUE", read so only where the roll knows the name without it)."""
    read: list[list[Any]] = []
    for i, (s, a) in enumerate(zip(sigs, addrs, strict=True)):
        text = house_digit_reading(s.street) or s.street
        text = split_house_reading(text) or text
        b = normalize_address(text) if text != s.street else a
        if b.name:
            read.append([i, b.house, b.name, b.street_type])
    streets = ix.vocabs["street"]
    untyped = [r for r in read if not r[3]]
    if untyped:
        unknown = [r for r, known in zip(untyped, streets.codes([r[2] for r in untyped]) >= 0,
                                         strict=True) if not known]
        tries = [(r, stem) for r in unknown for stem in run_together_types(r[2])]
        if tries:
            found = streets.codes([stem for _, stem in tries]) >= 0
            for (r, stem), ok in zip(reversed(tries), reversed(found.tolist()), strict=True):
                if ok:  # reversed: the longest type found wins
                    r[2] = stem
    return [(i, h, nm) for i, h, nm, _ in read
            if (h, nm) != (addrs[i].house, addrs[i].name)]



@dataclass
class Pairs:
    sig: I32  # signature row, ascending
    voter: I32
    #: per signature: voters of its statewide name block left uncompared (too many)
    crowded: I32


def _expand(lo: I64, size: I64) -> I64:
    """Positions lo[i] .. lo[i] + size[i] - 1 for every i, concatenated."""
    total = int(size.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.repeat(lo - np.concatenate([[0], np.cumsum(size)[:-1]]), size)
    return starts + np.arange(total, dtype=np.int64)


#: A block larger than this many times its rule's cap is not narrowed (left to the other
#: rules), so that one crowded key cannot make a batch's work explode.
NARROW_LIMIT = 12
#: What narrows an oversized block of each rule: the part of the person its key leaves out.
NARROW_BY = {"zl": "first initial", "sl": "first initial", "hl": "first initial",
             "hf": "surname initial", "si": "surname initial",
             "pl": "first sound", "zf": "surname sound", "sf": "surname initial",
             "zh": "surname initial", "hs": "county", "lf": "county", "bf": "county",
             "bl": "county", "bz": "county"}


def _blocks(ix: VoterIndex, b: SigBatch, rule: str, qk: U64, qwho: I32,
            finit: npt.NDArray[Any], linit: npt.NDArray[Any], lsound: I32, fsound: I32
            ) -> tuple[list[I32], list[I32], I32, I64]:
    """The (signature, voter) pairs of a rule's blocks for the query keys ``qk`` of
    signature rows ``qwho``: each block whole up to the rule's cap; a bigger one narrowed by
    what the rule's key left out (``_narrowed``), what is still too big left to the other
    rules. Also the rows of the oversized blocks and how many voters each left uncompared."""
    cap = RULES[rule]
    vwho = ix.keys[rule][1]
    # In key order (the roll's keys are then read in order; the pairs are sorted in the end
    # anyway).
    o = np.argsort(qk)
    qk, qwho = qk[o], qwho[o]
    lo, size = _block_bounds(ix, rule, qk)
    big = size > cap
    sig_parts: list[I32] = []
    voter_parts: list[I32] = []
    left: I64 = np.zeros(0, dtype=np.int64)
    if big.any():
        sq, vq, left = _narrowed(ix, b, rule, qwho[big], lo[big], size[big], vwho, cap,
                                 finit, linit, lsound, fsound)
        sig_parts.append(sq)
        voter_parts.append(vq)
    size[big] = 0
    pos = _expand(lo, size)
    sig_parts.append(np.repeat(qwho, size).astype(np.int32))
    voter_parts.append(vwho[pos])
    return sig_parts, voter_parts, qwho[big], left


def _directory(ix: VoterIndex, rule: str) -> tuple[npt.NDArray[np.integer[Any]], np.uint64]:
    """Where each range of a rule's sorted keys begins, by their top bits (about eight keys
    a range; the keys are hashes, so spread evenly), and the shift to a key's range."""
    got = ix.cache.get(f"directory_{rule}")
    if got is None:
        vkeys = ix.keys[rule][0]
        bits = int(min(max(8, np.ceil(np.log2(max(len(vkeys), 1) / 8))), 30))
        shift = np.uint64(64 - bits)
        starts = np.searchsorted(vkeys, np.arange(1 << bits, dtype=np.uint64) << shift)
        # 4 bytes a position: 1 to 2 bytes a voter for each rule
        kind = np.int32 if len(vkeys) < 2**31 else np.int64
        got = ix.cache.setdefault(f"directory_{rule}", (
            np.append(starts, len(vkeys)).astype(kind), shift))
    return got  # type: ignore[no-any-return]


def warm(ix: VoterIndex) -> None:
    """Make the index's derived tables that every batch reads (the rules' directories and
    the household keys) now, so that a new version's first batch does not (at 22 million
    voters a few seconds)."""
    for rule in ix.keys:
        _directory(ix, rule)
    household_keys(ix, np.zeros(0, dtype=np.int32))


def _block_bounds(ix: VoterIndex, rule: str, qk: U64) -> tuple[I64, I64]:
    """(first position, size) of each key's block in the rule's sorted keys:
    ``searchsorted`` left and right, but each search only within the key's range of the
    directory (a few keys, one or two cache lines) instead of across the whole roll's keys,
    every query of the batch a step at a time."""
    vkeys = ix.keys[rule][0]
    starts, shift = _directory(ix, rule)
    if not len(vkeys) or not len(qk):
        return np.zeros(len(qk), dtype=np.int64), np.zeros(len(qk), dtype=np.int64)
    h = (qk >> shift).astype(np.int64)
    end = starts[h + 1].astype(np.int64)
    last = len(vkeys) - 1
    bounds: list[I64] = []
    for right in (False, True):
        a = starts[h].astype(np.int64) if not right else bounds[0].copy()
        b = end.copy()
        live = np.nonzero(a < b)[0]
        while len(live):
            al, bl = a[live], b[live]
            mid = (al + bl) >> 1
            k = vkeys[np.minimum(mid, last)]
            go = (k <= qk[live]) if right else (k < qk[live])
            a[live] = np.where(go, mid + 1, al)
            b[live] = np.where(go, bl, mid)
            live = live[a[live] < b[live]]
        bounds.append(a)
    return bounds[0], bounds[1] - bounds[0]


def _voter_initials(ix: VoterIndex) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.int16]]:
    got = ix.cache.get("voter_initials")
    if got is None:
        c = ix.cols
        got = ix.cache.setdefault("voter_initials", (first_initial(ix, c["first"]),
                                                     last_initial(ix, c["last"])))
    return got  # type: ignore[no-any-return]


def _narrowed(ix: VoterIndex, b: SigBatch, rule: str, rows: I32, lo: I64, size: I64,
              vwho: I32, cap: int, finit: npt.NDArray[Any], linit: npt.NDArray[Any],
              lsound: I32, fsound: I32) -> tuple[I32, I32, I64]:
    """The pairs of oversized blocks (signature ``rows``, blocks at ``lo`` of ``size`` in
    the rule's sorted voters ``vwho``) that agree on ``NARROW_BY[rule]``, per block at most
    ``cap`` of them (a block still larger after narrowing is dropped); and per block, how
    many of its voters were left uncompared."""
    ok = size <= cap * NARROW_LIMIT
    kept_s: I32 = np.zeros(0, dtype=np.int32)
    kept_v: I32 = np.zeros(0, dtype=np.int32)
    left = size.copy()
    if not ok.any():
        return kept_s, kept_v, left
    blk = np.nonzero(ok)[0]
    pos = _expand(lo[blk], size[blk])
    which = np.repeat(np.arange(len(blk)), size[blk])
    s = rows[blk][which]
    v = vwho[pos]
    how = NARROW_BY.get(rule, "county")
    if how == "first initial":
        vf, _ = _voter_initials(ix)
        keep = (vf[v] == finit[s]) & (finit[s] >= 0)
    elif how == "surname initial":
        _, vl = _voter_initials(ix)
        keep = (vl[v] == linit[s]) & (linit[s] >= 0)
    elif how == "first sound":
        vfirst = ix.cols["first"][v]
        keep = (vfirst >= 0) & (fsound[s] >= 0) & (
            ix.given_phon[np.maximum(vfirst, 0)] == fsound[s])
    elif how == "surname sound":
        vlast = ix.cols["last"][v]
        keep = (vlast >= 0) & (lsound[s] >= 0) & (
            ix.last_phon[np.maximum(vlast, 0)] == lsound[s])
    else:
        keep = ix.cols["county"][v] == b.cols["county"][s]
    counts = np.bincount(which[keep], minlength=len(blk))
    fits = counts <= cap
    keep &= fits[which]
    left[blk[fits]] = size[blk[fits]] - counts[fits]
    return s[keep].astype(np.int32), v[keep].astype(np.int32), left


#: Rules tried with the names read the other way round too (the address rules with a
#: name's sound among them: names written the other way round and misspelt, the zip
#: slipped as well, were found by no rule).
SWAPPED_RULES = frozenset({"zl", "zf", "lf", "bf", "bl", "pl", "sl", "sf", "hl", "hf"})


def _distinct(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``np.unique(x)`` by a plain sort (numpy's hashing unique is slower on these)."""
    y = np.sort(x)
    if len(y) < 2:
        return y
    keep = np.empty(len(y), dtype=bool)
    keep[0] = True
    np.not_equal(y[1:], y[:-1], out=keep[1:])
    return y[keep]


def _batch_zip3(ix: VoterIndex, b: SigBatch) -> I32:
    """First three digits of the batch's zips (the roll's table, or read from the text)."""
    z = b.cols["zip"]
    out = zip_prefix(ix, z)
    odd = z >= len(ix.vocabs["zip"])
    if odd.any():
        out[odd] = [int(b.coders["zip"].text(int(c))[:3]) for c in z[odd]]
    return out


def candidates(ix: VoterIndex, b: SigBatch, rules: Sequence[str] = tuple(RULES),
               rows: B | None = None) -> Pairs:
    """Candidate (signature, voter) pairs of a batch: the union of the rules' blocks (with
    ``rows``, a mask of the batch's signatures: only theirs)."""
    c = b.cols
    who = np.arange(b.n, dtype=np.int32)
    sw_first, sw_last = b.swapped()
    zip3 = _batch_zip3(ix, b)
    variants = [(b.first_sounds, b.last_sounds, b.f_init, b.l_init, c["first"], c["last"])]
    # Swapped names: the sounds of the names read the other way round.
    sw_first_sound, sw_last_sound = b.swapped_sounds(ix)
    sw_fs = np.full_like(b.first_sounds, -1)
    sw_fs[:, 0] = sw_first_sound
    sw_ls = np.full_like(b.last_sounds, -1)
    sw_ls[:, 0] = sw_last_sound
    variants.append((sw_fs, sw_ls, b.l_init, b.f_init, sw_first, sw_last))
    sig_parts: list[I32] = []
    voter_parts: list[I32] = []
    crowded = np.zeros(b.n, dtype=np.int32)
    # The street + initial rule is asked only for a signature that gives an initial alone
    # (any other is found by its first name's sound).
    initial_only = np.zeros(b.n, dtype=bool)
    has_first = c["first"] >= 0
    if has_first.any():
        initial_only[has_first] = _coded_meta(ix, "given", b.coders["given"],
                                              c["first"][has_first])[0] == 1
    for rule in rules:
        for k, (fsnd, lsnd, finit, linit, first, last) in enumerate(variants):
            if k == 1 and rule not in SWAPPED_RULES:
                continue
            qk, qwho = rule_keys(rule, who, c["zip"], c["house"], c["street"], c["county"],
                                 c["dob"], fsnd, lsnd, finit, linit, first, last, zip3)
            if rule == "si":
                keep = initial_only[qwho]
                qk, qwho = qk[keep], qwho[keep]
            if rows is not None:
                keep = rows[qwho]
                qk, qwho = qk[keep], qwho[keep]
            if not len(qk):
                continue
            sq, vq, big_who, left = _blocks(ix, b, rule, qk, qwho, finit, linit,
                                            lsnd[:, 0], fsnd[:, 0])
            sig_parts += sq
            voter_parts += vq
            if rule == "lf" and k == 0 and len(big_who):
                np.maximum.at(crowded, big_who, left.astype(np.int32))
    # The line read with its house number across a space ("453 6SMITH"): the rules that
    # look by house number or street name, again with that reading.
    if len(b.split_house) == b.n and (b.split_house >= 0).any():
        for rule in ("hs", "zh", "sl", "sf", "hl", "hf"):
            if rule not in rules:
                continue
            qk, qwho = rule_keys(rule, who, c["zip"], b.split_house, b.split_street,
                                 c["county"], c["dob"], b.first_sounds, b.last_sounds,
                                 b.f_init, b.l_init, c["first"], c["last"], zip3)
            if rows is not None:
                keep = rows[qwho]
                qk, qwho = qk[keep], qwho[keep]
            if not len(qk):
                continue
            sq, vq, _, _ = _blocks(ix, b, rule, qk, qwho, b.f_init, b.l_init,
                                   b.last_sounds[:, 0], b.first_sounds[:, 0])
            sig_parts += sq
            voter_parts += vq
    if not sig_parts:
        return Pairs(np.zeros(0, np.int32), np.zeros(0, np.int32), crowded)
    s = np.concatenate(sig_parts).astype(np.int64)
    v = np.concatenate(voter_parts).astype(np.int64)
    key = _distinct((s << 32) | v)
    return Pairs((key >> 32).astype(np.int32), (key & 0xFFFFFFFF).astype(np.int32), crowded)


# ---------------------------------------------------------------------------- comparison

def _unique(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> tuple[I64, I64, I64]:
    """Distinct (a, b) pairs of non-negative int values: (a values, b values, inverse)."""
    a64, b64 = a.astype(np.int64), b.astype(np.int64)
    if len(a64):
        # Few possible pairs (small vocabularies): mark them in a table, no sorting.
        a0, b0 = int(a64.min()), int(b64.min())
        nb = int(b64.max()) - b0 + 1
        span = (int(a64.max()) - a0 + 1) * nb
        if span <= max(1 << 21, 16 * len(a64)):
            key = (a64 - a0) * nb + (b64 - b0)
            seen = np.zeros(span, dtype=bool)
            seen[key] = True
            uk = np.flatnonzero(seen)
            at = np.empty(span, dtype=np.int64)
            at[uk] = np.arange(len(uk), dtype=np.int64)
            return uk // nb + a0, uk % nb + b0, at[key]
    if len(a64) and a64.max() < (1 << 31) and b64.max() < (1 << 31):
        uk, inv = np.unique((a64 << 32) | b64, return_inverse=True)
        return uk >> 32, uk & 0xFFFFFFFF, inv
    ua, ia = np.unique(a64, return_inverse=True)
    ub, ib = np.unique(b64, return_inverse=True)
    uk, inv = np.unique(ia.astype(np.int64) * len(ub) + ib, return_inverse=True)
    return ua[uk // len(ub)], ub[uk % len(ub)], inv


def _texts(a: S | list[str]) -> list[str]:
    return a.tolist() if isinstance(a, np.ndarray) else a


def _jw(a: S | list[str], b: S | list[str]) -> F64:
    """Jaro-Winkler similarities (strings as arrays, or as lists already made of them)."""
    if not len(a):
        return np.zeros(0)
    return np.asarray(process.cpdist(_texts(a), _texts(b),
                                     scorer=JaroWinkler.normalized_similarity,
                                     workers=_workers(len(a))), dtype=np.float64)


def _osa(a: S | list[str], b: S | list[str]) -> I64:
    """OSA distances, capped at 3 (strings as arrays, or as lists already made of them)."""
    if not len(a):
        return np.zeros(0, dtype=np.int64)
    return np.asarray(process.cpdist(_texts(a), _texts(b), scorer=OSA.distance,
                                     score_cutoff=3, workers=_workers(len(a))), dtype=np.int64)


def _osa_where(a: S, b: S, can: B) -> I64:
    """``_osa(a, b)`` on the rows ``can``, 3 (as far apart as it tells) elsewhere: for rows
    whose lengths already put them further apart than the caller asks about."""
    d = np.full(len(a), 3, dtype=np.int64)
    ci = np.nonzero(can)[0]
    if len(ci):
        d[ci] = _osa(a[ci], b[ci])
    return d


def _has(rows: I32, ids: I32) -> B:
    """Rows of the -1 padded id table ``rows`` that hold the row's id in ``ids``."""
    if not len(rows):
        return np.zeros(0, dtype=bool)
    return np.asarray(((rows == ids[:, None]) & (ids[:, None] >= 0)).any(axis=1))


def _self_ids(ix: VoterIndex, coder: Coder, codes: I64) -> I32:
    """The nickname key id of each given name itself (its id among the keys)."""
    kid = key_ids(ix)
    vocab = ix.vocabs["given"]
    n = len(vocab)
    table = ix.cache.get("given_self")
    if table is None:
        table = ix.cache.setdefault("given_self", np.array(
            [kid.self_id(vocab.text(i)) for i in range(n)], dtype=np.int32))
    out = np.full(len(codes), -1, dtype=np.int32)
    known = codes < n
    out[known] = table[codes[known]]
    if not known.all():
        uc, inv = np.unique(codes[~known], return_inverse=True)
        out[~known] = np.array([kid.self_id(coder.text(int(c))) for c in uc],
                               dtype=np.int32)[inv]
    return out


def _nick_rows(ix: VoterIndex, coder: Coder, codes: I64, typo: bool | str) -> I32:
    """Nickname key ids (or, with ``typo``, those of names one edit away) per given code."""
    kid = key_ids(ix)
    n = len(ix.vocabs["given"])
    width = ix.given_nick.shape[1]
    if not typo:
        out = np.full((len(codes), width), -1, dtype=np.int32)
        known = codes < n
        out[known] = ix.given_nick[codes[known]]
        if not known.all():
            uc, inv = np.unique(codes[~known], return_inverse=True)
            out[~known] = kid.table([coder.text(int(c)) for c in uc])[inv]
        return out
    if not len(codes):
        return kid.table([], typo=typo)
    uc, inv = np.unique(codes, return_inverse=True)
    return kid.table([coder.text(int(c)) for c in uc], typo=True)[inv]


def _shares(ix: VoterIndex, coder: Coder, codes: I64, ids: I32, typo: bool | str) -> B:
    """Per row: does ``_nick_rows(codes, typo)`` hold one of the row's ``ids`` (-1 padded)?
    Without laying each row's 64 typo keys against each of its ids: the keys of each
    distinct code are sorted once as (code, key), and every id is looked up there."""
    if not len(codes):
        return np.zeros(0, dtype=bool)
    uc, inv = np.unique(codes, return_inverse=True)
    table = _nick_rows(ix, coder, uc, typo)
    r, k = np.nonzero(table >= 0)
    keys = np.sort((r.astype(np.int64) << 32) | table[r, k].astype(np.int64))
    if not len(keys):
        return np.zeros(len(codes), dtype=bool)
    # A padding id (-1) makes its query -1, which no key is.
    q = (inv.reshape(-1, 1).astype(np.int64) << 32) | ids.astype(np.int64)
    at = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
    return np.asarray((keys[at] == q).any(axis=1))


def _phon_of(ix: VoterIndex, coder: Coder, codes: I64) -> I32:
    """Phonetic codes (the roll's vocabulary; -1 for a sound it lacks) of given-name codes."""
    n = len(ix.vocabs["given"])
    out = np.full(len(codes), -1, dtype=np.int32)
    known = codes < n
    out[known] = ix.given_phon[codes[known]]
    if not known.all():
        uc, inv = np.unique(codes[~known], return_inverse=True)
        out[~known] = ix.vocabs["phon"].codes([phonetic(coder.text(int(c))) for c in uc])[inv]
    return out


def _start_levels(sc: I32, vc: I32, exact_level: int, diff_level: int
                  ) -> tuple[npt.NDArray[np.int8], B]:
    """A name comparison's levels where the codes decide (0 where either is missing, the
    exact level where they are equal, else ``diff_level``), and the pairs still to compare."""
    out = np.full(len(sc), diff_level, dtype=np.int8)
    missing = (sc < 0) | (vc < 0)
    out[missing] = 0
    exact = (sc == vc) & ~missing
    out[exact] = exact_level
    return out, ~missing & ~exact


def _first_levels(ix: VoterIndex, sf: I32, vf: I32, coder: Coder) -> npt.NDArray[np.int8]:
    """FIRST levels of pairs (signature given-name codes ``sf`` vs voter codes ``vf``)."""
    out, rest = _start_levels(sf, vf, fs.FIRST_EXACT, fs.FIRST_DIFF)
    if not rest.any():
        return out
    out[rest] = _memo(ix, "first", "given", sf[rest], vf[rest],
                      lambda ua, ub: _first_pair_levels(ix, ua, ub, coder))
    return out


def _first_pair_levels(ix: VoterIndex, ua: I64, ub: I64, coder: Coder) -> npt.NDArray[np.int8]:
    """FIRST levels of distinct (signature, voter) given-name code pairs, neither missing
    nor equal."""
    a, bb = coder.strs(ua), ix.vocabs["given"].strs(ub)
    la, lb = np.strings.str_len(a), np.strings.str_len(bb)
    jw = _jw(a, bb)
    osa = _osa_where(a, bb, (np.abs(la - lb) <= 1) & (np.maximum(la, lb) >= 4))
    same_initial = a.astype("U1") == bb.astype("U1")
    # A nickname: one name is a nickname of the other (MIKE ~ MICHAEL, not two nicknames of
    # a third: NATHAN and JOHN are both JONATHAN's, and name two people of one household).
    nick_a, nick_b = _nick_rows(ix, coder, ua, False), ix.given_nick[ub]
    self_a = _self_ids(ix, coder, ua)
    self_b = _self_ids(ix, coder, ub.astype(np.int64))
    is_nick = _has(nick_a, self_b) | _has(nick_b, self_a)
    is_initial = ((la == 1) | (lb == 1)) & same_initial
    is_typo = (((osa <= 1) & (np.maximum(la, lb) >= 4)) | (jw >= 0.92)) & ~is_initial
    # Only a spelling the roll lacks is tried as a misspelt nickname: a name one edit from
    # it is the voter's name's nickname, or has it as a nickname.
    odd = ua >= len(ix.vocabs["given"])
    is_nick_typo = np.zeros(len(ua), dtype=bool)
    if odd.any():
        is_nick_typo[odd] = (_shares(ix, coder, ua[odd], self_b[odd][:, None], True)
                             | _shares(ix, coder, ua[odd], nick_b[odd], "near"))
    phon_a = _phon_of(ix, coder, ua)
    is_phon = (phon_a >= 0) & (phon_a == ix.given_phon[ub]) & (np.minimum(la, lb) > 1)
    is_similar = (jw >= 0.80) & ~is_initial
    return np.select(
        [is_nick, is_typo, is_nick_typo, is_initial, is_phon, is_similar],
        [fs.FIRST_NICK, fs.FIRST_TYPO, fs.FIRST_NICK_TYPO, fs.FIRST_INITIAL, fs.FIRST_PHON,
         fs.FIRST_SIMILAR], fs.FIRST_DIFF).astype(np.int8)


def _last_levels(ix: VoterIndex, sl: I32, vl: I32, s_sound: I32, s_parts: I32,
                 coder: Coder) -> npt.NDArray[np.int8]:
    out, rest = _start_levels(sl, vl, fs.LAST_EXACT, fs.LAST_DIFF)
    if not rest.any():
        return out

    def spelt(ua: I64, ub: I64) -> npt.NDArray[np.int8]:
        a, bb = coder.strs(ua), ix.vocabs["last"].strs(ub)
        la, lb = np.strings.str_len(a), np.strings.str_len(bb)
        jw = _jw(a, bb)
        osa = _osa_where(a, bb, (np.abs(la - lb) <= 1) & (np.maximum(la, lb) >= 2))
        part = ((la >= 3) & (lb >= 3) & (
            np.strings.startswith(a, bb) | np.strings.endswith(a, bb)
            | np.strings.startswith(bb, a) | np.strings.endswith(bb, a)))
        typo = ((osa <= 1) & (np.maximum(la, lb) >= 4)) | (jw >= 0.94)
        # One edit in a short surname (WU / WDU, LAM / LAB) is only similar: LI, LE, LU and
        # LEE are different people's.
        similar = (jw >= 0.84) | ((osa <= 1) & (np.minimum(la, lb) >= 2))
        return np.select([typo, part, similar], [fs.LAST_TYPO, fs.LAST_PART, fs.LAST_SIMILAR],
                         fs.LAST_DIFF).astype(np.int8)

    r = _memo(ix, "last", "last", sl[rest], vl[rest], spelt)
    # Sounds alike, or a part's sound (per pair: sounds are per signature and per voter).
    v = vl[rest]
    snd = s_sound[rest]
    v_snd = ix.last_phon[v]
    same_sound = (snd >= 0) & (snd == v_snd)
    part_sound = ((snd >= 0)[:, None] & (ix.last_part_phon[v] == snd[:, None])).any(axis=1)
    part_sound |= ((v_snd >= 0)[:, None] & (s_parts[rest] == v_snd[:, None])).any(axis=1)
    r = np.where((r > fs.LAST_PART) & part_sound & ~same_sound, fs.LAST_PART, r)
    r = np.where((r > fs.LAST_PHON) & same_sound, fs.LAST_PHON, r)
    out[rest] = r.astype(np.int8)
    return out


def _single_letters(ix: VoterIndex) -> B:
    """Per code of the roll's given-name vocabulary: the name is one letter (an initial)."""
    got = ix.cache.get("given_single")
    if got is None:
        v = ix.vocabs["given"]
        got = ix.cache.setdefault("given_single", np.strings.str_len(v.strs(
            np.arange(len(v), dtype=np.int64))) == 1)
    return got  # type: ignore[no-any-return]


def _middle_levels(ix: VoterIndex, sm: I32, vm: I32, coder: Coder) -> npt.NDArray[np.int8]:
    out, rest = _start_levels(sm, vm, fs.MID_EXACT, fs.MID_DIFF)
    # The same initial on both sides is an initial's agreement (D and D: one letter in some
    # twenty), not a middle name's.
    same = out == fs.MID_EXACT
    if same.any():
        out[same & _single_letters(ix)[np.maximum(vm, 0)]] = fs.MID_INITIAL
    if not rest.any():
        return out

    def spelt(ua: I64, ub: I64) -> npt.NDArray[np.int8]:
        a, bb = coder.strs(ua), ix.vocabs["given"].strs(ub)
        la, lb = np.strings.str_len(a), np.strings.str_len(bb)
        initial = ((la == 1) | (lb == 1)) & (a.astype("U1") == bb.astype("U1"))
        return np.select([initial, _jw(a, bb) >= 0.88], [fs.MID_INITIAL, fs.MID_SIMILAR],
                         fs.MID_DIFF).astype(np.int8)

    out[rest] = _memo(ix, "middle", "given", sm[rest], vm[rest], spelt)
    return out


def _suffix_levels(ss: npt.NDArray[np.int8], vs: npt.NDArray[np.int8]) -> npt.NDArray[np.int8]:
    """Agree or conflict when both give a suffix (JR, SR, II ...); else missing: a suffix
    left unwritten is the signer's habit, and who of father and son signed is for the
    rest of the evidence (or a reviewer) to say."""
    return np.select([(ss == 0) | (vs == 0), ss == vs], [0, fs.SFX_AGREE],
                     fs.SFX_CONFLICT).astype(np.int8)


def _birth_levels(sd: I32, vd: I32) -> npt.NDArray[np.int8]:
    missing = (sd <= 0) | (vd <= 0)
    sy, sm, sdd = sd // 10000, (sd // 100) % 100, sd % 100
    vy, vm, vdd = vd // 10000, (vd // 100) % 100, vd % 100
    swap = (sy == vy) & (sm == vdd) & (sdd == vm)
    agree = (sy == vy).astype(np.int8) + (sm == vm) + (sdd == vdd)
    lvl = np.select([missing, sd == vd, swap, agree >= 2],
                    [0, fs.BIRTH_EXACT, fs.BIRTH_SWAP, fs.BIRTH_PART], fs.BIRTH_DIFF)
    return lvl.astype(np.int8)


#: a vocabulary's pairs' answers are remembered when it has at most this many strings
MEMO_VOCAB = 4096


def _memo(ix: VoterIndex, name: str, vocab: str, sc: I32 | I64, vc: I32 | I64, get: Any
          ) -> npt.NDArray[np.int8]:
    """Per code pair (``sc`` a signature's, ``vc`` the roll's; pairs may repeat) the answer
    ``get(ua, ub)`` gives for the distinct pairs (non-negative int8). The answers for two of
    the roll's strings are remembered in a table of the index under ``name`` and read from
    it pair by pair; only the pairs it lacks are made distinct and asked. ``get`` must give
    a pair the same answer whatever the other pairs asked with it, and depend on nothing
    but the two codes and the index."""
    n = len(ix.vocabs[vocab])
    if n > MEMO_VOCAB:
        ua, ub, inv = _unique(sc, vc)
        return np.asarray(get(ua, ub)).astype(np.int8)[inv]
    key = f"pair_memo_{name}"
    table = ix.cache.get(key)
    if table is None:
        table = ix.cache.setdefault(key, np.full((n, n), -1, dtype=np.int8))
    out = np.full(len(sc), -1, dtype=np.int8)
    roll = np.nonzero(sc < n)[0]
    out[roll] = table[sc[roll], vc[roll]]
    ai = np.nonzero(out < 0)[0]
    if len(ai):
        ua, ub, inv = _unique(sc[ai], vc[ai])
        got = np.asarray(get(ua, ub)).astype(np.int8)
        out[ai] = got[inv]
        mine = ua < n
        table[ua[mine], ub[mine]] = got[mine]
    return out


def _exact_or(sc: I32, vc: I32, test: Any, ix: VoterIndex | None = None,
              vocab: str = "") -> tuple[B, B]:
    """(equal, similar by ``test(unique left codes, unique right codes)``) for code pairs
    (missing on either side: neither). With ``ix`` and ``vocab``, the answers for the
    roll's own strings are remembered (``_memo``)."""
    present = (sc >= 0) & (vc >= 0)
    exact = present & (sc == vc)
    similar = np.zeros(len(sc), dtype=bool)
    rest = present & ~exact
    if rest.any():
        if ix is not None:
            similar[rest] = _memo(ix, vocab, vocab, sc[rest], vc[rest],
                                  lambda a, b: np.asarray(test(a, b), dtype=bool)) == 1
        else:
            ua, ub, inv = _unique(sc[rest], vc[rest])
            similar[rest] = np.asarray(test(ua, ub))[inv]
    return exact, similar


def _starts_with_digit(strs: S) -> B:
    if not len(strs):
        return np.zeros(0, dtype=bool)
    first = strs.astype("U1")
    return (first >= "0") & (first <= "9")


def _meta(ix: VoterIndex, vocab: str) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.int16]]:
    """(length, first character) of every string of a roll vocabulary (remembered)."""
    key = f"meta_{vocab}"
    got = ix.cache.get(key)
    if got is None:
        v = ix.vocabs[vocab].values
        if len(v):
            lengths = np.strings.str_len(v).astype(np.int16)
            first = np.frombuffer(v.tobytes(), dtype=np.uint8)[:: v.itemsize].astype(np.int16)
        else:
            lengths = first = np.zeros(0, dtype=np.int16)
        got = ix.cache.setdefault(key, (lengths, first))
    return got  # type: ignore[no-any-return]


def _coded_meta(ix: VoterIndex, vocab: str, coder: Coder, codes: I32
                ) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.int16]]:
    """(length, first character) of valid codes of a batch (the roll's and its own)."""
    lengths, first = _meta(ix, vocab)
    n = len(ix.vocabs[vocab])
    known = codes < n
    out_l = np.zeros(len(codes), dtype=np.int16)
    out_f = np.zeros(len(codes), dtype=np.int16)
    out_l[known], out_f[known] = lengths[codes[known]], first[codes[known]]
    if not known.all():
        ext_l, ext_f = coder.ext_meta()
        odd = codes[~known] - n
        out_l[~known], out_f[~known] = ext_l[odd], ext_f[odd]
    return out_l, out_f


def _last_chars(ix: VoterIndex, vocab: str, coder: Coder, codes: I32) -> npt.NDArray[np.int16]:
    """The last character of valid codes of a batch (the roll's and its own); 0 for ""."""
    key = f"last_char_{vocab}"
    table = ix.cache.get(key)
    if table is None:
        v = ix.vocabs[vocab].values
        table = np.zeros(len(v), dtype=np.int16)
        if len(v):
            lengths = np.strings.str_len(v)
            raw = np.frombuffer(v.tobytes(), dtype=np.uint8).reshape(len(v), v.itemsize)
            ok = lengths > 0
            table[ok] = raw[np.nonzero(ok)[0], lengths[ok] - 1]
        table = ix.cache.setdefault(key, table)
    n = len(ix.vocabs[vocab])
    known = codes < n
    out = np.zeros(len(codes), dtype=np.int16)
    out[known] = table[codes[known]]
    if not known.all():
        out[~known] = [ord(t[-1]) if t else 0 for t in (coder.text(int(c)) for c in codes[~known])]
    return out


class _Gathered(dict[str, npt.NDArray[Any]]):
    """Columns read at rows, each gathered once on first use (``cols[name][rows]``): a pair's
    comparison reads the same column of a signature or voter several times, and each read of
    a roll column at tens of thousands of scattered rows is a pass of cache misses."""

    def __init__(self, cols: dict[str, npt.NDArray[Any]], rows: I32) -> None:
        super().__init__()
        self.cols, self.rows = cols, rows

    def __missing__(self, name: str) -> npt.NDArray[Any]:
        got = self[name] = self.cols[name][self.rows]
        return got


def _house_levels(ix: VoterIndex, b: SigBatch, s: I32, v: I32, slip: Any,
                  sg: _Gathered | None = None, vg: _Gathered | None = None) -> tuple[B, B]:
    """``_exact_or`` of the house numbers with ``slip`` (one OSA edit, at least three
    characters; or two digits transposed), tried only on pairs that can be a slip: lengths
    at most one apart, at least three, and the first or the last characters alike (one edit
    in a string of three or more characters leaves one end as it was); or both of two."""
    sh = sg["house"] if sg is not None else b.cols["house"][s]
    vh = vg["house"] if vg is not None else ix.cols["house"][v]
    present = (sh >= 0) & (vh >= 0)
    exact = present & (sh == vh)
    similar = np.zeros(len(sh), dtype=bool)
    ri = np.nonzero(present & ~exact)[0]
    if not len(ri):
        return exact, similar
    coder = b.coders["house"]
    s_codes, v_codes = sh[ri], vh[ri]
    s_len, s_first = _coded_meta(ix, "house", coder, s_codes)
    lengths, firsts = _meta(ix, "house")
    v_len, v_first = lengths[v_codes], firsts[v_codes]
    s_last = _last_chars(ix, "house", coder, s_codes)
    v_last = _last_chars(ix, "house", coder, v_codes)
    maybe = (((np.abs(s_len - v_len) <= 1) & (np.maximum(s_len, v_len) >= 3)
              & ((s_first == v_first) | (s_last == v_last)))
             # two digits transposed ("21" for 12)
             | ((s_len == 2) & (v_len == 2) & (s_first == v_last) & (s_last == v_first)))
    ri = ri[maybe]
    if len(ri):
        ua, ub, inv = _unique(sh[ri], vh[ri])
        similar[ri] = np.asarray(slip(ua, ub))[inv]
    return exact, similar


def _long_type_table(ix: VoterIndex) -> S:
    got = ix.cache.get("long_types")
    if got is None:
        v = ix.vocabs["stype"]
        got = ix.cache.setdefault("long_types", np.array(
            [long_type(v.text(i)) for i in range(len(v))] + [""], dtype="U"))
    return got  # type: ignore[no-any-return]


def _long_types(ix: VoterIndex, coder: Coder, codes: I64) -> S:
    """Street types written out ("PKWY" -> "PARKWAY"); "" where none (code -1)."""
    table = _long_type_table(ix)
    n = len(ix.vocabs["stype"])
    out = table[np.where((codes >= 0) & (codes < n), codes, n)]
    odd = codes >= n
    if odd.any():
        out = out.astype("U32")
        out[odd] = [long_type(coder.text(int(c))) for c in codes[odd]]
    return out


def _slip(a: S, b: S, long: int, d: I64 | None = None) -> B:
    """One edit apart (and at least four characters), or two when both are at least
    ``long`` characters and begin alike: a slip of the pen, not another word. ``d``: the
    OSA distances of ``a`` and ``b`` when already known."""
    if not len(a):
        return np.zeros(0, dtype=bool)
    la, lb = np.strings.str_len(a), np.strings.str_len(b)
    shorter = np.minimum(la, lb)
    if d is None:  # OSA counts at least the difference in length
        apart = np.abs(la - lb)
        d = _osa_where(a, b, ((apart <= 1) & (np.maximum(la, lb) >= 4))
                       | ((apart <= 2) & (shorter >= long)))
    return np.asarray(((d <= 1) & (np.maximum(la, lb) >= 4))
                      | ((d <= 2) & (shorter >= long) & (a.astype("U1") == b.astype("U1"))))


def _long_dirs(ix: VoterIndex, codes: I64) -> S:
    """Directionals written out ("N" -> "NORTH"); "" where none."""
    v = ix.vocabs["sdir"]
    table = ix.cache.get("long_dirs")
    if table is None:
        table = ix.cache.setdefault("long_dirs", np.array(
            [long_direction(v.text(i)) for i in range(len(v))] + [""], dtype="U"))
    n = len(v)
    return table[np.where((codes >= 0) & (codes < n), codes, n)]  # type: ignore[no-any-return]


def _short_types(ix: VoterIndex, coder: Coder, codes: I64, vocab: str = "stype") -> S:
    """Street types (or directionals) as coded ("PKWY"); "" where none."""
    v = ix.vocabs[vocab]
    table = ix.cache.get(f"short_{vocab}")
    if table is None:
        table = ix.cache.setdefault(f"short_{vocab}", np.array(
            [v.text(i) for i in range(len(v))] + [""], dtype="U"))
    n = len(v)
    out = table[np.where((codes >= 0) & (codes < n), codes, n)]
    odd = codes >= n
    if odd.any():
        out = out.astype("U32")
        out[odd] = [coder.text(int(c)) for c in codes[odd]]
    return out  # type: ignore[no-any-return]


def _residence_levels(ix: VoterIndex, b: SigBatch, s: I32, v: I32,
                      sg: _Gathered | None = None, vg: _Gathered | None = None
                      ) -> npt.NDArray[np.int8]:
    co, vv = b.coders, ix.vocabs
    sg = _Gathered(b.cols, s) if sg is None else sg
    vg = _Gathered(ix.cols, v) if vg is None else vg

    def house_slip(ua: I64, ub: I64) -> B:
        # One edit in a number of three or more digits; two digits transposed in any ("21"
        # for 12).
        a, bb = co["house"].strs(ua), vv["house"].strs(ub)
        longest = np.maximum(np.strings.str_len(a), np.strings.str_len(bb))
        one = _osa(a, bb) <= 1
        ok = one & (longest >= 3)
        short = np.nonzero(one & (longest < 3))[0]  # only these can need the transposition
        if len(short):
            ok[short] = [len(x) == len(y) >= 2 and x != y and sorted(x) == sorted(y)
                         for x, y in zip(a[short].tolist(), bb[short].tolist(), strict=True)]
        return np.asarray(ok, dtype=bool)

    house_ex, house_sl = _house_levels(ix, b, s, v, house_slip, sg, vg)
    # Street names: the name, or the name with its type written out ("WONGPARKWAY" for
    # WONG PKWY; "BURNSCEURT" for BURNS CT), one edit or Jaro-Winkler 0.9 apart. Only
    # worth a look where the house agrees or the names begin alike.
    s_st, v_st = sg["street"], vg["street"]
    present = (s_st >= 0) & (v_st >= 0)
    street_ex = present & (s_st == v_st)
    street_sim = np.zeros(len(s), dtype=bool)
    rest = present & ~street_ex
    if rest.any():
        _, s_first = _coded_meta(ix, "street", co["street"], s_st[rest])
        _, v_first = _meta(ix, "street")
        look = (s_first == v_first[v_st[rest]]) | (house_ex | house_sl)[rest]
        rest[np.nonzero(rest)[0][~look]] = False
    if rest.any():
        s_ty, v_ty = sg["stype"][rest].astype(np.int64), vg["stype"][rest].astype(np.int64)
        left = s_st[rest].astype(np.int64) * 4096 + (s_ty + 1)
        right = v_st[rest].astype(np.int64) * 4096 + (v_ty + 1)
        ua, ub, inv = _unique(left, right)
        a_name = co["street"].strs((ua // 4096).astype(np.int32))
        b_name = vv["street"].strs(ub // 4096)
        a_ty, b_ty = ua % 4096 - 1, ub % 4096 - 1
        a_full = np.strings.add(a_name, _long_types(ix, co["stype"], a_ty))
        b_full = np.strings.add(b_name, _long_types(ix, co["stype"], b_ty))
        an, bn = a_name.tolist(), b_name.tolist()
        ok = (_jw(an, bn) >= 0.90) | _slip(a_name, b_name, 4, _osa(an, bn))
        no = np.nonzero(~ok)[0]  # the written-out names only matter where these fail
        if len(no):
            ok[no] = _slip(a_full[no], b_full[no], 6)
        # Run together or the type misspelt ("WONGPARKWAY", "BURNSCEURT", "6THCT" for
        # 6TH CT): one side has no type; its name is compared with the other's name and
        # type, written out or abbreviated.
        cross = ~ok & ((a_ty < 0) | (b_ty < 0))
        if cross.any():
            a_short = np.strings.add(a_name[cross], _short_types(ix, co["stype"], a_ty[cross]))
            b_short = np.strings.add(b_name[cross], _short_types(ix, co["stype"], b_ty[cross]))
            ok[cross] = (_slip(a_name[cross], b_full[cross], 6) | _slip(a_full[cross],
                                                                       b_name[cross], 6)
                         | _slip(a_name[cross], b_short, 4) | _slip(a_short, b_name[cross], 4))
        street_sim[rest] = ok[inv]
    s_dir, v_dir = sg["sdir"], vg["sdir"]
    dir_conflict = (s_dir >= 0) & (v_dir >= 0) & (s_dir != v_dir)

    def zip_near(ua: I64, ub: I64) -> B:  # one digit wrong, missing or two swapped
        return _osa(co["zip"].strs(ua), vv["zip"].strs(ub)) <= 1

    zip_ex, zip_nr = _exact_or(sg["zip"], vg["zip"], zip_near, ix, "zip")
    city_ex, city_sim = _exact_or(
        sg["city"], vg["city"],
        lambda ua, ub: _jw(co["city"].strs(ua), vv["city"].strs(ub)) >= 0.9, ix, "city")
    zip_null = (sg["zip"] < 0) | (vg["zip"] < 0)
    city_null = (sg["city"] < 0) | (vg["city"] < 0)
    loc_agree = zip_ex | (city_ex & (zip_nr | zip_null))
    loc_near = (zip_nr | city_ex | city_sim) & ~loc_agree
    loc_null = zip_null & city_null
    street_agree = street_ex & ~dir_conflict
    street_close = street_sim | (street_ex & dir_conflict)
    addr_exact = house_ex & street_agree
    addr_near = (house_ex & street_close) | (house_sl & (street_agree | street_close))
    # Run together or split: "453 6SMITH" for 4536 SMITH, "4536SMITH" (no house) likewise.
    odd = present & ~addr_exact & ~addr_near & (loc_agree | loc_near)
    if odd.any():
        oi = np.nonzero(odd)[0]
        s_digit = _starts_with_digit(co["street"].strs(s_st[oi]))
        hs, hv = sg["house"][oi], vg["house"][oi]
        both = (hs >= 0) & (hv >= 0)
        _, hs_first = _coded_meta(ix, "house", co["house"], np.maximum(hs, 0))
        _, st_first = _coded_meta(ix, "street", co["street"], s_st[oi])
        alike = (both & (hs_first == _meta(ix, "house")[1][np.maximum(hv, 0)])
                 & (st_first == _meta(ix, "street")[1][v_st[oi]]))
        odd[oi] = s_digit | (hs < 0) | alike
    if odd.any():
        # The lines as written ("1633 9NORTH UNDERWOOD CIRCLE") against the voter's, its
        # directional and type abbreviated or written out: a slip or two in a long line.
        idx = np.nonzero(odd)[0]
        a = b.lines[s[idx]]
        hv = vg["house"][idx]
        house = np.where(hv >= 0, vv["house"].strs(np.maximum(hv, 0)), "")
        name = vv["street"].strs(v_st[idx])
        ty = vg["stype"][idx].astype(np.int64)
        dr = vg["sdir"][idx].astype(np.int64)
        near = np.zeros(len(idx), dtype=bool)
        # A street named by a directional ("WEST AVE", kept as W) is written out too, as the
        # signature's line has it ("1977 5WEST AVE").
        names = [name]
        if len(name):
            spelt = np.array([long_direction(x) for x in name.tolist()], dtype="U")
            if (spelt != name).any():
                names.append(spelt)
        # A slip changes the length by two at most: only lines of about the length written
        # are put together and compared.
        la = np.strings.str_len(a)
        for nm in names:
            base = np.strings.str_len(house) + np.strings.str_len(nm)
            for d_text in (_short_types(ix, co["sdir"], dr, "sdir"),
                           _long_dirs(ix, dr)):
                ld = np.strings.str_len(d_text)
                for t_text in (_short_types(ix, co["stype"], ty),
                               _long_types(ix, co["stype"], ty)):
                    r = np.nonzero(~near & (np.abs(la - (base + ld + np.strings.str_len(t_text)))
                                            <= 2))[0]
                    if len(r):
                        line = np.strings.add(np.strings.add(np.strings.add(house[r], d_text[r]),
                                                             nm[r]), t_text[r])
                        near[r] = _slip(a[r], line, 10)
        addr_near[idx[near]] = True
    # The street and second lines swapped around the house number ("26 DURRAWEEN" with
    # "CHANT STREET" below it, for 26 CHANT STREET, DURRAWEEN): one side's second line is
    # the other's street, its type written out or abbreviated (a slip or two allowed).
    swap = (~addr_exact & ~addr_near & (house_ex | house_sl)
            & (loc_agree | loc_near | loc_null)
            & (((sg["unit"] >= 0) & (v_st >= 0)) | ((vg["unit"] >= 0) & (s_st >= 0))))
    if swap.any():
        idx = np.nonzero(swap)[0]
        near = np.zeros(len(idx), dtype=bool)
        sides = ((co["unit"], sg["unit"][idx], vv["street"], v_st[idx],
                  vg["stype"][idx].astype(np.int64)),
                 (vv["unit"], vg["unit"][idx], co["street"], s_st[idx],
                  sg["stype"][idx].astype(np.int64)))
        for unit_vocab, unit, street_vocab, street, ty in sides:
            has = (unit >= 0) & (street >= 0)
            if not has.any():
                continue
            u_text = unit_vocab.strs(unit[has])
            name = street_vocab.strs(street[has])
            for t_text in (_short_types(ix, co["stype"], ty[has]),
                           _long_types(ix, co["stype"], ty[has])):
                near[has] |= _slip(u_text, np.strings.add(name, t_text), 8)
        addr_near[idx[near]] = True
    # No street name on one side or both ("3", "FOREST GLEN RESORT": a number and a place
    # name): the house number and the second line agreeing is the same address.
    s_un, v_un = sg["unit"], vg["unit"]
    bare = ~present & house_ex & (s_un >= 0) & (v_un >= 0)
    if bare.any():
        bi = np.nonzero(bare)[0]
        same_unit = s_un[bi] == v_un[bi]
        rest_u = ~same_unit
        if rest_u.any():
            same_unit[rest_u] = _slip(co["unit"].strs(s_un[bi][rest_u]),
                                      vv["unit"].strs(v_un[bi][rest_u]), 8)
        bare[bi] = same_unit
    street_any = street_agree | street_close
    lvl = np.select(
        [bare & (loc_agree | loc_near | loc_null),
         ~present,
         addr_exact & (loc_agree | loc_null),
         (addr_exact & loc_near) | (addr_near & (loc_agree | loc_near | loc_null)),
         addr_exact | addr_near,
         street_any & (loc_agree | loc_near | loc_null),
         loc_agree],
        [fs.RES_NEAR, 0, fs.RES_EXACT, fs.RES_NEAR, fs.RES_OTHER_TOWN, fs.RES_STREET,
         fs.RES_LOCALITY],
        fs.RES_DIFF)
    return lvl.astype(np.int8)


def _joined_given(ix: VoterIndex, g: Coder, sf: I32, sm: I32, vf: I32, vm: I32,
                  first: npt.NDArray[np.int8]) -> npt.NDArray[np.int8]:
    """A two-word given name written as one or split ("FANG JIAN" for FANGJIAN, "JINXIN"
    for JING-XIN): first and middle name read as one word on either side (per pair: the
    signature's first and middle codes ``sf``, ``sm``, the voter's ``vf``, ``vm``)."""
    look = ((first >= fs.FIRST_INITIAL) & (sf >= 0) & (vf >= 0)
            & ((sm >= 0) | (vm >= 0)))
    if not look.any():
        return first
    idx = np.nonzero(look)[0]
    gv = ix.vocabs["given"]
    # Only names that begin alike can be one word written two ways, and only where two of
    # the words compared (first, or first and middle run together) are of lengths at most
    # one apart (an edit changes a length by one at most).
    lengths, starts = _meta(ix, "given")
    s_len, s_start = _coded_meta(ix, "given", g, sf[idx])
    alike = s_start == starts[vf[idx]]
    idx, s_len = idx[alike], s_len[alike].astype(np.int32)
    sm_i, vm_i = sm[idx], vm[idx]
    sm_len = np.where(sm_i >= 0, _coded_meta(ix, "given", g, np.maximum(sm_i, 0))[0], 0)
    v_len = lengths[vf[idx]].astype(np.int32)
    vm_len = np.where(vm_i >= 0, lengths[np.maximum(vm_i, 0)], 0)
    la2, lb2 = s_len + sm_len, v_len + vm_len
    idx = idx[(np.abs(la2 - lb2) <= 1) | (np.abs(la2 - v_len) <= 1) | (np.abs(s_len - lb2) <= 1)]
    if not len(idx):
        return first
    # Each distinct (first, middle) against (first, middle) once.
    wide = int(max(sf[idx].max(), sm[idx].max(), vf[idx].max(), vm[idx].max())) + 2
    ul, ur, inv = _unique(sf[idx].astype(np.int64) * wide + (sm[idx] + 1),
                          vf[idx].astype(np.int64) * wide + (vm[idx] + 1))
    usf, usm, uvf, uvm = ul // wide, ul % wide - 1, ur // wide, ur % wide - 1
    a1 = g.strs(usf)
    b1 = gv.strs(uvf)
    a2 = np.strings.add(a1, np.where(usm >= 0, g.strs(np.maximum(usm, 0)), ""))
    b2 = np.strings.add(b1, np.where(uvm >= 0, gv.strs(np.maximum(uvm, 0)), ""))
    u_exact = (a2 == b1) | (a1 == b2) | ((a2 == b2) & ((usm < 0) | (uvm < 0)))
    # One edit apart: only strings of lengths at most one apart can be.
    la1, la2 = np.strings.str_len(a1), np.strings.str_len(a2)
    lb1, lb2 = np.strings.str_len(b1), np.strings.str_len(b2)
    u_near = np.zeros(len(ul), dtype=bool)
    for x, y, lx, ly in ((a2, b2, la2, lb2), (a2, b1, la2, lb1), (a1, b2, la1, lb2)):
        u_near |= _osa_where(x, y, ~u_exact & ~u_near & (np.abs(lx - ly) <= 1)) <= 1
    exact, near = u_exact[inv], u_near[inv]
    out = first.copy()
    out[idx[exact]] = fs.FIRST_EXACT
    out[idx[near]] = np.minimum(out[idx[near]], fs.FIRST_TYPO)
    return out


def compare(ix: VoterIndex, b: SigBatch, s: I32, v: I32, swapped: bool = True) -> fs.Levels:
    """Every comparison's level for pairs (signature row ``s``, voter ``v``). With
    ``swapped``, names are also read the other way round (first and last exchanged) where
    the surnames disagree, and the reading with the stronger surname level is kept."""
    sg, vg = _Gathered(b.cols, s), _Gathered(ix.cols, v)
    g = b.coders["given"]
    first = _first_levels(ix, sg["first"], vg["first"], g)
    # The middle name written as the first name ("Carlos" for Juan Carlos) or back.
    mid_first = (((sg["first"] >= 0) & (sg["first"] == vg["middle"]))
                 | ((sg["middle"] >= 0) & (sg["middle"] == vg["first"])))
    first = np.where((first > fs.FIRST_MIDDLE) & mid_first, fs.FIRST_MIDDLE, first).astype(np.int8)
    first = _joined_given(ix, g, sg["first"], sg["middle"], vg["first"], vg["middle"],
                          first)
    last = _last_levels(ix, sg["last"], vg["last"], b.last_sounds[s, 0],
                        b.last_sounds[s, 1:], b.coders["last"])
    lv = fs.Levels(
        first=first,
        middle=_middle_levels(ix, sg["middle"], vg["middle"], g),
        last=last,
        suffix=_suffix_levels(sg["suffix"], vg["suffix"]),
        residence=_residence_levels(ix, b, s, v, sg, vg),
        birth=_birth_levels(sg["dob"], vg["dob"]),
        n_first=ix.n_first[np.maximum(vg["first"], 0)],
        n_last=ix.n_last[np.maximum(vg["last"], 0)],
        n_addr=vg["n_addr"], n_last_addr=vg["n_last_addr"],
        swapped=np.zeros(len(s), dtype=bool),
    )
    if swapped:
        idx = np.nonzero((last >= fs.LAST_SIMILAR) & (sg["first"] >= 0))[0]
        if len(idx):
            sw_first, sw_last = b.swapped()
            si = s[idx]
            l2 = _last_levels(ix, sw_last[si], vg["last"][idx], b.swapped_sounds(ix)[1][si],
                              np.full((len(idx), 3), -1, dtype=np.int32), b.coders["last"])
            # The first names read the other way only where that surname reading is better.
            keep = (l2 < last[idx]) & (l2 != 0)
            idx, l2, si = idx[keep], l2[keep], si[keep]
            f2 = _first_levels(ix, sw_first[si], vg["first"][idx], g)
            # The middle name: the middle box, else the surname box's second word ("HUANG /
            # YI JING": JING), so that a two-word given name is read whole.
            sm_i = sg["middle"][idx]
            sm2 = np.where(sm_i >= 0, sm_i, b.swapped_middle()[si])
            f2 = _joined_given(ix, g, sw_first[si], sm2, vg["first"][idx], vg["middle"][idx], f2)
            better = (f2 != 0) & (f2 < fs.FIRST_DIFF)
            take = idx[better]
            lv.first[take] = f2[better]
            lv.middle[take] = _middle_levels(ix, sm2[better], vg["middle"][take], g)
            lv.last[take] = l2[better]
            lv.swapped[take] = True
            lv.n_first[take] = ix.n_first[np.maximum(vg["first"][take], 0)]
    return lv


# ----------------------------------------------------------------------------- deciding

STATUS_ACTIVE, STATUS_INACTIVE, STATUS_CANCELLED = 0, 1, 2

#: Reason codes of the vectorised decision (index into REASONS).
REASONS = (Reason.MATCHED, Reason.NOT_REGISTERED, Reason.ADDRESS_MISMATCH, Reason.WRONG_COUNTY,
           Reason.VOTER_INACTIVE, Reason.VOTER_CANCELLED, Reason.SIGNED_BEFORE_REGISTRATION,
           Reason.SIGNED_AFTER_DEADLINE, Reason.PENDING_REVIEW)
DECISIONS = (Decision.MATCH, Decision.NO_MATCH, Decision.REVIEW)
_R = {r: i for i, r in enumerate(REASONS)}


@dataclass
class Decided:
    """A matched batch, as arrays (one entry per signature) and the pairs behind them."""

    decision: npt.NDArray[np.int8]  # index into DECISIONS
    reason: npt.NDArray[np.int8]  # index into REASONS
    voter: I32  # voter row, -1 for none
    probability: F64  # of the best candidate
    top: I32  # (signatures, k) pair indices of the best candidates, -1 padded
    pairs: Pairs
    levels: fs.Levels
    weights: F64
    pair_probability: F64
    index: VoterIndex
    #: per pair: each comparison's part of the weight, and the prior (bits)
    parts: dict[str, F64] = field(default_factory=dict)
    priors: F64 = field(default_factory=lambda: np.zeros(0))
    #: per signature: the section's county code
    counties: I32 = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    #: per signature: the odds of "nobody on the roll signed" beside its candidates' (1 - t
    #: for a stranger to the roll, plus t times the household odds; 1 without them) and of
    #: the namesakes left uncompared
    unregistered: F64 = field(default_factory=lambda: np.zeros(0))
    uncompared: F64 = field(default_factory=lambda: np.zeros(0))

    def __len__(self) -> int:
        return len(self.decision)

    def voter_id(self, i: int) -> str:
        v = int(self.voter[i])
        return self.index.voter_id(v) if v >= 0 else ""

    def candidate(self, p: int, county: int) -> ScoredCandidate:
        """Pair ``p`` as a candidate, with its waterfall (``county``: the section's)."""
        ix = self.index
        v = int(self.pairs.voter[p])
        w = round(float(self.weights[p]), 2)
        evidence: tuple[tuple[str, str, float], ...] = ()
        if self.parts:
            evidence = tuple(
                (c, fs.LEVELS[c][int(getattr(self.levels, c)[p])]
                 + (" (read swapped)" if c in ("first", "last") and self.levels.swapped[p] else ""),
                 round(float(self.parts[c][p]), 2)) for c in fs.COMPARISONS)
        if len(self.priors):
            where = ("in the section's county" if int(ix.cols["county"][v]) == county
                     else "in another county")
            evidence += (("prior", where, round(float(self.priors[p]), 2)),)
        return ScoredCandidate(voter_id=ix.voter_id(v), county=ix.county_text(v),
                               score=round(100 * float(self.pair_probability[p]), 2),
                               field_scores={"weight": w}, weight=w, evidence=evidence)

    def result(self, i: int, county: int = -1) -> MatchResult:
        shown = tuple(self.candidate(int(p), county) for p in self.top[i] if p >= 0)
        return MatchResult(DECISIONS[int(self.decision[i])], REASONS[int(self.reason[i])],
                           self.voter_id(i), round(100 * float(self.probability[i]), 2), shown)

    def results(self, counties: I32 | None = None) -> list[MatchResult]:
        """Every signature's result (``counties``: the sections' county codes, for the
        candidates' priors; ``Decided.counties`` when the batch was prepared here).

        The same as ``result(i)`` for every signature, built column-wise: each shown
        candidate's figures are read out of the arrays once for the whole batch, then the
        candidates and results assembled (the rounding is Python's ``round``, as there)."""
        n = len(self)
        if n == 0:
            return []
        cs = self.counties if counties is None else counties
        ix = self.index
        shown_mask = self.top >= 0
        per_sig = shown_mask.sum(axis=1).tolist()
        p = self.top[shown_mask].astype(np.int64)  # row-major: each signature's, best first
        v = self.pairs.voter[p]
        vids = ix.voter_ids(v.tolist())
        vcounty = ix.cols["county"][v]
        weights = _round2(self.weights[p])
        scores = _round2(100 * self.pair_probability[p])
        columns: list[list[tuple[str, str, float]]] = []
        if self.parts:
            swapped = self.levels.swapped[p]
            for c in fs.COMPARISONS:
                level = getattr(self.levels, c)[p].astype(np.intp)
                names = _level_names(c)
                if c in ("first", "last"):
                    level = level + swapped * (len(names) // 2)
                texts = names[level].tolist()
                bits = _round2(self.parts[c][p])
                columns.append(list(zip(repeat(c, len(texts)), texts, bits, strict=True)))
        if len(self.priors):
            sig_county = (np.repeat(np.asarray(cs, dtype=np.int64), per_sig) if len(cs)
                          else np.full(len(p), -1, dtype=np.int64))
            same = (vcounty.astype(np.int64) == sig_county).tolist()
            bits = _round2(self.priors[p])
            where = [_HERE if s else _ELSEWHERE for s in same]
            columns.append(list(zip(repeat("prior", len(where)), where, bits, strict=True)))
        evidence: list[tuple[tuple[str, str, float], ...]] = (
            list(zip(*columns, strict=True)) if columns else [()] * len(p))
        county_texts = _county_texts(ix)
        shown = list(map(ScoredCandidate, vids, [county_texts[c] for c in vcounty.tolist()],
                         scores, [{"weight": w} for w in weights], weights, evidence))
        named = self.voter >= 0
        voter_ids = [""] * n
        for i, vid in zip(np.nonzero(named)[0].tolist(),
                          ix.voter_ids(self.voter[named].tolist()), strict=True):
            voter_ids[i] = vid
        out: list[MatchResult] = []
        at = 0
        for d, r, vid, prob, k in zip(self.decision.tolist(), self.reason.tolist(), voter_ids,
                                      (100 * self.probability).tolist(), per_sig, strict=True):
            out.append(MatchResult(DECISIONS[d], REASONS[r], vid, round(prob, 2),
                                   tuple(shown[at: at + k])))
            at += k
        return out


_HERE, _ELSEWHERE = "in the section's county", "in another county"


def _round2(x: F64) -> list[float]:
    """``[round(v, 2) for v in x]``, in bulk: ``rint(100 v) / 100`` is Python's result (the
    double nearest the correctly rounded decimal) unless 100 v lies within a hair of a
    half, where the product's own rounding could tip it: those go through ``round``."""
    y = 100 * x
    out = np.rint(y) / 100
    with np.errstate(invalid="ignore"):
        frac = np.abs(y - np.trunc(y))
        odd = (np.abs(frac - 0.5) < 1e-6) | ~(np.abs(y) < 1e12)
    got: list[float] = out.tolist()
    if odd.any():
        for i in np.nonzero(odd)[0].tolist():
            got[i] = round(float(x[i]), 2)
    return got
_LEVEL_NAMES: dict[str, npt.NDArray[np.object_]] = {}


def _level_names(c: str) -> npt.NDArray[np.object_]:
    """A comparison's level names as an object array (first and last: then each read
    swapped, at ``level + len(levels)``)."""
    got = _LEVEL_NAMES.get(c)
    if got is None:
        names = list(fs.LEVELS[c])
        if c in ("first", "last"):
            names += [x + " (read swapped)" for x in fs.LEVELS[c]]
        got = _LEVEL_NAMES[c] = np.array(names, dtype=object)
    return got


def _county_texts(ix: VoterIndex) -> list[str]:
    got = ix.cache.get("county_texts")
    if got is None:
        v = ix.vocabs["county"]
        got = ix.cache.setdefault("county_texts", [v.text(i) for i in range(len(v))])
    return got  # type: ignore[no-any-return]


#: The blocking rules that bring the most pairs (zip + surname sound; zip's first three
#: digits + surname sound + first initial: about half of all pairs): asked only for the
#: signatures the other rules' candidates leave in any doubt (``_beyond_doubt``).
WIDE_RULES = ("zl", "pl")
#: How sure the other rules' candidates must make a signature's voter for the wide rules to
#: be skipped for it (its probability among them; the threshold to accept is lower).
SURE = 0.999
#: Whether the wide rules are skipped for the signatures beyond doubt (False: every rule is
#: asked for every signature; the decisions are the same, see ``_beyond_doubt``).
CASCADE = True


def match_batch(ix: VoterIndex, model: fs.Model, sigs: Sequence[SignatureInput],
                config: MatchConfig) -> Decided:
    """Decide a batch of signatures.

    In two steps: candidates by every rule but the wide ones, compared and weighed; then,
    for the signatures not beyond doubt (``_beyond_doubt``), the wide rules' candidates too,
    and every signature decided on its candidates. A signature beyond doubt is so decided
    on the narrower rules' candidates alone (its runner-up candidates are theirs); any other
    as if every rule had been asked at once."""
    b = prepare(ix, sigs)
    narrow = tuple(r for r in RULES if not (CASCADE and r in WIDE_RULES))
    pairs = candidates(ix, b, narrow)
    lv = compare(ix, b, pairs.sig, pairs.voter)
    weighed = _weighed(ix, model, b, pairs, lv)
    wide = tuple(r for r in RULES if r not in narrow)
    if wide and b.n:
        prob = _probabilities(ix, model, b, pairs, lv, weighed)[0]
        doubt = ~_beyond_doubt(ix, b.cols["county"], pairs, lv, prob, config)
        if doubt.any():
            more = candidates(ix, b, wide, rows=doubt)
            have = (pairs.sig.astype(np.int64) << 32) | pairs.voter
            extra = (more.sig.astype(np.int64) << 32) | more.voter
            if len(have) and len(extra):
                at = np.minimum(np.searchsorted(have, extra), len(have) - 1)
                extra = extra[have[at] != extra]
            if len(extra):
                new = Pairs((extra >> 32).astype(np.int32), (extra & 0xFFFFFFFF).astype(np.int32),
                            pairs.crowded)
                lv_new = compare(ix, b, new.sig, new.voter)
                w_new = _weighed(ix, model, b, new, lv_new)
                keys = np.concatenate([have, extra])
                order = np.argsort(keys, kind="stable")
                keys = keys[order]
                pairs = Pairs((keys >> 32).astype(np.int32), (keys & 0xFFFFFFFF).astype(np.int32),
                              pairs.crowded)
                lv = fs.Levels.concat([lv, lv_new]).take(order)
                weighed = (np.concatenate([weighed[0], w_new[0]])[order],
                           {c: np.concatenate([weighed[1][c], w_new[1][c]])[order]
                            for c in weighed[1]},
                           np.concatenate([weighed[2], w_new[2]])[order])
    return _decided(ix, model, b, pairs, lv, config, weighed)


def _beyond_doubt(ix: VoterIndex, counties: I32, pairs: Pairs, lv: fs.Levels, prob: F64,
                  config: MatchConfig) -> B:
    """The signatures whose best candidate (the likeliest, the first of equals, as
    ``_decide`` takes it) is accepted (``_decide``: same county, the address agreeing) with
    probability at least ``SURE``, at the very address (so every voter of that address,
    found by the address rules, is among the candidates) and by a full first name, exact or
    a nickname (a signature giving only an initial, or a misspelt name, has rivals in its zip
    that only the wide rules find). Checked on the hostile profile (20k signatures), the
    default one (99k) and FEBRL 1-3: every one of them decided the same with every rule."""
    n = len(counties)
    out = np.zeros(n, dtype=bool)
    if not len(prob):
        return out
    present = _distinct(pairs.sig)
    starts = np.searchsorted(pairs.sig, present).astype(np.int64)
    group = np.repeat(np.arange(len(present)), np.diff(np.append(starts, len(prob))))
    top = np.maximum.reduceat(prob, starts)
    at = np.where(prob == top[group], np.arange(len(prob)), len(prob))
    best = np.minimum.reduceat(at, starts)
    first, v = lv.first[best], pairs.voter[best]
    out[present] = ((prob[best] >= max(SURE, config.accept_threshold / 100.0))
                    & (ix.cols["county"][v] == counties[present])
                    & (lv.residence[best] == fs.RES_EXACT)
                    & (first >= fs.FIRST_EXACT) & (first <= fs.FIRST_NICK))
    return out


def _weighed(ix: VoterIndex, model: fs.Model, b: SigBatch, pairs: Pairs, lv: fs.Levels
             ) -> tuple[F64, dict[str, F64], F64]:
    """Each pair's match weight, each comparison's part of it, and its prior."""
    w, parts = model.weights(lv)
    return w, parts, _pair_priors(ix, model, b, pairs)


def _probabilities(ix: VoterIndex, model: fs.Model, b: SigBatch, pairs: Pairs, lv: fs.Levels,
                   weighed: tuple[F64, dict[str, F64], F64]) -> tuple[F64, F64, F64]:
    """Per pair, the probability its voter signed; per signature, the odds of an unregistered
    signer and of the namesakes left uncompared."""
    w, parts, priors = weighed
    prob = np.zeros(len(w))
    unregistered, uncompared = np.ones(b.n), np.zeros(b.n)
    if len(w):
        present = _distinct(pairs.sig)
        starts = np.searchsorted(pairs.sig, present).astype(np.int64)
        crowded = _crowded_mass(ix, model, b, present, pairs.crowded[present])
        uncompared[present] = crowded
        t = model.household_share
        if t > 0:
            key, count = household_keys(ix, pairs.voter)
            unregistered[present] = 1.0 - t + t * fs.household_odds(starts, lv, parts, key,
                                                                     count)
        prob = fs.posterior(starts, w, priors, unregistered[present] - 1.0 + crowded)
    return prob, unregistered, uncompared


def _decided(ix: VoterIndex, model: fs.Model, b: SigBatch, pairs: Pairs, lv: fs.Levels,
             config: MatchConfig, weighed: tuple[F64, dict[str, F64], F64]) -> Decided:
    """The batch decided on these candidate pairs, their levels and weights."""
    w, parts, priors = weighed
    prob, unregistered, uncompared = _probabilities(ix, model, b, pairs, lv, weighed)
    decided = _decide(ix, b, pairs, lv, w, prob, config)
    decided.parts, decided.priors = parts, priors
    decided.counties = b.cols["county"]
    decided.unregistered, decided.uncompared = unregistered, uncompared
    return decided


def match_results(ix: VoterIndex, model: fs.Model, sigs: Sequence[SignatureInput],
                  config: MatchConfig) -> list[MatchResult]:
    """``match_batch(...).results()``: one call for a worker thread to make whole."""
    return match_batch(ix, model, sigs, config).results()


def household_keys(ix: VoterIndex, voters: I32) -> tuple[U64, I64]:
    """Per voter: the key of its household (surname, house, street, zip) and the number of
    households in its county (the roll's distinct such keys)."""
    c = ix.cols
    counts = ix.cache.get("household_counts")
    every = ix.cache.get("household_keys")
    if counts is None or every is None:
        # Every voter's key, made once (8 bytes a voter): a batch reads its pairs' keys.
        every = ix.cache.setdefault("household_keys", mix(c["last"], c["house"], c["street"],
                                                           c["zip"]))
        ok = (c["house"] >= 0) & (c["street"] >= 0) & (c["last"] >= 0)
        county = c["county"][ok].astype(np.int64)
        # a household counted once, in its county
        _, at = np.unique(mix(every[ok], county), return_index=True)
        counts = ix.cache.setdefault("household_counts", np.bincount(
            county[at], minlength=len(ix.vocabs["county"])).astype(np.int64))
    return every[voters], counts[c["county"][voters].astype(np.int64)]


def county_counts(ix: VoterIndex) -> I64:
    got = ix.cache.get("county_counts")
    if got is None:
        got = ix.cache.setdefault("county_counts", np.bincount(
            ix.cols["county"].astype(np.int64), minlength=len(ix.vocabs["county"])))
    return got  # type: ignore[no-any-return]


def _pair_priors(ix: VoterIndex, model: fs.Model, b: SigBatch, pairs: Pairs) -> F64:
    sc = b.cols["county"][pairs.sig]
    counts = county_counts(ix)
    known = (sc >= 0) & (sc < len(counts))
    nc = np.where(known, counts[np.where(known, sc, 0)], 0)
    same = ix.cols["county"][pairs.voter] == sc
    return model.pair_priors(same, nc)


def _crowded_mass(ix: VoterIndex, model: fs.Model, b: SigBatch, rows: I32, crowded: I32) -> F64:
    """Odds of the namesakes a crowded statewide name block left uncompared: each a voter of
    this very name (its frequencies in the roll) at another address, anywhere in the state."""
    out = np.zeros(len(crowded))
    if not crowded.any():
        return out
    t = model.tables()
    n = max(model.voters, 1)
    first, last = b.cols["first"][rows], b.cols["last"][rows]
    nf = np.where((first >= 0) & (first < len(ix.n_first)),
                  ix.n_first[np.clip(first, 0, max(len(ix.n_first) - 1, 0))], 1)
    nl = np.where((last >= 0) & (last < len(ix.n_last)),
                  ix.n_last[np.clip(last, 0, max(len(ix.n_last) - 1, 0))], 1)
    w_other = t["residence"][0][fs.RES_DIFF] - t["residence"][1][fs.RES_DIFF]
    w_first = t["first"][0][fs.FIRST_EXACT] - np.log2(np.maximum(nf, 1) / n)
    w_last = t["last"][0][fs.LAST_EXACT] - np.log2(np.maximum(nl, 1) / n)
    return np.asarray(crowded * np.exp2(model.prior + w_first + w_last + w_other),
                      dtype=np.float64)


def _decide(ix: VoterIndex, b: SigBatch, pairs: Pairs, lv: fs.Levels, w: F64, prob: F64,
            config: MatchConfig) -> Decided:
    n = b.n
    k = max(1, config.max_candidates)
    decision = np.full(n, DECISIONS.index(Decision.NO_MATCH), dtype=np.int8)
    reason = np.full(n, _R[Reason.NOT_REGISTERED], dtype=np.int8)
    voter = np.full(n, -1, dtype=np.int32)
    best_p = np.zeros(n)
    top = np.full((n, k), -1, dtype=np.int32)
    if len(w):
        # Per signature, pairs by probability (highest first): sort by (signature, -p).
        order = np.lexsort((-prob, pairs.sig))
        sig_sorted = pairs.sig[order]
        first_of = np.searchsorted(sig_sorted, np.arange(n), side="left")
        count = np.searchsorted(sig_sorted, np.arange(n), side="right") - first_of
        for j in range(k):
            ok = count > j
            top[ok, j] = order[first_of[ok] + j]
        has = count > 0
        best = top[has, 0]
        rows = np.nonzero(has)[0]
        pv = prob[best]
        best_p[rows] = pv
        bv = pairs.voter[best]
        same_county = ix.cols["county"][bv] == b.cols["county"][rows]
        res_best = lv.residence[best]
        # The street (and town) right with no house number on one side: nothing says
        # elsewhere.
        agrees = np.isin(res_best, fs.ADDRESS_AGREES) | (
            (res_best == fs.RES_STREET)
            & ((b.cols["house"][rows] < 0) | (ix.cols["house"][bv] < 0)))
        # No street name on one side or both ("15" in GWANDALAN 2770 for the roll's 15,
        # GWANDALAN 2770, or for 15 RULE ST there), but the house number the same and the
        # zip the same (or the town, a zip missing): nothing says elsewhere either.
        s_zip, v_zip = b.cols["zip"][rows], ix.cols["zip"][bv]
        s_city, v_city = b.cols["city"][rows], ix.cols["city"][bv]
        numbered = ((res_best == 0) & (b.cols["house"][rows] >= 0)
                    & (b.cols["house"][rows] == ix.cols["house"][bv])
                    & (((s_zip >= 0) & (s_zip == v_zip))
                       | ((s_city >= 0) & (s_city == v_city) & ((s_zip < 0) | (v_zip < 0)))))
        agrees |= numbered
        accept = pv >= config.accept_threshold / 100.0
        # The person is identified but the address can be neither confirmed nor refuted (a
        # line without a street name or house number that agrees): a person looks, rather
        # than calling it another address.
        unsure = accept & same_county & (res_best == 0) & ~numbered
        # Review when the voters at the signature's address in the section's county hold
        # the band's mass together: one of them signed, a person says which (a father and
        # son, SR and JR, both fit a signature without the suffix, each at half the mass).
        here = (np.isin(lv.residence, fs.ADDRESS_AGREES)
                & (ix.cols["county"][pairs.voter] == b.cols["county"][pairs.sig]))
        here_mass = np.bincount(pairs.sig[here], weights=prob[here], minlength=n)[rows]
        review = ((here_mass >= config.review_threshold / 100.0) & ~accept) | unsure
        # ... naming the likeliest of them (pairs in ``order`` are best first).
        here_order = order[here[order]]
        here_sigs, here_first = np.unique(pairs.sig[here_order], return_index=True)
        best_here = np.full(n, -1, dtype=np.int64)
        best_here[here_sigs] = here_order[here_first]
        bv = np.where(review & ~unsure, pairs.voter[np.maximum(best_here[rows], 0)], bv)
        status = ix.cols["status"][bv]
        reg = ix.cols["registered"][bv]
        signed, dl = b.signed_on[rows], b.deadline[rows]
        elig = np.select(
            [status == STATUS_CANCELLED, status == STATUS_INACTIVE,
             (signed > 0) & (reg > 0) & (signed < reg), (dl > 0) & (signed > dl)],
            [_R[Reason.VOTER_CANCELLED], _R[Reason.VOTER_INACTIVE],
             _R[Reason.SIGNED_BEFORE_REGISTRATION], _R[Reason.SIGNED_AFTER_DEADLINE]],
            _R[Reason.MATCHED])
        r = np.select(
            [accept & ~same_county, unsure, accept & ~agrees, accept, review],
            [_R[Reason.WRONG_COUNTY], _R[Reason.PENDING_REVIEW], _R[Reason.ADDRESS_MISMATCH],
             elig, _R[Reason.PENDING_REVIEW]], _R[Reason.NOT_REGISTERED])
        d = np.select([accept & same_county & agrees, review],
                      [DECISIONS.index(Decision.MATCH), DECISIONS.index(Decision.REVIEW)],
                      DECISIONS.index(Decision.NO_MATCH))
        reason[rows] = r
        decision[rows] = d
        named = accept | review
        voter[rows[named]] = bv[named]
    return Decided(decision, reason, voter, best_p, top, pairs, lv, w, prob, ix)


def status_of(ix: VoterIndex, voter: int) -> str:
    return STATUSES[int(ix.cols["status"][voter])]


# ----------------------------------------------------------------------------- learning

def voters_as_batch(ix: VoterIndex, rows: I32) -> SigBatch:
    """Voters of the roll posing as signatures (random pairs of voters, for ``estimate_u``)."""
    c = ix.cols
    cols = {k: c[k][rows] for k in ("first", "middle", "last", "suffix", "dob", "house",
                                     "street", "stype", "sdir", "unit", "city", "zip", "county")}
    n = len(rows)
    last_sounds = np.full((n, 4), -1, dtype=np.int32)
    ok = cols["last"] >= 0
    last_sounds[ok, 0] = ix.last_phon[cols["last"][ok]]
    last_sounds[ok, 1:] = ix.last_part_phon[cols["last"][ok]]
    first_sounds = np.full((n, 1 + ix.given_nick.shape[1]), -1, dtype=np.int32)
    ok = cols["first"] >= 0
    first_sounds[ok, 0] = ix.given_phon[cols["first"][ok]]
    zeros = np.zeros(n, dtype=np.int32)
    coders = {k: Coder(ix.vocabs[k]) for k in CODERS}
    house, street = cols["house"], cols["street"]
    lines = np.strings.add(np.strings.add(np.strings.add(
        np.where(house >= 0, ix.vocabs["house"].strs(np.maximum(house, 0)), ""),
        _long_dirs(ix, cols["sdir"].astype(np.int64))),
        np.where(street >= 0, ix.vocabs["street"].strs(np.maximum(street, 0)), "")),
        _long_types(ix, coders["stype"], cols["stype"].astype(np.int64)))
    return SigBatch(n=n, cols=cols, coders=coders, first_sounds=first_sounds,
                    last_sounds=last_sounds, f_init=np.zeros(n, np.int16),
                    l_init=np.zeros(n, np.int16), signed_on=zeros, deadline=zeros,
                    lines=lines)


def _level_counts(ix: VoterIndex, b: SigBatch, s: I32, v: I32) -> dict[str, F64]:
    counts = {c: np.zeros(len(fs.LEVELS[c])) for c in fs.COMPARISONS}
    step = 250_000
    for lo in range(0, len(s), step):
        lv = compare(ix, b, s[lo: lo + step], v[lo: lo + step])
        for c in fs.COMPARISONS:
            counts[c] += fs.level_counts(getattr(lv, c), c)
    return counts


def estimate_u(ix: VoterIndex, b: SigBatch, pairs: int = 1_000_000, seed: int = 20_170_725
               ) -> tuple[dict[str, list[float]], int]:
    """u per comparison level from ``pairs`` random (signature, voter) pairs: how often a
    signature agrees at each level with a voter picked at random (seeded, so the same
    signatures and roll give the same u). A random pair is, but for a chance of one in the
    roll's size, two different people. A field the signatures rarely fill (a birth date)
    takes its levels from as many random pairs of voters of the roll."""
    if ix.size < 2 or b.n < 1:
        raise ValueError("random pairs need voters and signatures")
    rng = np.random.default_rng(seed)
    pairs = min(pairs, b.n * ix.size)
    s = np.sort(rng.integers(0, b.n, size=pairs)).astype(np.int32)
    v = rng.integers(0, ix.size, size=pairs).astype(np.int32)
    counts = _level_counts(ix, b, s, v)
    fallback = None
    if any(counts[c][1:].sum() < 10_000 for c in fs.HAS_MISSING):
        a = rng.integers(0, ix.size, size=pairs).astype(np.int32)
        w = rng.integers(0, ix.size - 1, size=pairs).astype(np.int32)
        w[w >= a] += 1
        order = np.argsort(a, kind="stable")
        a, w = a[order], w[order]
        va = voters_as_batch(ix, a)
        fallback = _level_counts(ix, va, np.arange(pairs, dtype=np.int32), w)
    u = fs.u_from_counts(counts, fallback)
    agree, conflict = namesake_suffixes(ix)
    if agree + conflict > 0:
        # A suffix tells apart only people of one name (a father and son at one address,
        # JR and SR): its u is how two voters of one name who both give a suffix compare.
        # Two random people who give one agree about half the time (JR or SR), but most
        # namesakes who give one are a father and son, who never do.
        filled = 1.0 - u["suffix"][0]
        share = (agree + 1.0) / (agree + conflict + 2.0)
        u["suffix"] = [u["suffix"][0], filled * share, filled * (1.0 - share)]
    return u, pairs


def namesake_suffixes(ix: VoterIndex) -> tuple[int, int]:
    """Pairs of voters of one name (first and last) who both give a suffix: (how many
    agree, how many conflict)."""
    c = ix.cols
    ok = (c["suffix"] > 0) & (c["first"] >= 0) & (c["last"] >= 0)
    if not ok.any():
        return 0, 0
    name = (c["last"][ok].astype(np.int64) << 32) | c["first"][ok].astype(np.int64)
    _, per_name = np.unique(name, return_counts=True)
    _, per_name_suffix = np.unique(name * 8 + c["suffix"][ok].astype(np.int64),
                                   return_counts=True)
    pairs = int((per_name * (per_name - 1) // 2).sum())
    agree = int((per_name_suffix * (per_name_suffix - 1) // 2).sum())
    return agree, pairs - agree


def household_first_share(ix: VoterIndex) -> float:
    """P(two voters of one household share a first name): over every pair of voters with
    one surname at one address (house, street, zip), the share whose first names are the
    same (add-one smoothed; 0 when the roll has no such pairs)."""
    c = ix.cols
    ok = (c["house"] >= 0) & (c["street"] >= 0) & (c["last"] >= 0) & (c["first"] >= 0)
    if not ok.any():
        return 0.0
    hh = mix(c["house"][ok], c["street"][ok], c["zip"][ok], c["last"][ok])
    _, sizes = np.unique(hh, return_counts=True)
    pairs = float(np.sum(sizes.astype(np.float64) * (sizes - 1) / 2))
    if pairs < 1:
        return 0.0
    _, same = np.unique(mix(hh, c["first"][ok]), return_counts=True)
    same_pairs = float(np.sum(same.astype(np.float64) * (same - 1) / 2))
    return (same_pairs + 1.0) / (pairs + 2.0)


def train(ix: VoterIndex, sigs: Sequence[SignatureInput], u: dict[str, list[float]] | None = None,
          prior: fs.Model | None = None, u_pairs: int = 1_000_000) -> fs.Model:
    """A model for a roll version, from the roll and signatures received (unlabelled):
    u from random (signature, voter) pairs (``estimate_u``), then m and the share of
    registered signers by EM on the signatures' candidate pairs (``fs.train_em``)."""
    b = prepare(ix, sigs)
    if u is None:
        u, u_pairs = estimate_u(ix, b, u_pairs)
    pairs = candidates(ix, b)
    # With no candidate pair at all (none of these signers is on the roll, as far as the
    # blocking rules can see), EM has only its prior to go by (``fs.train_em``).
    lv = compare(ix, b, pairs.sig, pairs.voter)
    starts = np.searchsorted(pairs.sig, np.unique(pairs.sig)).astype(np.int64)
    model = fs.Model(m=fs.initial_m(), u=u, registered_share=0.5, voters=ix.size,
                     u_first_household=household_first_share(ix))
    sc = b.cols["county"][pairs.sig]
    counts = county_counts(ix)
    known = (sc >= 0) & (sc < len(counts))
    key, households = household_keys(ix, pairs.voter)
    em = fs.train_em(model, lv, starts, b.n, ix.cols["county"][pairs.voter] == sc,
                     np.where(known, counts[np.where(known, sc, 0)], 0), prior,
                     household=key, households=households)
    model.trained = {"signatures": b.n, "candidate_pairs": len(pairs.sig),
                     "u_pairs": u_pairs, "em_iterations": em.iterations,
                     "em_converged": em.converged,
                     "registered_share": round(model.registered_share, 6),
                     "household_share": round(model.household_share, 6),
                     "in_county_share": round(model.in_county_share, 6)}
    return model
