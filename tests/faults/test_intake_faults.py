"""Intake and the clerk's ``sigverify submit`` against hostile and messy input (issue 8),
through the real intake process, PostgreSQL and the broker:

- fuzzed files (hypothesis): every row read is accepted or rejected with its record, line,
  field and reason, and the accepted rows are stored as sent and counted by the pipeline;
- an oversized message (RESOURCE_EXHAUSTED, nothing stored) and an oversized field (the row
  rejected, the rest stored, later batches still verified);
- intake's peak memory flat whatever the upload's size (VmHWM of the intake process);
- a client cancelling mid-stream and SIGTERM to intake mid-upload: nothing of the batch
  stored, and sending it again stores it exactly once;
- batch keys scoped to (petition, county), a reused key with other content refused;
- a batch with no rows (a header only) refused, nothing stored;
- unknown columns and counties refused, hostile values (``²``, 2^63, NUL) rejected by row,
  a cp1252 file from Excel stored with its accents, and the CLI's one-line errors.
"""

from __future__ import annotations

import asyncio
import csv
import os
import re
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import asyncpg
import grpc
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sigverify.intake.v1 import intake_pb2, intake_pb2_grpc
from sigverify_cli import client, stack
from sigverify_common import textfile
from sigverify_common.convert import method_to_pb
from sigverify_common.sampling import Method
from sigverify_intake.domain import KNOWN_COLUMNS, MAX_LINE
from tests.integration import helpers as h

pytestmark = pytest.mark.integration

COLUMNS = ["line", "first_name", "middle_name", "last_name", "street", "unit", "city", "zip",
           "signed_on", "circulator_id"]
MiB = 1024 * 1024


def good_row(line: int) -> list[str]:
    return [str(line), f"Fay{line}", "", f"Quill{line}", f"{line} Nowhere Rd", "", "Bakersfield",
            "93301", "2017-05-02", "C-1"]


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[Sequence[str]],
              encoding: str = "utf-8") -> Path:
    with path.open("w", newline="", encoding=encoding) as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        w.writerows(rows)
    return path


async def new_petition(state: stack.StackState, sample: bool = False) -> str:
    pid = h.new_petition_id()
    async with h.channel(state, "intake") as ch:
        await intake_pb2_grpc.IntakeServiceStub(ch).CreatePetition(
            intake_pb2.CreatePetitionRequest(
                petition_id=pid, title="faults", required_signatures=100, deadline="2017-07-25",
                method=method_to_pb(Method.RANDOM_SAMPLE if sample else Method.FULL_COUNT)),
            timeout=30)
    return pid


@dataclass
class Stored:
    batches: int
    signatures: int
    rejections: int


async def stored(state: stack.StackState, pid: str) -> Stored:
    conn = await asyncpg.connect(state.database_url)
    try:
        r = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM intake.batches WHERE petition_id = $1) AS b, "
            "(SELECT count(*) FROM intake.signatures WHERE petition_id = $1) AS s, "
            "(SELECT count(*) FROM intake.rejections j JOIN intake.batches b USING (batch_id) "
            " WHERE b.petition_id = $1) AS j", pid)
        assert r is not None
        return Stored(r["b"], r["s"], r["j"])
    finally:
        await conn.close()


def header(pid: str, county: str = "Kern", columns: Sequence[str] = COLUMNS, key: str = ""
           ) -> intake_pb2.SubmitBatchRequest:
    return intake_pb2.SubmitBatchRequest(header=intake_pb2.BatchHeader(
        petition_id=pid, county=county, columns=list(columns), client_batch_key=key,
        filename="raw.csv"))


def rows_msg(rows: Sequence[tuple[int, Sequence[str]]]) -> intake_pb2.SubmitBatchRequest:
    return intake_pb2.SubmitBatchRequest(rows=intake_pb2.RowChunk(
        rows=[intake_pb2.RawRow(record=r, values=list(v)) for r, v in rows]))


def end_msg(n: int) -> intake_pb2.SubmitBatchRequest:
    return intake_pb2.SubmitBatchRequest(end=intake_pb2.BatchEnd(rows=n))


async def raw_submit(state: stack.StackState, messages: Sequence[intake_pb2.SubmitBatchRequest]
                     ) -> intake_pb2.BatchReceipt:
    async def gen() -> AsyncIterator[intake_pb2.SubmitBatchRequest]:
        for m in messages:
            yield m

    async with h.channel(state, "intake") as ch:
        r: intake_pb2.BatchReceipt = await intake_pb2_grpc.IntakeServiceStub(ch).SubmitBatch(
            gen(), timeout=60)
        return r


async def rejections(state: stack.StackState, batch_id: str) -> list[intake_pb2.RowError]:
    async with h.channel(state, "intake") as ch:
        return [e async for e in client.all_rejections(ch, batch_id)]


def cli(state: stack.StackState, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SIGVERIFY_TOKEN", "DATABASE_URL", "SIGVERIFY_DEBUG")}
    env["SIGVERIFY_HOME"] = state.home
    return subprocess.run([sys.executable, "-c", "from sigverify_cli.main import main; main()",
                           *argv], env=env, capture_output=True, text=True, timeout=300)


def one_error_line(p: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert p.returncode != 0, p.stdout
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    for text in expected:
        assert text in lines[0], lines[0]


# -- fuzzed batches ------------------------------------------------------------------------------

JUNK = st.one_of(
    st.text(max_size=24),
    st.sampled_from(["", " ", "\x00", "a\x00b", "\u00b2", "\u0663", "99999999999999999999",
                     str(2**63), "-1", "0", "+7", "20170502", "2017-W20-2", "2017-02-30",
                     "2017-05-02", "1999-12-31", "online", "paper", "fax", "\u202eevil",
                     "\U0001f4a5", "O\u2019Brien", "Mu\u00f1oz"]),
    st.integers(min_value=-2**70, max_value=2**70).map(str),
    st.text(min_size=150, max_size=450),
)
LINES = st.one_of(st.integers(1, 40).map(str), JUNK)
DATES = st.one_of(st.dates(date(1900, 1, 1), date(2100, 12, 31)).map(date.isoformat), JUNK)
OPTIONAL = sorted(KNOWN_COLUMNS - {"line", "street", "first_name", "last_name"})


def value_for(column: str) -> st.SearchStrategy[str]:
    if column == "line":
        return LINES
    if column in ("signed_on", "birth_date"):
        return DATES
    if column == "source":
        return st.one_of(st.sampled_from(["paper", "online", "ONLINE", ""]), JUNK)
    return st.one_of(st.text(max_size=20), JUNK)


@st.composite
def fuzzed_batch(draw: st.DrawFn) -> tuple[list[str], list[list[str]]]:
    extra = draw(st.lists(st.sampled_from(OPTIONAL), unique=True))
    columns = draw(st.permutations(["line", "street", "first_name", "last_name", *extra]))
    rows: list[list[str]] = []
    for _ in range(draw(st.integers(0, 30))):
        values = [draw(value_for(c)) for c in columns]
        if draw(st.integers(0, 9)) == 0:  # a ragged row
            cut = draw(st.integers(1, len(columns) + 3))
            values = (values + [draw(JUNK) for _ in range(3)])[:cut]
        if values == [""]:
            values = ["0"]  # a blank record is no row at all in a CSV file
        rows.append(values)
    return columns, rows


async def nothing_stored(state: stack.StackState, pid: str) -> None:
    conn = await asyncpg.connect(state.database_url)
    try:
        assert not await conn.fetchval(
            "SELECT count(*) FROM intake.batches WHERE petition_id = $1", pid)
    finally:
        await conn.close()


async def check_fuzzed(state: stack.StackState, pid: str, columns: list[str],
                       rows: list[list[str]], directory: Path) -> int:
    """Submit one fuzzed file and check its receipt and what was stored; returns how many
    signatures were accepted."""
    path = write_csv(directory / "fuzz.csv", columns, rows)
    if not rows:  # a header alone is refused, and nothing stored (1e46b50)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await h.submit(state, path, pid, "Kern")
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "has no rows" in (refused.value.details() or "")
        await nothing_stored(state, pid)
        return 0
    try:
        receipt = await h.submit(state, path, pid, "Kern")
    except client.CliError as exc:
        # Refused whole before any call, by the documented rule for binary files (at least
        # BINARY_MIN_CONTROLS control bytes and over BINARY_SHARE of the first block):
        # hypothesis finds files of junk that cross it. Nothing may be stored.
        head = path.read_bytes()[:textfile.BLOCK]
        controls = len(re.findall(rb"[\x00-\x08\x0b\x0e-\x1f\x7f]", head))
        assert "is not a text file" in str(exc) or "looks like UTF-16" in str(exc), exc
        assert controls >= textfile.BINARY_MIN_CONTROLS, exc
        assert controls > textfile.BINARY_SHARE * len(head), exc
        await nothing_stored(state, pid)
        return 0
    n = len(rows)
    assert not receipt.resubmission
    assert receipt.rows_received == n
    assert receipt.signatures_accepted + receipt.rows_rejected == n
    rejected = await rejections(state, receipt.batch_id)
    assert len(rejected) == receipt.rows_rejected
    assert [e.record for e in receipt.rejected] == [e.record for e in rejected][:1000]
    li = columns.index("line")
    for e in rejected:
        assert 1 <= e.record <= n and e.reason, e
        assert e.field in (*columns, "(row)"), e
        if e.line:
            assert e.line == int(rows[e.record - 1][li].strip()), e
    rejected_records = {e.record for e in rejected}
    assert len(rejected_records) == len(rejected)
    accepted = {int(rows[r - 1][li].strip()): rows[r - 1]
                for r in range(1, n + 1) if r not in rejected_records}
    assert len(accepted) == receipt.signatures_accepted
    conn = await asyncpg.connect(state.database_url)
    try:
        got = await conn.fetch("SELECT line, street, circulator_id FROM intake.signatures "
                               "WHERE batch_id = $1", uuid.UUID(receipt.batch_id))
    finally:
        await conn.close()
    assert {r["line"] for r in got} == set(accepted) and len(got) == len(accepted)
    si = columns.index("street")
    ci = columns.index("circulator_id") if "circulator_id" in columns else None
    for r in got:
        assert r["street"] == accepted[r["line"]][si].strip()
        assert r["circulator_id"] == (accepted[r["line"]][ci].strip() if ci is not None else "")
    return receipt.signatures_accepted


def run_fuzz(state: stack.StackState, examples: int) -> None:
    counted: dict[str, int] = {}

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(batch=fuzzed_batch())
    @example(batch=(["line", "street", "first_name", "last_name"], []))  # a header alone
    def one(batch: tuple[list[str], list[list[str]]]) -> None:
        columns, rows = batch
        with tempfile.TemporaryDirectory() as d:
            async def go() -> None:
                pid = await new_petition(state)
                counted[pid] = await check_fuzzed(state, pid, columns, rows, Path(d))
            asyncio.run(go())

    one()
    assert sum(counted.values()) > 0, "no fuzzed row was ever accepted: the strategy is off"

    async def all_counted() -> None:
        for pid, n in counted.items():
            if n:
                t = await h.wait_verified(state, pid, n, timeout=240)
                assert t.total.received == n

    asyncio.run(all_counted())


def test_fuzzed_batches_are_read_row_by_row(live_stack: stack.StackState, loaded_roll: int) -> None:
    run_fuzz(live_stack, 25)


@pytest.mark.long
def test_fuzzed_batches_are_read_row_by_row_long(live_stack: stack.StackState,
                                                 loaded_roll: int) -> None:
    run_fuzz(live_stack, 400)


# -- hostile values, columns, counties ----------------------------------------------------------

async def test_hostile_values_are_row_rejections_and_the_rest_is_stored(
        live_stack: stack.StackState) -> None:
    pid = await new_petition(live_stack)
    hostile = [
        (1, good_row(1)),
        (2, ["\u00b2", *good_row(2)[1:]]),                 # isdigit() true, int() fails
        (3, [str(2**63 + 5), *good_row(3)[1:]]),           # over int64
        (4, [str(MAX_LINE + 1), *good_row(4)[1:]]),
        (5, [*good_row(5)[:4], "1 Main\x00St", *good_row(5)[5:]]),   # NUL in street
        (6, [*good_row(6)[:8], "20170502", "C-1"]),        # compact date
        (7, [*good_row(7)[:8], "2017-W20-2", "C-1"]),      # week date
        (8, [*good_row(8)[:8], "", "C-1"]),                # no date
        (9, [*good_row(9)[:1], "x" * 201, *good_row(9)[2:]]),        # first name too long
        (10, good_row(10)),
    ]
    unreadable = intake_pb2.SubmitBatchRequest(rows=intake_pb2.RowChunk(rows=[
        intake_pb2.RawRow(record=11, unreadable="broken \x00 quoting")]))
    r = await raw_submit(live_stack, [header(pid), rows_msg(hostile), unreadable,
                                      end_msg(len(hostile) + 1)])
    got = {e.record: (e.line, e.field) for e in r.rejected}
    assert got == {2: (0, "line"), 3: (0, "line"), 4: (0, "line"), 5: (5, "street"),
                   6: (6, "signed_on"), 7: (7, "signed_on"), 8: (8, "signed_on"),
                   9: (9, "first_name"), 11: (0, "(row)")}
    assert (r.rows_received, r.signatures_accepted, r.rows_rejected) == (11, 2, 9)
    assert (await stored(live_stack, pid)).signatures == 2


async def test_a_message_that_does_not_decode_is_an_invalid_argument(
        live_stack: stack.StackState) -> None:
    pid = await new_petition(live_stack)
    rows = rows_msg([(i, good_row(i)) for i in range(1, 3001)]).SerializeToString()
    # a RowChunk whose one row has a value that is not UTF-8
    value = b"\x12\x02\xff\xfe"
    row = b"\x08\x01" + value
    chunk = b"\x0a" + bytes([len(row)]) + row
    bad = b"\x12" + bytes([len(chunk)]) + chunk

    async def gen() -> AsyncIterator[bytes]:
        yield header(pid).SerializeToString()
        yield rows
        yield bad
        yield end_msg(3001).SerializeToString()

    async with h.channel(live_stack, "intake") as ch:
        call = ch.stream_unary("/sigverify.intake.v1.IntakeService/SubmitBatch",
                               request_serializer=lambda b: b,
                               response_deserializer=intake_pb2.BatchReceipt.FromString)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await call(gen(), timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "UTF-8" in (e.value.details() or "")
    assert (await stored(live_stack, pid)) == Stored(0, 0, 0)


@pytest.mark.parametrize("column", ["sorce", "signed_date", "circulatorid"])
async def test_a_misspelt_column_refuses_the_batch_naming_it(
        live_stack: stack.StackState, tmp_path: Path, column: str) -> None:
    pid = await new_petition(live_stack)
    cols = [*COLUMNS, column]
    path = write_csv(tmp_path / "b.csv", cols, [[*good_row(1), "2099-01-01"]])
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await h.submit(live_stack, path, pid, "Kern")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"unknown column '{column}'" in (e.value.details() or "")
    assert (await stored(live_stack, pid)).batches == 0


async def test_unknown_counties_are_invalid_arguments_naming_them(
        live_stack: stack.StackState, tmp_path: Path) -> None:
    pid = await new_petition(live_stack)
    path = write_csv(tmp_path / "b.csv", COLUMNS, [good_row(1)])
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await h.submit(live_stack, path, pid, "Narnia")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Narnia" in (e.value.details() or "")
    async with h.channel(live_stack, "intake") as ch:
        stub = intake_pb2_grpc.IntakeServiceStub(ch)
        for call in (
            stub.CreatePetition(intake_pb2.CreatePetitionRequest(
                petition_id=h.new_petition_id(), required_signatures=10, deadline="2017-07-25",
                counties=["Kern", "Narnia"]), timeout=10),
            stub.CloseCounty(intake_pb2.CloseCountyRequest(petition_id=pid, county="Narnia"),
                             timeout=10),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await call
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "Narnia" in (e.value.details() or "")
    p = cli(live_stack, "submit", str(path), "--petition", pid, "--county", "Kern County")
    one_error_line(p, "INVALID_ARGUMENT", "unknown county 'Kern County'", "did you mean 'Kern'")
    p = cli(live_stack, "token", "create", "--role", "clerk", "--county", "Narnia")
    one_error_line(p, "INVALID_ARGUMENT", "Narnia")
    assert (await stored(live_stack, pid)).batches == 0
    t = await h.tally(live_stack, pid)
    assert not [c.key for c in t.by_county]


async def test_a_cp1252_file_from_excel_is_stored_with_its_accents(
        live_stack: stack.StackState, tmp_path: Path) -> None:
    pid = await new_petition(live_stack)
    rows = [good_row(1), [*good_row(2)[:1], "José", "", "Muñoz", "12 Calle Señora", *good_row(2)[5:]]]
    path = write_csv(tmp_path / "excel.csv", COLUMNS, rows, encoding="cp1252")
    p = cli(live_stack, "submit", str(path), "--petition", pid, "--county", "Kern")
    assert p.returncode == 0, p.stderr
    assert "2 signatures accepted" in p.stdout
    conn = await asyncpg.connect(live_stack.database_url)
    try:
        got = await conn.fetchrow("SELECT first_name, last_name, street FROM intake.signatures "
                                  "WHERE petition_id = $1 AND line = 2", pid)
    finally:
        await conn.close()
    assert got is not None and tuple(got) == ("José", "Muñoz", "12 Calle Señora")


async def test_the_cli_ends_every_failure_in_one_error_line(
        live_stack: stack.StackState, tmp_path: Path) -> None:
    pid = await new_petition(live_stack)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    one_error_line(cli(live_stack, "submit", str(tmp_path), "--petition", pid, "--county", "Kern"),
                   "is a directory")
    one_error_line(cli(live_stack, "report", "--petition", pid, "--out", str(a_file)),
                   str(a_file))
    one_error_line(cli(live_stack, "results", "export", "--petition", pid, "--out",
                       str(tmp_path / "missing" / "results.csv")), "No such file or directory")
    mixed = tmp_path / "mixed.csv"
    mixed.write_bytes("line,first_name,last_name,street\n1,Zoë,A,1 Main St\n".encode()
                      + "2,José,B,2 Main St\n".encode("cp1252"))
    one_error_line(cli(live_stack, "submit", str(mixed), "--petition", pid, "--county", "Kern"),
                   "mixes encodings", "line 3")
    assert (await stored(live_stack, pid)).batches == 0


# -- sizes ---------------------------------------------------------------------------------------

async def test_an_oversized_message_is_refused_and_nothing_is_stored(
        live_stack: stack.StackState) -> None:
    pid = await new_petition(live_stack)
    first = rows_msg([(i, good_row(i)) for i in range(1, 5001)])  # stored, then rolled back
    huge = rows_msg([(5001, [*good_row(5001)[:4], "x" * (5 * MiB), *good_row(5001)[5:]])])
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await raw_submit(live_stack, [header(pid), first, huge, end_msg(5001)])
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await asyncio.sleep(1)
    assert (await stored(live_stack, pid)) == Stored(0, 0, 0)


async def test_an_oversized_field_is_rejected_and_the_pipeline_goes_on(
        live_stack: stack.StackState, loaded_roll: int, tmp_path: Path) -> None:
    pid = await new_petition(live_stack)
    rows = [(i, good_row(i)) for i in range(1, 6)]
    rows[2] = (3, [*good_row(3)[:4], "x" * (2 * MiB), *good_row(3)[5:]])
    r = await raw_submit(live_stack, [header(pid), rows_msg(rows), end_msg(5)])
    assert [(e.record, e.line, e.field) for e in r.rejected] == [(3, 3, "street")]
    assert r.signatures_accepted == 4
    # Through the CLI: a field over the csv module's limit and one over intake's.
    path = write_csv(tmp_path / "long.csv", COLUMNS, [
        good_row(1), [*good_row(2)[:4], "y" * 200_000, *good_row(2)[5:]],
        [*good_row(3)[:4], "z" * 1000, *good_row(3)[5:]], good_row(4)])
    r2 = await h.submit(live_stack, path, pid, "Kern")
    assert [(e.record, e.field) for e in r2.rejected] == [(2, "(row)"), (3, "street")]
    assert r2.signatures_accepted == 2
    await h.wait_verified(live_stack, pid, 6, timeout=120)
    # and a later batch still verifies
    later = await raw_submit(live_stack, [header(pid, key="later"),
                                          rows_msg([(1, good_row(100))]), end_msg(1)])
    assert later.signatures_accepted == 1
    t = await h.wait_verified(live_stack, pid, 7, timeout=120)
    assert t.total.received == 7 and t.rows_rejected == 3


async def test_more_rejections_than_a_receipt_holds_are_all_kept(
        live_stack: stack.StackState, tmp_path: Path) -> None:
    pid = await new_petition(live_stack, sample=True)
    rows = [good_row(1), *([*good_row(1)] for _ in range(2_500)), good_row(2)]
    path = write_csv(tmp_path / "repeats.csv", COLUMNS, rows)
    r = await h.submit(live_stack, path, pid, "Kern")
    assert (r.signatures_accepted, r.rows_rejected, len(r.rejected)) == (2, 2_500, 1_000)
    assert [e.record for e in await rejections(live_stack, r.batch_id)] == list(range(2, 2_502))
    p = cli(live_stack, "batch", "show", r.batch_id, "--rejections")
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("rejected line 1 (record") == 2_500
    p = cli(live_stack, "submit", str(path), "--petition", pid, "--county", "Kern")
    assert "2,500 rejected (resubmission" in p.stdout
    assert f"and 2,480 more rejected rows: sigverify batch show {r.batch_id} --rejections" in p.stdout
    assert (await h.tally(live_stack, pid)).rows_rejected == 2_500


# -- batch keys ------------------------------------------------------------------------------------

async def test_batch_keys_belong_to_a_county_and_are_not_reused_for_other_content(
        live_stack: stack.StackState, tmp_path: Path) -> None:
    pid = await new_petition(live_stack)
    kern = write_csv(tmp_path / "kern.csv", COLUMNS, [good_row(i) for i in range(1, 4)])
    alameda = write_csv(tmp_path / "alameda.csv", COLUMNS, [good_row(i) for i in range(1, 6)])
    k1 = await h.submit(live_stack, kern, pid, "Kern", key="batch-001")
    a1 = await h.submit(live_stack, alameda, pid, "Alameda", key="batch-001")
    assert not a1.resubmission and a1.batch_id != k1.batch_id and a1.county == "Alameda"
    assert a1.signatures_accepted == 5
    # The same file from another county is that county's batch, not a resubmission.
    a2 = await h.submit(live_stack, kern, pid, "Alameda")
    assert not a2.resubmission and a2.signatures_accepted == 3
    again = await h.submit(live_stack, kern, pid, "Kern", key="batch-001")
    assert again.resubmission and again.batch_id == k1.batch_id
    corrected = write_csv(tmp_path / "kern-fixed.csv", COLUMNS, [good_row(i) for i in range(1, 5)])
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await h.submit(live_stack, corrected, pid, "Kern", key="batch-001")
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert k1.batch_id in (e.value.details() or "") and "new key" in (e.value.details() or "")
    assert (await stored(live_stack, pid)).signatures == 3 + 5 + 3
    fixed = await h.submit(live_stack, corrected, pid, "Kern", key="batch-001b")
    assert not fixed.resubmission and fixed.signatures_accepted == 4
    assert (await stored(live_stack, pid)).signatures == 3 + 5 + 3 + 4


async def test_the_same_batch_sent_twice_at_once_is_stored_once(
        live_stack: stack.StackState, tmp_path: Path) -> None:
    pid = await new_petition(live_stack, sample=True)
    for first, key in ((1, ""), (20_001, "same-key")):
        path = write_csv(tmp_path / f"twice-{first}.csv", COLUMNS,
                         [good_row(i) for i in range(first, first + 20_000)])
        a, b = await asyncio.gather(h.submit(live_stack, path, pid, "Kern", key),
                                    h.submit(live_stack, path, pid, "Kern", key))
        assert a.batch_id == b.batch_id and sorted((a.resubmission, b.resubmission)) == [False, True]
    assert (await stored(live_stack, pid)) == Stored(2, 40_000, 0)


async def test_a_stream_that_stops_without_its_end_stores_nothing(
        live_stack: stack.StackState) -> None:
    pid = await new_petition(live_stack)
    rows = rows_msg([(i, good_row(i)) for i in range(1, 3001)])
    for messages in ([header(pid), rows], [header(pid), rows, end_msg(2999)],
                     [header(pid), rows, end_msg(3000), rows]):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await raw_submit(live_stack, messages)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "nothing stored" in (e.value.details() or "") or "after the batch's end" in (
            e.value.details() or "")
    assert (await stored(live_stack, pid)) == Stored(0, 0, 0)


# -- memory ----------------------------------------------------------------------------------------

def vm_hwm(pid: int) -> int:
    """The process's peak resident memory in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


async def peak_rss_of_upload(state: stack.StackState, path: Path, pid: str) -> int:
    intake = state.services["intake"].pid
    Path(f"/proc/{intake}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    r = await h.submit(state, path, pid, "Kern")
    assert r.rows_rejected == 0 and r.signatures_accepted > 0
    return vm_hwm(intake)


def write_big(path: Path, n: int) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        fh.write(",".join(COLUMNS) + "\n")
        for i in range(1, n + 1):
            fh.write(f"{i},Firstname{i},M,Lastname{i},{i} Long Street Name Avenue,Apt {i % 97},"
                     f"Bakersfield,93301,2017-05-02,C-{i % 50}\n")
    return path


async def check_flat_memory(state: stack.StackState, tmp_path: Path, rows: int,
                            bound: int) -> None:
    # A random-sample petition: intake stores and holds the signatures (none goes to
    # matching), so only intake's work is measured.
    pid = await new_petition(state, sample=True)
    small = await peak_rss_of_upload(state, write_big(tmp_path / "small.csv", 1_000), pid)
    large = await peak_rss_of_upload(state, write_big(tmp_path / "large.csv", rows), pid)
    assert (await stored(state, pid)).signatures == 1_000 + rows
    print(f"intake peak RSS: {small / MiB:.0f} MiB for 1,000 rows, {large / MiB:.0f} MiB for "
          f"{rows:,} rows")
    assert large - small < bound, (small, large)


async def test_intake_memory_stays_flat_for_100k_rows(live_stack: stack.StackState,
                                                      tmp_path: Path) -> None:
    await check_flat_memory(live_stack, tmp_path, 100_000, 48 * MiB)


@pytest.mark.long
async def test_intake_memory_stays_flat_for_a_million_rows(live_stack: stack.StackState,
                                                           tmp_path: Path) -> None:
    await check_flat_memory(live_stack, tmp_path, 1_000_000, 150 * MiB)


# -- interrupted uploads -----------------------------------------------------------------------

ROWS_BEFORE_STALL = 6_000


async def stalled_upload(state: stack.StackState, pid: str
                         ) -> tuple[grpc.aio.Channel, grpc.aio.StreamUnaryCall, asyncio.Event]:  # type: ignore[type-arg]
    """An upload that sends ROWS_BEFORE_STALL rows and then waits, never ending."""
    sent = asyncio.Event()

    async def gen() -> AsyncIterator[intake_pb2.SubmitBatchRequest]:
        yield header(pid)
        for start in range(1, ROWS_BEFORE_STALL + 1, 500):
            yield rows_msg([(i, good_row(i)) for i in range(start, start + 500)])
        sent.set()
        await asyncio.Event().wait()
        yield end_msg(ROWS_BEFORE_STALL)  # never reached

    ch = h.channel(state, "intake")
    call = intake_pb2_grpc.IntakeServiceStub(ch).SubmitBatch(gen(), timeout=120)
    return ch, call, sent


async def open_transactions(state: stack.StackState) -> int:
    """Intake's batch transactions in progress (they hold the rows already COPYed)."""
    conn = await asyncpg.connect(state.database_url)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"))
    finally:
        await conn.close()


async def resubmit_stores_once(state: stack.StackState, pid: str, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "again.csv", COLUMNS,
                     [good_row(i) for i in range(1, ROWS_BEFORE_STALL + 1)])
    first = await h.submit(state, path, pid, "Kern")
    assert not first.resubmission and first.signatures_accepted == ROWS_BEFORE_STALL
    second = await h.submit(state, path, pid, "Kern")
    assert second.resubmission and second.batch_id == first.batch_id
    assert (await stored(state, pid)) == Stored(1, ROWS_BEFORE_STALL, 0)


async def test_a_cancelled_upload_stores_nothing(live_stack: stack.StackState,
                                                 tmp_path: Path) -> None:
    pid = await new_petition(live_stack, sample=True)
    ch, call, sent = await stalled_upload(live_stack, pid)
    async with ch:
        await sent.wait()
        await asyncio.sleep(2)
        assert await open_transactions(live_stack) >= 1  # rows went in mid-stream
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    await asyncio.sleep(2)
    assert (await stored(live_stack, pid)) == Stored(0, 0, 0)
    await resubmit_stores_once(live_stack, pid, tmp_path)


async def test_sigterm_to_intake_during_an_upload_stores_nothing(
        live_stack: stack.StackState, tmp_path: Path) -> None:
    pid = await new_petition(live_stack, sample=True)
    ch, call, sent = await stalled_upload(live_stack, pid)
    async with ch:
        await sent.wait()
        await asyncio.sleep(2)
        assert await open_transactions(live_stack) >= 1
        await asyncio.to_thread(stack.stop_pid, live_stack.services["intake"].pid)
        with pytest.raises(grpc.aio.AioRpcError):
            await call
    assert (await stored(live_stack, pid)) == Stored(0, 0, 0)
    stack.spawn_service(live_stack, "intake", extra_env={"FULL_COUNT_IN_FLIGHT": "100"},
                        ports=live_stack.services["intake"])
    await asyncio.to_thread(stack.wait_healthy, live_stack, ("intake",))
    await resubmit_stores_once(live_stack, pid, tmp_path)


# -- empty batches ---------------------------------------------------------------------------------

async def test_a_batch_with_no_rows_is_refused_and_nothing_is_stored(
        live_stack: stack.StackState, tmp_path: Path) -> None:
    """A header and no rows (the wrong file, an export that failed) is a clerk's mistake:
    refused with INVALID_ARGUMENT naming the file, nothing stored, from a raw client (end
    counting 0, with or without an empty chunk, with a key) and from ``sigverify submit``."""
    pid = await new_petition(live_stack)
    for messages in ([header(pid), end_msg(0)], [header(pid), rows_msg([]), end_msg(0)],
                     [header(pid, key="k-empty"), end_msg(0)]):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await raw_submit(live_stack, messages)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "'raw.csv' has no rows (only a header): nothing stored" in (
            e.value.details() or "")
    empty = write_csv(tmp_path / "kern-export.csv", COLUMNS, [])
    p = cli(live_stack, "submit", str(empty), "--petition", pid, "--county", "Kern")
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    one_error_line(p, "INVALID_ARGUMENT", "'kern-export.csv' has no rows (only a header)")
    assert (await stored(live_stack, pid)) == Stored(0, 0, 0)
    # The key was not taken: the real file under it is stored.
    receipt = await raw_submit(live_stack, [header(pid, key="k-empty"),
                                            rows_msg([(1, good_row(1))]), end_msg(1)])
    assert receipt.rows_received == 1 and not receipt.resubmission
    assert (await stored(live_stack, pid)) == Stored(1, 1, 0)
