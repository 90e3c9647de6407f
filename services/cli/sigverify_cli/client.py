"""Where the CLI finds the services, and the gRPC calls it makes (every call has a deadline)."""

from __future__ import annotations

import csv
import os
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass
from pathlib import Path

import grpc

from sigverify.intake.v1 import intake_pb2, intake_pb2_grpc
from sigverify.tally.v1 import tally_pb2, tally_pb2_grpc
from sigverify_cli import credentials
from sigverify_cli.stack import StackState

CHUNK_ROWS = 500


class CliError(RuntimeError):
    pass


def home() -> Path:
    return Path(os.environ.get("SIGVERIFY_HOME", ".sigverify")).resolve()


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
        return credentials.open_channel(addr, self.token, self.tls)

    @classmethod
    def discover(cls, token: str | None = None) -> Endpoints:
        """Addresses from the environment or the local stack; the token from ``token``
        (``--token``), else SIGVERIFY_TOKEN, else the local stack's admin token."""
        state = StackState.load(home())
        def pick(env: str, service: str) -> str:
            if os.environ.get(env):
                return os.environ[env]
            if state and service in state.services:
                return state.addr(service)
            raise CliError(f"no address for {service}: set {env} or run 'sigverify stack up'")
        db = os.environ.get("DATABASE_URL") or (state.database_url if state else "")
        return cls(pick("INTAKE_ADDR", "intake"), pick("MATCHING_ADDR", "matching"),
                   pick("TALLY_ADDR", "tally"), db, credentials.resolve_token(token, home()),
                   credentials.tls_from_env())


def read_batch(path: Path) -> tuple[list[str], Generator[tuple[int, list[str]], None, None]]:
    """The header and the (record number, values) of a batch CSV, read lazily."""
    fh = path.open(newline="", encoding="utf-8-sig")
    reader = csv.reader(fh)
    try:
        columns = next(reader)
    except StopIteration:
        fh.close()
        raise CliError(f"{path}: the file is empty (no header row)") from None
    except csv.Error as exc:
        fh.close()
        raise CliError(f"{path}: unreadable header: {exc}") from None

    def rows() -> Generator[tuple[int, list[str]], None, None]:
        record = 0
        with fh:
            while True:
                record += 1
                try:
                    values = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    # Broken quoting: send the record as one odd field so intake rejects it.
                    values = [f"<unreadable: {exc}>"]
                if not values or values == [""]:
                    record -= 1
                    continue
                yield record, values

    return columns, rows()


async def submit_batch(channel: grpc.aio.Channel, path: Path, petition: str, county: str,
                       key: str = "", progress: Callable[[int], None] | None = None,
                       timeout: float = 600) -> intake_pb2.BatchReceipt:
    columns, rows = read_batch(path)

    async def requests() -> AsyncIterator[intake_pb2.SubmitBatchRequest]:
        yield intake_pb2.SubmitBatchRequest(header=intake_pb2.BatchHeader(
            petition_id=petition, county=county, client_batch_key=key, columns=columns,
            filename=path.name))
        chunk: list[intake_pb2.RawRow] = []
        sent = 0
        for record, values in rows:
            chunk.append(intake_pb2.RawRow(record=record, values=values))
            if len(chunk) >= CHUNK_ROWS:
                sent += len(chunk)
                yield intake_pb2.SubmitBatchRequest(rows=intake_pb2.RowChunk(rows=chunk))
                chunk = []
                if progress:
                    progress(sent)
        if chunk:
            sent += len(chunk)
            yield intake_pb2.SubmitBatchRequest(rows=intake_pb2.RowChunk(rows=chunk))
            if progress:
                progress(sent)

    stub = intake_pb2_grpc.IntakeServiceStub(channel)
    try:
        receipt: intake_pb2.BatchReceipt = await stub.SubmitBatch(requests(), timeout=timeout)
    finally:
        rows.close()  # the file, also when the call failed half-way (intake went away)
    return receipt


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
