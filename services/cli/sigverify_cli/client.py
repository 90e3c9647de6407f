"""Where the CLI finds the services, and the gRPC calls it makes (every call has a deadline)."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import grpc

from sigverify.intake.v1 import intake_pb2, intake_pb2_grpc
from sigverify.tally.v1 import tally_pb2, tally_pb2_grpc
from sigverify_cli import credentials
from sigverify_cli.stack import StackState
from sigverify_common.csvtext import CsvRecords
from sigverify_common.errors import InvalidArgument
from sigverify_common.textfile import open_text

CHUNK_ROWS = 500

#: The exit status of every command when a service it calls cannot be reached (nothing
#: answers at its address) or answers UNAVAILABLE (it cannot serve now: retry later). The
#: others: 1 a call refused or failed, 2 a usage error, 3 ``wait``: nothing received, 4
#: ``submit``: rows rejected, 70 an unexpected failure.
EXIT_UNREACHABLE = 5

#: The services' addresses this process opened a channel to, and their names: an UNAVAILABLE
#: error says which one could not be reached.
OPENED: dict[str, str] = {}


class CliError(RuntimeError):
    pass


class ServiceUnreachable(CliError):
    """A service could not be reached or cannot serve now (exit EXIT_UNREACHABLE)."""


_PEER = re.compile(r"(?:ipv4|ipv6|unix):(\[[^\]]*\]:\d+|[^\s:;,]+:\d+)")
#: Words of gRPC's own errors when no connection could be made or it was lost (as opposed
#: to an UNAVAILABLE sent by a service that runs but cannot serve now).
_NO_CONNECTION = ("failed to connect", "connection refused", "socket closed", "stream removed",
                  "connections to all backends failing", "connection reset", "dns resolution",
                  "goaway", "broken pipe")


def opened_service(details: str) -> tuple[str, str] | None:
    """(name, address) of the service an error's text names by address, else of the only
    one this process opened a channel to; None when that cannot be told."""
    for m in _PEER.finditer(details):
        peer = m.group(1)
        same = [(n, a) for a, n in OPENED.items() if a == peer]
        # A name resolved: "localhost:50051" is connected to as "ipv6:[::1]:50051".
        same = same or [(n, a) for a, n in OPENED.items()
                        if a.rsplit(":", 1)[-1] == peer.rsplit(":", 1)[-1]]
        if len(same) == 1:
            return same[0]
    if len(OPENED) == 1:
        addr, name = next(iter(OPENED.items()))
        return name, addr
    return None


def unreachable_text(details: str) -> str:
    """One line for an UNAVAILABLE error: which service at which address, and what to do
    (gRPC's own text, such as "failed to connect to all addresses; ipv4:...", is not shown
    when the connection could not be made: the line says so in words)."""
    found = opened_service(details)
    if found is not None:
        who = f"{found[0]} at {found[1]}"
    elif OPENED:
        who = "one of " + ", ".join(f"{n} at {a}" for a, n in OPENED.items())
    else:
        who = "a service"
    advice = "'sigverify stack status' shows what runs"
    if any(w in details.lower() for w in _NO_CONNECTION):
        return f"{who} is unreachable (no connection could be made, or it was lost); {advice}"
    return f"{who} cannot serve now: {details}; retry later ({advice})"


def home() -> Path:
    return Path(os.environ.get("SIGVERIFY_HOME", ".sigverify")).resolve()


def no_stack(where: Path, service: str, env: str) -> str:
    """Why no address for ``service`` was found when no stack is recorded under ``where``."""
    if os.environ.get("SIGVERIFY_HOME"):
        found = (f"no stack is recorded under {where} (SIGVERIFY_HOME): set SIGVERIFY_HOME to "
                 "the .sigverify folder of a running stack, or run 'sigverify stack up'")
    elif not where.exists():
        found = (f"no stack home (.sigverify) in the current directory ({where.parent}): run "
                 "the command from the folder where 'sigverify stack up' was run, or set "
                 "SIGVERIFY_HOME to that stack's .sigverify folder")
    else:
        found = (f"no stack is running from {where}: 'sigverify stack up' starts one (or set "
                 "SIGVERIFY_HOME to another stack's .sigverify folder)")
    return f"{found}; or set {env} to the {service} service's address"


@dataclass(frozen=True)
class Endpoints:
    intake: str
    matching: str
    tally: str
    database_url: str
    #: The bearer token every call carries (see ``credentials``).
    token: str = ""
    tls: grpc.ChannelCredentials | None = None

    def channel(self, addr: str) -> grpc.aio.Channel:
        """A channel to one of the services, carrying the token (TLS when configured)."""
        OPENED[addr] = "/".join(name for name in ("intake", "matching", "tally")
                                if getattr(self, name) == addr) or "the service"
        return credentials.open_channel(addr, self.token, self.tls)

    @classmethod
    def discover(cls, token: str | None = None) -> Endpoints:
        """Addresses from the environment or the local stack; the token from ``token``
        (``--token``), else SIGVERIFY_TOKEN, else the local stack's admin token."""
        where = home()
        state = StackState.load(where)
        def pick(env: str, service: str) -> str:
            if os.environ.get(env):
                return os.environ[env]
            if state and service in state.services:
                return state.addr(service)
            raise CliError(no_stack(where, service, env) if state is None else
                           f"no address for {service}: the stack under {where} has no "
                           f"{service} service; set {env} to its address")
        db = os.environ.get("DATABASE_URL") or (state.database_url if state else "")
        return cls(pick("INTAKE_ADDR", "intake"), pick("MATCHING_ADDR", "matching"),
                   pick("TALLY_ADDR", "tally"), db, credentials.resolve_token(token, home()),
                   credentials.tls_from_env())


#: A chunk of rows sent in one message: at most this many rows and about this many bytes
#: (intake refuses messages over 4 MiB).
CHUNK_BYTES = 1 << 20
#: A row larger than this is not sent: it goes as an unreadable record, which intake rejects.
MAX_ROW_BYTES = 1 << 20

#: (record number, values, why unreadable or "")
BatchRow = tuple[int, list[str], str]


class BatchRows:
    """The rows of a batch file, read lazily; ``close`` closes the file whether or not a
    row was read (a call refused before its first row must not leave it open)."""

    def __init__(self, fh: TextIO, rows: Generator[BatchRow, None, None]) -> None:
        self._fh, self._rows = fh, rows

    def __iter__(self) -> Iterator[BatchRow]:
        return self

    def __next__(self) -> BatchRow:
        return next(self._rows)

    def close(self) -> None:
        self._rows.close()
        self._fh.close()


def read_batch(path: Path) -> tuple[list[str], BatchRows]:
    """The header and the rows of a batch CSV, read lazily in the file's own encoding
    (UTF-8 with or without BOM, cp1252, latin-1; see ``sigverify_common.textfile``).

    A record that cannot be read as one row (a quote never closed, or closed lines later; a
    field over the csv module's 128 KiB limit) is given as unreadable, with the lines of the
    file it took (see ``sigverify_common.csvtext``), for intake to reject with its record
    number: no line of the file goes unreported."""
    try:
        fh = open_text(path)
    except InvalidArgument as exc:
        raise CliError(str(exc)) from None
    records = CsvRecords(fh, str(path))
    try:
        columns = records.header()
    except InvalidArgument as exc:
        fh.close()
        raise CliError(str(exc)) from None

    def rows() -> Generator[BatchRow, None, None]:
        with fh:
            for r in records:
                yield r.number, r.values, r.problem

    return columns, BatchRows(fh, rows())


def row_size(values: list[str]) -> int:
    """An upper bound of a row's size in a message (bytes)."""
    return 4 * sum(map(len, values)) + 3 * len(values) + 16


def chunked(rows: Iterator[BatchRow], max_rows: int = CHUNK_ROWS, max_bytes: int = CHUNK_BYTES,
            max_row_bytes: int = MAX_ROW_BYTES) -> Iterator[list[intake_pb2.RawRow]]:
    """Rows as RawRow chunks of at most ``max_rows`` rows and about ``max_bytes`` bytes."""
    chunk: list[intake_pb2.RawRow] = []
    size = 0
    for record, values, unreadable in rows:
        n = row_size(values)
        if n > max_row_bytes:
            n = sum(len(v.encode()) for v in values) + 3 * len(values) + 16
            if n > max_row_bytes:
                values, unreadable = [], (f"the row is {n:,} bytes long; a row may have at "
                                          f"most {max_row_bytes:,}")
                n = 64
        if chunk and (len(chunk) >= max_rows or size + n > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(intake_pb2.RawRow(record=record, values=values, unreadable=unreadable))
        size += n
    if chunk:
        yield chunk


async def submit_batch(channel: grpc.aio.Channel, path: Path, petition: str, county: str,
                       key: str = "", progress: Callable[[int], None] | None = None,
                       timeout: float = 3600) -> intake_pb2.BatchReceipt:
    """Send one batch file; the receipt comes once intake has committed all of it."""
    columns, rows = read_batch(path)

    async def requests() -> AsyncIterator[intake_pb2.SubmitBatchRequest]:
        yield intake_pb2.SubmitBatchRequest(header=intake_pb2.BatchHeader(
            petition_id=petition, county=county, client_batch_key=key, columns=columns,
            filename=path.name))
        sent = 0
        for chunk in chunked(rows):
            sent += len(chunk)
            yield intake_pb2.SubmitBatchRequest(rows=intake_pb2.RowChunk(rows=chunk))
            if progress:
                progress(sent)
        yield intake_pb2.SubmitBatchRequest(end=intake_pb2.BatchEnd(rows=sent))

    stub = intake_pb2_grpc.IntakeServiceStub(channel)
    try:
        receipt: intake_pb2.BatchReceipt = await stub.SubmitBatch(requests(), timeout=timeout)
    finally:
        rows.close()  # the file, also when the call failed half-way (intake went away)
    return receipt


async def get_batch(channel: grpc.aio.Channel, batch_id: str, offset: int = 0,
                    limit: int = 0) -> intake_pb2.BatchReceipt:
    r: intake_pb2.BatchReceipt = await intake_stub(channel).GetBatch(
        intake_pb2.GetBatchRequest(batch_id=batch_id, rejections_offset=offset,
                                   rejections_limit=limit), timeout=30)
    return r


async def all_rejections(channel: grpc.aio.Channel, batch_id: str
                         ) -> AsyncIterator[intake_pb2.RowError]:
    """Every rejected row of a batch, page by page."""
    offset = 0
    while True:
        page = await get_batch(channel, batch_id, offset)
        for e in page.rejected:
            yield e
        offset += len(page.rejected)
        if not page.rejected or offset >= page.rows_rejected:
            return


async def get_tally(channel: grpc.aio.Channel, petition: str) -> tally_pb2.Tally:
    tally: tally_pb2.Tally = await tally_pb2_grpc.TallyServiceStub(channel).GetTally(
        tally_pb2.GetTallyRequest(petition_id=petition), timeout=30)
    return tally


def intake_stub(channel: grpc.aio.Channel) -> intake_pb2_grpc.IntakeServiceAsyncStub:
    return intake_pb2_grpc.IntakeServiceStub(channel)


async def get_petition(channel: grpc.aio.Channel, petition: str) -> intake_pb2.Petition:
    p: intake_pb2.Petition = await intake_stub(channel).GetPetition(
        intake_pb2.GetPetitionRequest(petition_id=petition), timeout=30)
    return p


async def set_method(channel: grpc.aio.Channel, request: intake_pb2.SetVerificationMethodRequest
                     ) -> intake_pb2.Petition:
    p: intake_pb2.Petition = await intake_stub(channel).SetVerificationMethod(request, timeout=30)
    return p


async def list_counties(channel: grpc.aio.Channel, petition: str) -> list[intake_pb2.CountyFiling]:
    r: intake_pb2.ListCountiesResponse = await intake_stub(channel).ListCounties(
        intake_pb2.ListCountiesRequest(petition_id=petition), timeout=30)
    return list(r.counties)


async def close_county(channel: grpc.aio.Channel, petition: str, county: str, seed: str = ""
                       ) -> intake_pb2.CountyFiling:
    # Closing draws the sample and enqueues its events in one transaction: allow it time.
    f: intake_pb2.CountyFiling = await intake_stub(channel).CloseCounty(
        intake_pb2.CloseCountyRequest(petition_id=petition, county=county, seed=seed), timeout=300)
    return f


async def list_sample(channel: grpc.aio.Channel, petition: str, county: str,
                      timeout: float = 600) -> list[intake_pb2.SampleEntry]:
    """Every signature of the county in draw order (sampled and not), for the re-draw check."""
    call = intake_stub(channel).ListSample(
        intake_pb2.ListSampleRequest(petition_id=petition, county=county, include_unsampled=True),
        timeout=timeout)
    return [e async for e in call]
