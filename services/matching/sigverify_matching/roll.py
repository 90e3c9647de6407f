"""Loading a voter roll CSV into ``matching.voters`` (PostgreSQL COPY) as a new version.

The admin's ``sigverify roll load`` calls ``load_roll``; the matching service notices the
new active version and rebuilds its index. Rows that cannot be read are reported with
their line and field and skipped; the rest load.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import asyncpg

from sigverify_common import audit
from sigverify_common.errors import InvalidArgument
from sigverify_common.textfile import open_text
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
    """Yield COPY records (without the version column); append unreadable rows to ``errors``.

    The file's encoding is detected (UTF-8 with or without BOM, cp1252, latin-1): a roll
    exported from a spreadsheet loads as it is."""
    with open_text(path) as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip().lower() for h in next(reader, [])]
        except csv.Error as exc:
            raise InvalidArgument(f"{path.name}: unreadable header: {exc}") from None
        missing = [c for c in ROLL_COLUMNS if c not in header]
        if missing:
            raise InvalidArgument(f"{path.name}: roll header lacks column(s): {', '.join(missing)}")
        width = len(header)
        (i_id, i_first, i_middle, i_last, i_suffix, i_birth, i_street, i_unit, i_city, i_zip,
         i_county, i_status, i_registered) = (header.index(c) for c in ROLL_COLUMNS)
        seen: set[str] = set()
        counties: dict[str, str] = {}  # as written -> canonical (a roll has few spellings)
        dates: dict[str, date | None] = {"": None}
        while True:
            try:
                values = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:  # broken quoting, a field over the csv module's limit
                errors.append((reader.line_num, "(row)", f"unreadable: {exc}"))
                continue
            line = reader.line_num
            if len(values) != width:
                errors.append((line, "(row)", f"expected {width} fields, found {len(values)}"))
                continue
            if "\x00" in "".join(values):
                errors.append((line, "(row)", "contains a NUL character (byte 0)"))
                continue
            voter_id = values[i_id].strip()
            if not voter_id:
                errors.append((line, "voter_id", "missing"))
                continue
            if voter_id in seen:
                errors.append((line, "voter_id", "repeated"))
                continue
            status = values[i_status].strip().upper()
            if status not in STATUSES:
                errors.append((line, "status", "must be ACTIVE, INACTIVE or CANCELLED"))
                continue
            birth_text, registered_text = values[i_birth].strip(), values[i_registered].strip()
            try:
                birth = dates[birth_text] if birth_text in dates else _date(birth_text)
            except ValueError:
                errors.append((line, "birth_date", "not a valid ISO date"))
                continue
            try:
                registered = (dates[registered_text] if registered_text in dates
                              else _date(registered_text))
            except ValueError:
                errors.append((line, "registered_on", "not a valid ISO date"))
                continue
            if len(dates) < 100_000:
                dates[birth_text], dates[registered_text] = birth, registered
            county_text = values[i_county]
            county = counties.get(county_text)
            if county is None:
                county = counties[county_text] = canonical_county(county_text)
            seen.add(voter_id)
            yield (voter_id, values[i_first].strip(), values[i_middle].strip(),
                   values[i_last].strip(), values[i_suffix].strip(), birth,
                   values[i_street].strip(), values[i_unit].strip(), values[i_city].strip(),
                   values[i_zip].strip(), county, status, registered)


#: Rows per COPY: the file is read in a worker thread one chunk ahead of the COPY, so that
#: Python's parsing and the server's ingest overlap.
CHUNK = 20_000


async def load_roll(pool: asyncpg.Pool, path: Path,
                    progress: Callable[[int], None] | None = None,
                    actor: str = "cli:roll-load") -> RollLoad:
    """Load ``path`` as a new roll version and make it the active one.

    Rows are read and normalised in a worker thread (dates parsed, status upper-cased,
    county spelled one way) and COPYed in chunks straight into ``matching.voters`` under the
    new version, whose state stays 'loading': matching reads only the active version, so it
    keeps using the previous one until the switch at the end, in one transaction with the
    audit entry. A failed load's rows are removed; a retired version's rows afterwards.
    """
    result = RollLoad()
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[list[tuple[object, ...]] | Exception | None] = asyncio.Queue(maxsize=2)
    cancelled = threading.Event()

    def produce() -> None:
        def put(item: list[tuple[object, ...]] | Exception | None) -> None:
            asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

        chunk: list[tuple[object, ...]] = []
        try:
            for rec in read_roll(path, result.errors):
                if cancelled.is_set():
                    return
                chunk.append((version, *rec))
                if len(chunk) >= CHUNK:
                    put(chunk)
                    chunk = []
            put(chunk)
            put(None)
        except Exception as exc:  # noqa: BLE001 - handed to the loader, which raises it
            put(exc)

    async with pool.acquire() as conn:
        version = result.version = await conn.fetchval(
            "INSERT INTO matching.roll_versions (state, source) VALUES ('loading', $1) "
            "RETURNING version", path.name)
        reader = loop.run_in_executor(None, produce)
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                if item:
                    await conn.copy_records_to_table(
                        "voters", schema_name="matching", columns=("version", *ROLL_COLUMNS),
                        records=item)
                    result.rows += len(item)
                    if progress:
                        progress(result.rows)
            await reader
            async with conn.transaction():
                await conn.execute(
                    "UPDATE matching.roll_versions SET state = 'retired' WHERE state = 'active'")
                await conn.execute(
                    "UPDATE matching.roll_versions SET state = 'active', rows = $2, rejected = $3, "
                    "loaded_at = now() WHERE version = $1",
                    version, result.rows, len(result.errors))
                await audit.record(conn, actor, "roll.loaded", f"roll-version-{version}",
                                   {"source": path.name, "voters": result.rows,
                                    "rejected": len(result.errors)})
        except BaseException:
            cancelled.set()
            while not reader.done():  # let the reader see the flag (it may wait on a full queue)
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                await asyncio.sleep(0.01)
            await conn.execute("DELETE FROM matching.voters WHERE version = $1", version)
            await conn.execute("DELETE FROM matching.roll_versions WHERE version = $1", version)
            raise
        # Older versions' rows are no longer needed once the new one is active.
        await conn.execute(
            "DELETE FROM matching.voters WHERE version IN "
            "(SELECT version FROM matching.roll_versions WHERE state = 'retired')")
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
