"""Loading a voter roll CSV into ``matching.voters`` (PostgreSQL COPY) as a new version.

``sigverify roll load`` streams the file to matching's ``LoadRoll`` RPC, which calls
``load_roll_text``: rows are read and validated in a worker thread and COPYed in chunks
under the new version while it is 'loading'. The header must name each of ``ROLL_COLUMNS``
once and nothing else; a row is rejected (by its line and field) when it cannot be read, has
no voter id or repeats one, has no name, names a county that is not one of the deployment's
(California's 58 unless ``COUNTIES`` lists others, as for intake), has a status other than
ACTIVE, INACTIVE or CANCELLED, or a date that is not YYYY-MM-DD, or a birth date after the
day of the load. A file whose rejected rows exceed the limit
(``MaxRejected``, default 1 % of its rows), or that has no voters, is refused: the version is
discarded and nothing else changes. An accepted version is activated as
``sigverify_matching.versions`` describes (once every matcher replica holds its index).

``load_roll`` is the same load straight from a file with a database pool, activated at once
without waiting for the replicas (they build the index when they next need it): the fast
path of the test fixtures and the benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import io
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Protocol, TextIO

import asyncpg

from sigverify_common.csvtext import CsvRecords, Record
from sigverify_common.db import Conn
from sigverify_common.errors import FailedPrecondition, InvalidArgument
from sigverify_common.fields import shown
from sigverify_common.textfile import detect_encoding
from sigverify_common.vocab import CALIFORNIA_COUNTIES, Counties
from sigverify_matching import versions

log = logging.getLogger(__name__)

ROLL_COLUMNS = (
    "voter_id", "first_name", "middle_name", "last_name", "suffix", "birth_date", "street",
    "unit", "city", "zip", "county", "status", "registered_on",
)
STATUSES = frozenset({"ACTIVE", "INACTIVE", "CANCELLED"})
#: The counties a roll may name unless told otherwise.
CALIFORNIA = Counties(CALIFORNIA_COUNTIES)


#: (line, field, reason) of a row that cannot be read; never the row's content.
Rejection = tuple[int, str, str]
#: How many rejections a load keeps to report (all are counted).
KEEP_REJECTIONS = 1000
#: How many a refusal's message names.
NAMED_REJECTIONS = 10


class _Sink(Protocol):
    def append(self, item: Rejection, /) -> None: ...


class Rejections:
    """Rejected rows: how many, and the first ``keep`` of them."""

    def __init__(self, keep: int = KEEP_REJECTIONS) -> None:
        self.count = 0
        self.first: list[Rejection] = []
        self._keep = keep

    def append(self, item: Rejection) -> None:
        self.count += 1
        if len(self.first) < self._keep:
            self.first.append(item)


@dataclass(frozen=True, slots=True)
class MaxRejected:
    """How many rejected rows a roll file may have and still load: a count of rows, or a
    percentage of the file's rows (``--max-rejected 100`` or ``1%``)."""

    count: int | None = None
    percent: Decimal | None = None

    @classmethod
    def parse(cls, text: str) -> MaxRejected:
        t = text.strip().replace(" ", "")
        if not t:
            return DEFAULT_MAX_REJECTED
        try:
            if t.endswith("%"):
                p = Decimal(t[:-1])
                if p.is_finite() and 0 <= p <= 100:
                    return cls(percent=p)
            elif t.isdigit():
                return cls(count=int(t))
        except InvalidOperation:
            pass
        raise InvalidArgument(f"max_rejected {text!r}: give a number of rows (100) or a "
                              "percentage of the file's rows (1%)")

    def allows(self, rejected: int, total: int) -> bool:
        if self.count is not None:
            return rejected <= self.count
        assert self.percent is not None
        return rejected * 100 <= self.percent * total

    def __str__(self) -> str:
        if self.count is not None:
            return f"{self.count:,} row{'s' if self.count != 1 else ''}"
        return f"{self.percent}%"


DEFAULT_MAX_REJECTED = MaxRejected(percent=Decimal(1))


@dataclass
class RollLoad:
    version: int = 0
    rows: int = 0
    #: The first rejected rows (line, field, reason); ``rejected`` counts them all.
    errors: list[Rejection] = field(default_factory=list)
    rejected: int = 0
    source: str = ""
    #: After activation: the version it replaced (0: none).
    previous: int = 0


class RollRefused(FailedPrecondition):
    """The file is not loaded: too many rows rejected, or no voters."""


def refusal(load: RollLoad, limit: MaxRejected) -> str | None:
    """Why a file read as ``load`` must not become a roll version, or None."""
    total = load.rows + load.rejected
    if load.rejected and not limit.allows(load.rejected, total):
        named = "; ".join(f"line {line}: {fld}: {why}"
                          for line, fld, why in load.errors[:NAMED_REJECTIONS])
        more = (f" (the first {NAMED_REJECTIONS} of {load.rejected:,})"
                if load.rejected > NAMED_REJECTIONS else "")
        return (f"roll file {load.source} refused: {load.rejected:,} of {total:,} rows rejected, "
                f"more than the {limit} allowed (max_rejected): {named}{more}")
    if load.rows == 0:
        return f"roll file {load.source} refused: it has no voters ({total:,} rows read)"
    return None


def _date(text: str) -> date | None:
    return date.fromisoformat(text) if text else None


def check_header(first: list[str], name: str, line: int = 1) -> list[str]:
    """The roll header's column names (stripped, lower case); InvalidArgument naming what is
    wrong: no header at all, a missing, repeated, unnamed or unknown column."""
    header = [h.strip().lstrip("\ufeff").strip().lower() for h in first]
    if not any(header) or not set(header) & set(ROLL_COLUMNS):
        raise InvalidArgument(
            f"{name}: the file has no header row: line {line} names none of the roll's "
            f"columns ({', '.join(ROLL_COLUMNS)}); the first line must name them")
    missing = [c for c in ROLL_COLUMNS if c not in header]
    if missing:
        raise InvalidArgument(f"{name}: roll header lacks column(s): {', '.join(missing)}")
    seen: set[str] = set()
    for i, c in enumerate(header, start=1):
        if not c:
            raise InvalidArgument(f"{name}: column {i} of the roll header has no name")
        if c in seen:
            raise InvalidArgument(f"{name}: column {c!r} appears twice in the roll header")
        if c not in ROLL_COLUMNS:
            close = difflib.get_close_matches(c, ROLL_COLUMNS, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InvalidArgument(
                f"{name}: unknown column {shown(c)} in the roll header{hint}; a roll has "
                f"exactly these columns: {', '.join(ROLL_COLUMNS)}")
        seen.add(c)
    return header


def read_roll_text(fh: TextIO, name: str, errors: _Sink, *, counties: Counties = CALIFORNIA,
                   today: date | None = None) -> Iterator[tuple[object, ...]]:
    """Yield COPY records (without the version column) from CSV text; append unreadable
    rows to ``errors``. A file that cannot be read as CSV text at all (no header, an
    unreadable header): InvalidArgument. ``today`` (default: the date in UTC, a day ahead of
    California's in its evening) is the load's date: no one is born after it.

    The records are read by ``CsvRecords``, so a quote opened in one row and closed lines
    later (or never) does not lose the rows it absorbed without a word: the record is
    rejected naming the lines it took, and each absorbed line counts as a rejected row (a
    file that loses many voters so is refused by ``--max-rejected``). So does each further
    line of any rejected record that ran over several lines (one that reads as a row, its
    quote closed on the next line by the quote of another row's field, may be rejected for
    a value: the row it took is not loaded either)."""
    records = CsvRecords(fh, name)
    first = records.header()
    header = check_header(first, name, records.lines)
    yield from _records(records, header, errors, counties, today or datetime.now(UTC).date())


def _records(records: CsvRecords, header: list[str], errors: _Sink,
             known: Counties, today: date) -> Iterator[tuple[object, ...]]:
    width = len(header)
    (i_id, i_first, i_middle, i_last, i_suffix, i_birth, i_street, i_unit, i_city, i_zip,
     i_county, i_status, i_registered) = (header.index(c) for c in ROLL_COLUMNS)
    seen: set[str] = set()
    # As written -> canonical, or why not (a roll has few spellings).
    counties: dict[str, tuple[str, str]] = {}
    dates: dict[str, date | None] = {"": None}
    for rec in records:
        values = rec.values
        if rec.problem:
            _reject(errors, rec, "(row)", f"unreadable: {rec.problem}", "unreadable")
            continue
        if len(values) != width:
            _reject(errors, rec, "(row)", f"expected {width} fields, found {len(values)}")
            continue
        if not "".join(values).isascii() and (bad := _not_utf8(values)) is not None:
            _reject(errors, rec, header[bad], "not UTF-8 text")
            continue
        if "\x00" in "".join(values):
            _reject(errors, rec, "(row)", "contains a NUL character (byte 0)")
            continue
        voter_id = values[i_id].strip()
        if not voter_id:
            _reject(errors, rec, "voter_id", "missing")
            continue
        if voter_id in seen:
            _reject(errors, rec, "voter_id", "repeated")
            continue
        if not (values[i_first].strip() or values[i_middle].strip() or values[i_last].strip()):
            _reject(errors, rec, "last_name", "missing: the row has no name (first_name, "
                                             "middle_name and last_name are all empty)")
            continue
        status = values[i_status].strip().upper()
        if status not in STATUSES:
            _reject(errors, rec, "status", "must be ACTIVE, INACTIVE or CANCELLED")
            continue
        birth_text, registered_text = values[i_birth].strip(), values[i_registered].strip()
        try:
            birth = dates[birth_text] if birth_text in dates else _date(birth_text)
        except ValueError:
            _reject(errors, rec, "birth_date", "not a valid ISO date (YYYY-MM-DD)")
            continue
        try:
            registered = (dates[registered_text] if registered_text in dates
                          else _date(registered_text))
        except ValueError:
            _reject(errors, rec, "registered_on", "not a valid ISO date (YYYY-MM-DD)")
            continue
        if len(dates) < 100_000:
            dates[birth_text], dates[registered_text] = birth, registered
        if birth is not None and birth > today:
            _reject(errors, rec, "birth_date", f"in the future (after the load's date, {today})")
            continue
        county_text = values[i_county]
        found = counties.get(county_text)
        if found is None:
            found = counties[county_text] = _county(known, county_text)
        county, why = found
        if why:
            _reject(errors, rec, "county", why)
            continue
        seen.add(voter_id)
        yield (voter_id, values[i_first].strip(), values[i_middle].strip(),
               values[i_last].strip(), values[i_suffix].strip(), birth,
               values[i_street].strip(), values[i_unit].strip(), values[i_city].strip(),
               values[i_zip].strip(), county, status, registered)


def _reject(errors: _Sink, rec: Record, fld: str, why: str, state: str = "rejected") -> None:
    """Reject the record ``rec``, and each further line of the file it took (a quote opened
    in it may have closed lines later: the rows on those lines are not loaded either)."""
    line = rec.first_line
    errors.append((line, fld, why))
    for absorbed in range(line + 1, rec.last_line + 1):
        errors.append((absorbed, "(row)", f"not read: taken into the record of line {line:,}, "
                                          f"which is {state}"))


def _county(known: Counties, text: str) -> tuple[str, str]:
    """(canonical name, "") for one of ``known``; ("", why not) for any other."""
    if not text.strip():
        return "", "missing"
    county = known.resolve(text)
    if county is not None:
        return county, ""
    hint = known.suggest(text)
    return "", (f"unknown county {shown(text.strip())}, not one of the {len(known)} counties"
                + (f" (did you mean {hint!r}?)" if hint else ""))


def _not_utf8(values: list[str]) -> int | None:
    """The index of the first value holding bytes that are not UTF-8 (read as lone
    surrogates: the text is decoded with errors="surrogateescape"), else None."""
    for i, v in enumerate(values):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return i
    return None


def open_roll(path: Path) -> TextIO:
    """A roll file as ``read_roll_text`` wants it. Its encoding is detected (UTF-8 with or
    without BOM, cp1252, latin-1: a roll exported from a spreadsheet loads as it is); in a
    UTF-8 file, a row with bytes that are not UTF-8 is rejected by its line and field."""
    encoding = detect_encoding(path)
    if encoding.startswith("utf-8"):
        return path.open(newline="", encoding="utf-8-sig", errors="surrogateescape")
    return path.open(newline="", encoding=encoding)


def read_roll(path: Path, errors: _Sink) -> Iterator[tuple[object, ...]]:
    with open_roll(path) as fh:
        yield from read_roll_text(fh, path.name, errors)


class ChunkStream(io.RawIOBase):
    """A readable byte stream over chunks handed over one by one (``get`` blocks for the
    next, None at the end): the file a client uploads, read by the loader's worker thread."""

    def __init__(self, get: Callable[[], bytes | None]) -> None:
        self._get = get
        self._buf = b""
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        while not self._buf and not self._eof:
            chunk = self._get()
            if chunk is None:
                self._eof = True
            else:
                self._buf = chunk
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def text_of(stream: io.RawIOBase) -> TextIO:
    """CSV text (UTF-8, an optional BOM) over a byte stream, lines as the csv module wants."""
    return io.TextIOWrapper(io.BufferedReader(stream, 1 << 20), encoding="utf-8-sig",
                            errors="surrogateescape", newline="")


#: Rows per COPY: the file is read in a worker thread one chunk ahead of the COPY, so that
#: Python's parsing and the server's ingest overlap.
CHUNK = 20_000

OpenText = Callable[[], AbstractContextManager[TextIO]]


async def copy_roll(conn: Conn, version: int, open_text: OpenText, result: RollLoad,
                    on_rows: Callable[[RollLoad], None] | None = None,
                    unblock: Callable[[], None] | None = None,
                    counties: Counties = CALIFORNIA) -> None:
    """Read ``open_text()`` in a worker thread (validated, normalised, in chunks) and COPY the
    records into ``matching.voters`` under ``version``; counts go to ``result``, which
    ``on_rows`` sees after each chunk. ``unblock`` releases a reader waiting for input when
    the load stops early. Rows naming a county not in ``counties`` are rejected."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[list[tuple[object, ...]] | Exception | None] = asyncio.Queue(maxsize=2)
    cancelled = threading.Event()
    rejections = Rejections()

    def produce() -> None:
        def put(item: list[tuple[object, ...]] | Exception | None) -> None:
            asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

        chunk: list[tuple[object, ...]] = []
        try:
            with open_text() as fh:
                for rec in read_roll_text(fh, result.source, rejections, counties=counties):
                    if cancelled.is_set():
                        return
                    chunk.append((version, *rec))
                    if len(chunk) >= CHUNK:
                        put(chunk)
                        chunk = []
            put(chunk)
            put(None)
        except Exception as exc:  # noqa: BLE001 - handed to the loader, which raises it
            if not cancelled.is_set():
                put(exc)

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
            result.rejected, result.errors = rejections.count, rejections.first
            if on_rows:
                on_rows(result)
        await reader
        result.rejected, result.errors = rejections.count, rejections.first
    except BaseException:
        cancelled.set()
        if unblock is not None:
            unblock()
        while not reader.done():  # let the reader see the flag (it may wait on a full queue)
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
            await asyncio.sleep(0.01)
        result.rejected, result.errors = rejections.count, rejections.first
        raise


async def load_roll_text(
    pool: asyncpg.Pool, source: str, open_text: OpenText, *, actor: str,
    max_rejected: MaxRejected = DEFAULT_MAX_REJECTED,
    on_rows: Callable[[RollLoad], None] | None = None,
    unblock: Callable[[], None] | None = None,
    activate: Callable[[Conn, RollLoad], Awaitable[versions.Activation]] | None = None,
    result: RollLoad | None = None, counties: Counties = CALIFORNIA,
) -> RollLoad:
    """Load CSV text as a new roll version and activate it.

    Holds the lifecycle lock throughout. A refused (``RollRefused``) or failed load is
    discarded: its rows deleted, its record kept with why, an audit entry under ``actor``.
    ``activate(conn, load)`` activates the staged version (by default at once, without
    waiting for the matcher replicas). ``result`` (else a new one) follows the load.
    """
    result = result or RollLoad()
    result.source = source
    async with versions.lifecycle_lock(pool) as conn:
        result.version = await versions.new_version(conn, source, actor)
        try:
            await copy_roll(conn, result.version, open_text, result, on_rows, unblock,
                            counties)
            why = refusal(result, max_rejected)
            if why is not None:
                raise RollRefused(why + await _unchanged(pool))
        except BaseException as exc:
            note = why_stopped(exc)
            await asyncio.shield(versions.discard(pool, result.version, result.rows,
                                                  result.rejected, note, actor))
            raise
        await versions.staged(conn, result.version, result.rows, result.rejected, actor)
        if activate is None:
            done = await versions.activate(conn, result.version, actor, "loaded")
        else:
            done = await activate(conn, result)
        result.previous = done.previous
    return result


def why_stopped(exc: BaseException) -> str:
    """Why a load that raised ``exc`` was discarded, in words (recorded with the version and
    shown by ``roll list``): never the exception's class or internal text."""
    if isinstance(exc, InvalidArgument | FailedPrecondition):
        return str(exc)
    if isinstance(exc, asyncio.CancelledError):
        return ("the load stopped before the end of the file: the client stopped the upload "
                "(or lost its connection), or the matching service was stopped")
    log.error("a roll load failed: %s", exc.__class__.__name__)
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError | OSError):
        return "the load stopped: the database failed during the load"
    return ("the load stopped: an unexpected error in the matching service (its log names "
            "the kind)")


async def _unchanged(pool: asyncpg.Pool) -> str:
    active = await pool.fetchval("SELECT version FROM matching.roll_versions WHERE state = 'active'")
    return (f". Nothing changed: roll version {active} stays active" if active
            else ". Nothing changed: there is still no active roll")


async def load_roll(pool: asyncpg.Pool, path: Path,
                    progress: Callable[[int], None] | None = None,
                    actor: str = "cli:roll-load", *,
                    max_rejected: MaxRejected = DEFAULT_MAX_REJECTED) -> RollLoad:
    """Load ``path`` as a new roll version and make it the active one at once (the fast
    path: the matcher replicas build its index when they next decide)."""
    def open_text() -> AbstractContextManager[TextIO]:
        return open_roll(path)

    on_rows = (lambda r: progress(r.rows)) if progress else None
    return await load_roll_text(pool, path.name, open_text, actor=actor,
                                max_rejected=max_rejected, on_rows=on_rows)


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
