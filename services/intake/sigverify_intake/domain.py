"""Validation of a submitted batch: pure, no I/O.

A batch is a header (petition, county, column names) and raw rows, validated one row at a
time as they stream in (``BatchValidator``), so that intake keeps nothing per row but one bit
(the line numbers seen). Each row is either accepted as a signature (possibly INCOMPLETE:
readable but lacking the printed name or the residence address, which still counts in the
raw count) or rejected with its record number, line (when readable), field and reason. A
batch whose header cannot be read as signatures (an unknown, unnamed or repeated column, no
``line``, no ``street``, no name columns, too many columns) is refused whole.

Limits (generous for any real petition, small enough that one row can never stall the
pipeline): each field's length in characters (``FIELD_LIMITS``, so a row has at most
``MAX_ROW_CHARS``), ``MAX_COLUMNS`` in the header (a row has exactly the header's number of
fields), ``MAX_LINE`` for a line number and ``MAX_ROWS`` rows in one batch.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date

from nameparser import HumanName

from sigverify_common.csvtext import lines_spanned, looks_like_rows
from sigverify_common.errors import InvalidArgument
from sigverify_common.fields import check_text, shown
from sigverify_common.vocab import Counties, Source

NAME_COLUMNS = ("first_name", "middle_name", "last_name")
ADDRESS_COLUMNS = ("street", "unit", "city", "zip")
OPTIONAL_COLUMNS = ("signed_on", "circulator_id", "birth_date", "source", "name")
KNOWN_COLUMNS = frozenset(("line", *NAME_COLUMNS, *ADDRESS_COLUMNS, *OPTIONAL_COLUMNS))

#: The longest value each column may hold, in characters (after nothing: the raw value).
FIELD_LIMITS: dict[str, int] = {
    "line": 20, "first_name": 200, "middle_name": 200, "last_name": 200, "name": 400,
    "street": 300, "unit": 100, "city": 100, "zip": 20, "signed_on": 20, "birth_date": 20,
    "circulator_id": 100, "source": 20,
}
#: A whole row, in characters: the sum of the field limits.
MAX_ROW_CHARS = sum(FIELD_LIMITS.values())
#: Columns in a header (every known column once is 13).
MAX_COLUMNS = 32
#: The highest line number a batch may use (the repeated-line check keeps one bit per line:
#: 1.25 MB at most).
MAX_LINE = 10_000_000
#: Rows (accepted or rejected) in one batch; a larger file is split into several batches.
MAX_ROWS = 10_000_000
#: Header texts.
MAX_KEY_CHARS = 200
MAX_FILENAME_CHARS = 255
MAX_COUNTY_CHARS = 100
#: How much of a client's "unreadable" explanation a rejection repeats.
MAX_UNREADABLE_CHARS = 200

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    record: int
    field: str
    reason: str


@dataclass(frozen=True, slots=True)
class Signature:
    line: int
    first_name: str
    middle_name: str
    last_name: str
    street: str
    unit: str
    city: str
    zip: str
    signed_on: date | None
    birth_date: date | None
    circulator_id: str
    source: Source
    incomplete: bool


@dataclass(slots=True)
class Validated:
    """A whole batch validated at once (tests and small tools; intake streams instead)."""

    signatures: list[Signature] = field(default_factory=list)
    rejected: list[RowError] = field(default_factory=list)
    rows_received: int = 0

    @property
    def incomplete(self) -> int:
        return sum(1 for s in self.signatures if s.incomplete)


def known_county(counties: Counties, name: str, field: str = "county") -> str:
    """The canonical name of one of ``counties``; InvalidArgument naming any other."""
    text = check_text(name, field, MAX_COUNTY_CHARS)
    if not text:
        raise InvalidArgument(f"{field} is required")
    county = counties.resolve(text)
    if county is None:
        hint = counties.suggest(text)
        raise InvalidArgument(
            f"{field}: unknown county {shown(text)}, not one of the {len(counties)} "
            "configured counties" + (f" (did you mean {hint!r}?)" if hint else ""))
    return county


def check_columns(columns: Sequence[str]) -> list[str]:
    """Normalised column names; raises InvalidArgument when the batch cannot be read at all."""
    if len(columns) > MAX_COLUMNS:
        raise InvalidArgument(f"the header has {len(columns):,} columns; a batch has at most "
                              f"{MAX_COLUMNS} (known columns: {', '.join(sorted(KNOWN_COLUMNS))})")
    cols = [c.strip().lstrip("\ufeff").strip().lower() for c in columns]
    if not cols:
        raise InvalidArgument("the batch has no header row (columns)")
    seen: set[str] = set()
    for i, c in enumerate(cols, start=1):
        if not c:
            raise InvalidArgument(f"column {i} of the header has no name")
        if c not in KNOWN_COLUMNS:
            close = difflib.get_close_matches(c, sorted(KNOWN_COLUMNS), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InvalidArgument(
                f"unknown column {shown(c)} in the header{hint}; known columns: "
                f"{', '.join(sorted(KNOWN_COLUMNS))}")
        if c in seen:
            raise InvalidArgument(f"column {c!r} appears twice in the header")
        seen.add(c)
    missing = [c for c in ("line", "street") if c not in seen]
    if "name" not in seen and not {"first_name", "last_name"} <= seen:
        missing.append("first_name and last_name (or name)")
    if missing:
        raise InvalidArgument("the header lacks required column(s): " + ", ".join(missing))
    return cols


def parse_line(text: str) -> int | None:
    """A line number 1..MAX_LINE written in ASCII digits, else None."""
    t = text.strip()
    if not t or len(t) > FIELD_LIMITS["line"] or not (t.isascii() and t.isdigit()):
        return None
    n = int(t)
    return n if 0 < n <= MAX_LINE else None


def parse_date(text: str) -> date | None:
    """YYYY-MM-DD exactly, or empty; raises ValueError for anything else (``20170502``,
    ``2017-W20-2``, impossible dates)."""
    t = text.strip()
    if not t:
        return None
    if not _DATE.fullmatch(t):
        raise ValueError("not of the form YYYY-MM-DD")
    return date.fromisoformat(t)


class LineSet:
    """The line numbers seen in a batch: one bit each, grown as higher lines appear."""

    __slots__ = ("_bits",)

    def __init__(self) -> None:
        self._bits = bytearray()

    def add(self, line: int) -> bool:
        """Record ``line`` (1..MAX_LINE); False when it was already there."""
        i, mask = line >> 3, 1 << (line & 7)
        if i >= len(self._bits):
            grown = max(i + 1, min(2 * len(self._bits), (MAX_LINE >> 3) + 1))
            self._bits.extend(bytes(grown - len(self._bits)))
        if self._bits[i] & mask:
            return False
        self._bits[i] |= mask
        return True

    @property
    def nbytes(self) -> int:
        return len(self._bits)


def _split_name(full: str) -> tuple[str, str, str]:
    name = HumanName(full)
    last = " ".join(p for p in (name.last, name.suffix) if p)
    return name.first, name.middle, last


class BatchValidator:
    """Validates a batch's rows one at a time, keeping counts and the lines seen only."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = check_columns(columns)
        self._width = len(self.columns)
        self._line_at = self.columns.index("line")
        self._limits = [FIELD_LIMITS[c] for c in self.columns]
        self._lines = LineSet()
        self.rows = 0
        self.accepted = 0
        self.incomplete = 0
        self.rejected = 0

    def check(self, record: int, values: Sequence[str], unreadable: str = "") -> Signature | RowError:
        """One row: a signature, or the reason it is rejected (counted either way)."""
        self.rows += 1
        if self.rows > MAX_ROWS:
            raise InvalidArgument(f"the batch has more than {MAX_ROWS:,} rows: split the file "
                                  "into several batches")
        out = self._check(record, values, unreadable)
        if isinstance(out, RowError):
            self.rejected += 1
        else:
            self.accepted += 1
            self.incomplete += out.incomplete
        return out

    def _check(self, record: int, values: Sequence[str], unreadable: str) -> Signature | RowError:
        if unreadable:
            why = unreadable[:MAX_UNREADABLE_CHARS].replace("\x00", "\\x00")
            return RowError(0, record, "(row)", "unreadable: " + why)
        line = (parse_line(values[self._line_at]) if len(values) > self._line_at else None) or 0
        if len(values) != self._width:
            column, why = self._spanning(values)
            return RowError(line, record, column,
                            f"expected {self._width} fields, found {len(values):,}{why}")
        for name, value, limit in zip(self.columns, values, self._limits, strict=True):
            if len(value) > limit:
                return RowError(line, record, name,
                                f"{len(value):,} characters; at most {limit:,}"
                                + self._spanning([value], name)[1])
            if "\x00" in value:
                return RowError(line, record, name, "contains a NUL character (byte 0)")
            if rows := looks_like_rows(value, self._width):
                return RowError(line, record, name, (
                    f"runs over {lines_spanned(value):,} lines, {rows:,} of which read as "
                    "rows of the file: a quote opened in this field closed lines later, so "
                    "those rows are inside this one; close the quote where the field ends"))
        row = dict(zip(self.columns, (v.strip() for v in values), strict=True))
        line_text = row["line"]
        if not line_text:
            return RowError(0, record, "line", "missing")
        if not line:
            if line_text.isascii() and line_text.isdigit() and int(line_text) > MAX_LINE:
                return RowError(0, record, "line",
                                f"{shown(line_text)} is above the highest line number a batch "
                                f"may use ({MAX_LINE:,})")
            return RowError(0, record, "line", f"not a positive whole number: {shown(line_text)}")
        if not self._lines.add(line):
            return RowError(line, record, "line",
                            f"repeated: an earlier row of this batch has line {line}")
        dates: dict[str, date | None] = {}
        for name in ("signed_on", "birth_date"):
            text = row.get(name, "")
            if name == "signed_on" and name in row and not text:
                return RowError(line, record, name,
                                "missing: the date the signature was made (YYYY-MM-DD)")
            try:
                dates[name] = parse_date(text)
            except ValueError:
                return RowError(line, record, name,
                                f"not a valid date of the form YYYY-MM-DD: {shown(text, 20)}")
        source_text = row.get("source", "").lower() or Source.PAPER.value
        if source_text not in {s.value for s in Source}:
            return RowError(line, record, "source", "must be 'paper' or 'online'")
        if "name" in row and not (row.get("first_name") or row.get("last_name")):
            first, middle, last = _split_name(row["name"])
        else:
            first = row.get("first_name", "")
            middle, last = row.get("middle_name", ""), row.get("last_name", "")
        return Signature(
            line=line, first_name=first, middle_name=middle, last_name=last,
            street=row.get("street", ""), unit=row.get("unit", ""), city=row.get("city", ""),
            zip=row.get("zip", ""), signed_on=dates["signed_on"], birth_date=dates["birth_date"],
            circulator_id=row.get("circulator_id", ""), source=Source(source_text),
            incomplete=not (first or last) or not row.get("street", ""),
        )


    def _spanning(self, values: Sequence[str], name: str = "") -> tuple[str, str]:
        """Where and why a row has the wrong number of fields or a field too long, when one
        of its values runs over several lines of the file (a quote opened there and closed
        lines later, or never): that value's column and the explanation; ("(row)", "") when
        none does."""
        for i, value in enumerate(values):
            if (spanned := lines_spanned(value)) > 1:
                column = name or (self.columns[i] if i < self._width else "")
                which = repr(column) if column else f"field {i + 1}"
                return column or "(row)", (
                    f": {which} runs over {spanned:,} lines of the file (a quote opened there "
                    "closed lines later or never, so the lines after it went into this row)")
        return "(row)", ""


def validate(columns: Sequence[str], rows: Iterable[tuple[int, Sequence[str]]]) -> Validated:
    """Validate ``rows`` given as (record number, values in column order), all at once."""
    v = BatchValidator(columns)
    out = Validated()
    for record, values in rows:
        checked = v.check(record, values)
        if isinstance(checked, RowError):
            out.rejected.append(checked)
        else:
            out.signatures.append(checked)
    out.rows_received = v.rows
    return out


class ContentDigest:
    """SHA-256 over a batch's content, fed row by row, so that the same file submitted again
    is recognised (the same bytes as ``content_digest``)."""

    __slots__ = ("_h",)

    def __init__(self, petition_id: str, county: str, columns: Sequence[str]) -> None:
        self._h = hashlib.sha256()
        for part in (petition_id, county.strip().upper(), *columns):
            self._h.update(part.encode())
            self._h.update(b"\x1f")

    def add(self, values: Sequence[str], unreadable: str = "") -> None:
        if values:
            self._h.update(("\x1e" + "\x1f".join(values) + "\x1f").encode())
        else:
            self._h.update(b"\x1e")
        if unreadable:
            self._h.update(b"\x1d" + unreadable.encode() + b"\x1f")

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def content_digest(petition_id: str, county: str, columns: Sequence[str],
                   rows: Iterable[tuple[int, Sequence[str]]]) -> str:
    """SHA-256 over the batch's content (record numbers aside)."""
    d = ContentDigest(petition_id, county, columns)
    for _, values in rows:
        d.add(values)
    return d.hexdigest()
