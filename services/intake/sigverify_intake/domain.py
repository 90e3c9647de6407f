"""Validation of a submitted batch: pure, no I/O.

A batch is a header (petition, county, column names) and raw rows. Each row is either
accepted as a signature (possibly INCOMPLETE: readable but lacking the printed name or
the residence address, which still counts in the raw count) or rejected with its line,
field and reason. A batch whose columns cannot carry a signature at all is refused whole.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

from nameparser import HumanName

from sigverify_common.errors import InvalidArgument
from sigverify_common.vocab import Source

NAME_COLUMNS = ("first_name", "middle_name", "last_name")
ADDRESS_COLUMNS = ("street", "unit", "city", "zip")
OPTIONAL_COLUMNS = ("signed_on", "circulator_id", "birth_date", "source", "name")
KNOWN_COLUMNS = frozenset(("line", *NAME_COLUMNS, *ADDRESS_COLUMNS, *OPTIONAL_COLUMNS))


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
    signatures: list[Signature] = field(default_factory=list)
    rejected: list[RowError] = field(default_factory=list)
    rows_received: int = 0

    @property
    def incomplete(self) -> int:
        return sum(1 for s in self.signatures if s.incomplete)


def check_columns(columns: Sequence[str]) -> list[str]:
    """Normalised column names; raises InvalidArgument when the batch cannot be read at all."""
    cols = [c.strip().lower().lstrip("\ufeff") for c in columns]
    if not cols:
        raise InvalidArgument("the batch has no header row (columns)")
    seen: set[str] = set()
    for c in cols:
        if c in seen:
            raise InvalidArgument(f"column {c!r} appears twice in the header")
        seen.add(c)
    missing = [c for c in ("line", "street") if c not in seen]
    if "name" not in seen and not {"first_name", "last_name"} <= seen:
        missing.append("first_name and last_name (or name)")
    if missing:
        raise InvalidArgument("the header lacks required column(s): " + ", ".join(missing))
    return cols


def parse_date(text: str) -> date | None:
    """ISO date or empty; raises ValueError for anything else (including impossible dates)."""
    t = text.strip()
    if not t:
        return None
    return date.fromisoformat(t)


def _split_name(full: str) -> tuple[str, str, str]:
    name = HumanName(full)
    last = " ".join(p for p in (name.last, name.suffix) if p)
    return name.first, name.middle, last


def validate(columns: Sequence[str], rows: Sequence[tuple[int, Sequence[str]]]) -> Validated:
    """Validate ``rows`` given as (record number, values in column order)."""
    cols = check_columns(columns)
    out = Validated(rows_received=len(rows))
    first_record_of_line: dict[int, int] = {}
    width = len(cols)
    for record, values in rows:
        line_text = values[cols.index("line")].strip() if len(values) > cols.index("line") else ""
        line = int(line_text) if line_text.isdigit() else 0
        if len(values) != width:
            out.rejected.append(RowError(line, record, "(row)",
                                         f"expected {width} fields, found {len(values)}"))
            continue
        row = dict(zip(cols, (v.strip() for v in values), strict=True))
        if not line_text:
            out.rejected.append(RowError(0, record, "line", "missing"))
            continue
        if not line_text.isdigit() or line <= 0:
            out.rejected.append(RowError(0, record, "line", f"not a positive whole number: {line_text!r}"))
            continue
        if line in first_record_of_line:
            out.rejected.append(RowError(line, record, "line",
                                         f"repeated (first used by record {first_record_of_line[line]})"))
            continue
        first_record_of_line[line] = record
        error = None
        dates: dict[str, date | None] = {}
        for name in ("signed_on", "birth_date"):
            try:
                dates[name] = parse_date(row.get(name, ""))
            except ValueError:
                error = RowError(line, record, name, "not a valid ISO date (YYYY-MM-DD)")
                break
        source_text = row.get("source", "").lower() or Source.PAPER.value
        if error is None and source_text not in {s.value for s in Source}:
            error = RowError(line, record, "source", "must be 'paper' or 'online'")
        if error is not None:
            out.rejected.append(error)
            continue
        if "name" in row and not (row.get("first_name") or row.get("last_name")):
            first, middle, last = _split_name(row["name"])
        else:
            first = row.get("first_name", "")
            middle, last = row.get("middle_name", ""), row.get("last_name", "")
        incomplete = not (first or last) or not row.get("street", "")
        out.signatures.append(Signature(
            line=line, first_name=first, middle_name=middle, last_name=last,
            street=row.get("street", ""), unit=row.get("unit", ""), city=row.get("city", ""),
            zip=row.get("zip", ""), signed_on=dates["signed_on"], birth_date=dates["birth_date"],
            circulator_id=row.get("circulator_id", ""), source=Source(source_text),
            incomplete=incomplete,
        ))
    return out


def content_digest(petition_id: str, county: str, columns: Sequence[str],
                   rows: Sequence[tuple[int, Sequence[str]]]) -> str:
    """SHA-256 over the batch's content, so the same file submitted again is recognised."""
    h = hashlib.sha256()
    for part in (petition_id, county.strip().upper(), *columns):
        h.update(part.encode())
        h.update(b"\x1f")
    for _, values in rows:
        h.update(b"\x1e")
        for v in values:
            h.update(v.encode())
            h.update(b"\x1f")
    return h.hexdigest()
