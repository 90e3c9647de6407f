"""Loading a voter roll CSV into ``matching.voters`` (PostgreSQL COPY) as a new version.

The admin's ``sigverify roll load`` calls ``load_roll``; the matching service notices the
new active version and rebuilds its index. Rows that cannot be read are reported with
their line and field and skipped; the rest load.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import asyncpg

from sigverify_common import audit
from sigverify_common.errors import InvalidArgument
from sigverify_common.vocab import canonical_county

ROLL_COLUMNS = (
    "voter_id", "first_name", "middle_name", "last_name", "suffix", "birth_date", "street",
    "unit", "city", "zip", "county", "status", "registered_on",
)
STATUSES = frozenset({"ACTIVE", "INACTIVE", "CANCELLED"})


@dataclass
class RollLoad:
    version: int = 0
    rows: int = 0
    errors: list[tuple[int, str, str]] = field(default_factory=list)  # (line, field, reason)


def _date(text: str) -> date | None:
    return date.fromisoformat(text) if text else None


def read_roll(path: Path, errors: list[tuple[int, str, str]]) -> Iterator[tuple[object, ...]]:
    """Yield COPY records (without the version column); append unreadable rows to ``errors``."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [h.strip().lower() for h in next(reader, [])]
        missing = [c for c in ROLL_COLUMNS if c not in header]
        if missing:
            raise InvalidArgument(f"{path.name}: roll header lacks column(s): {', '.join(missing)}")
        idx = [header.index(c) for c in ROLL_COLUMNS]
        seen: set[str] = set()
        for values in reader:
            line = reader.line_num
            if len(values) != len(header):
                errors.append((line, "(row)", f"expected {len(header)} fields, found {len(values)}"))
                continue
            v = [values[i].strip() for i in idx]
            rec = dict(zip(ROLL_COLUMNS, v, strict=True))
            if not rec["voter_id"]:
                errors.append((line, "voter_id", "missing"))
                continue
            if rec["voter_id"] in seen:
                errors.append((line, "voter_id", "repeated"))
                continue
            status = rec["status"].upper()
            if status not in STATUSES:
                errors.append((line, "status", "must be ACTIVE, INACTIVE or CANCELLED"))
                continue
            try:
                birth = _date(rec["birth_date"])
            except ValueError:
                errors.append((line, "birth_date", "not a valid ISO date"))
                continue
            try:
                registered = _date(rec["registered_on"])
            except ValueError:
                errors.append((line, "registered_on", "not a valid ISO date"))
                continue
            seen.add(rec["voter_id"])
            yield (rec["voter_id"], rec["first_name"], rec["middle_name"], rec["last_name"],
                   rec["suffix"], birth, rec["street"], rec["unit"], rec["city"], rec["zip"],
                   canonical_county(rec["county"]), status, registered)


async def load_roll(pool: asyncpg.Pool, path: Path,
                    progress: Callable[[int], None] | None = None,
                    actor: str = "cli:roll-load") -> RollLoad:
    """Load ``path`` as a new roll version and make it the active one.

    Rows are read and normalised in Python (dates parsed, status upper-cased, county
    spelled one way), streamed with COPY into an unindexed temporary staging table, then
    moved into ``matching.voters`` in one INSERT ... SELECT under the new version. The
    previous version stays active, and matching keeps using it, until the switch at the end.
    """
    result = RollLoad()
    async with pool.acquire() as conn:
        result.version = await conn.fetchval(
            "INSERT INTO matching.roll_versions (state, source) VALUES ('loading', $1) "
            "RETURNING version", path.name)
        try:
            await conn.execute(
                "CREATE TEMPORARY TABLE roll_staging (LIKE matching.voters) ON COMMIT PRESERVE ROWS")
            chunk: list[tuple[object, ...]] = []

            async def flush() -> None:
                await conn.copy_records_to_table(
                    "roll_staging", columns=("version", *ROLL_COLUMNS), records=chunk)
                result.rows += len(chunk)
                if progress:
                    progress(result.rows)
                chunk.clear()

            for rec in read_roll(path, result.errors):
                chunk.append((result.version, *rec))
                if len(chunk) >= 50_000:
                    await flush()
            if chunk:
                await flush()
            async with conn.transaction():
                await conn.execute("INSERT INTO matching.voters SELECT * FROM roll_staging")
                await conn.execute(
                    "UPDATE matching.roll_versions SET state = 'retired' WHERE state = 'active'")
                await conn.execute(
                    "UPDATE matching.roll_versions SET state = 'active', rows = $2, rejected = $3, "
                    "loaded_at = now() WHERE version = $1",
                    result.version, result.rows, len(result.errors))
                await audit.record(conn, actor, "roll.loaded", f"roll-version-{result.version}",
                                   {"source": path.name, "voters": result.rows,
                                    "rejected": len(result.errors)})
            # Older versions' rows are no longer needed once the new one is active.
            await conn.execute(
                "DELETE FROM matching.voters WHERE version IN "
                "(SELECT version FROM matching.roll_versions WHERE state = 'retired')")
        except BaseException:
            await conn.execute("DELETE FROM matching.roll_versions WHERE version = $1", result.version)
            raise
        finally:
            await conn.execute("DROP TABLE IF EXISTS roll_staging")
    return result


async def plain_copy(pool: asyncpg.Pool, path: Path) -> int:
    """COPY the file as it is into a scratch table (the benchmark's reference); returns rows."""
    async with pool.acquire() as conn:
        await conn.execute(
            "CREATE TEMPORARY TABLE roll_plain (" + ", ".join(f"{c} text" for c in ROLL_COLUMNS)
            + ")")
        try:
            with path.open("rb") as fh:
                status = await conn.copy_to_table("roll_plain", source=fh, format="csv", header=True)
            return int(status.split()[-1])
        finally:
            await conn.execute("DROP TABLE IF EXISTS roll_plain")
