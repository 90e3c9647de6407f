"""Voter roll versions as an admin manages them: ``sigverify roll load|list|activate|rollback``
against the live stack (matching's LoadRoll, ListRolls and ActivateRoll RPCs), and the direct
load's staging in a scratch database on the stack's server.

Every roll loaded successfully on the live stack holds the session's synthetic voters, so the
other tests keep matching against the same people whichever version is active.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from sigverify.matching.v1 import matching_pb2, matching_pb2_grpc
from sigverify_cli import stack
from sigverify_cli.main import upload_roll
from sigverify_cli.synth import SynthOutput
from sigverify_common import audit, db
from sigverify_matching.roll import CHUNK, ROLL_COLUMNS, load_roll
from tests.integration import helpers as h
from tests.integration.test_access import make_token

pytestmark = pytest.mark.integration


# -- helpers -------------------------------------------------------------------------------------

async def cli(state: stack.StackState, *args: str, token: str | None = None
              ) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("INTAKE_ADDR", "MATCHING_ADDR", "TALLY_ADDR", "SIGVERIFY_TOKEN",
                        "DATABASE_URL")}
    env["SIGVERIFY_HOME"] = state.home
    if token is not None:
        env["SIGVERIFY_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from sigverify_cli.main import main; main()", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    # rich folds long lines: compare messages with their line breaks as spaces.
    return proc.returncode or 0, " ".join(out.decode().split()), " ".join(err.decode().split())


@asynccontextmanager
async def database(state: stack.StackState) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(state.database_url, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


async def active_version(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval(
        "SELECT version FROM matching.roll_versions WHERE state = 'active'"))


async def admin_token_id(pool: asyncpg.Pool, state: stack.StackState) -> str:
    digest = hashlib.sha256(state.admin_token().encode()).hexdigest()
    return str(await pool.fetchval("SELECT token_id FROM access.tokens WHERE token_sha256 = $1",
                                   digest))


async def roll_list(state: stack.StackState) -> dict[str, Any]:
    rc, out, err = await cli(state, "roll", "list", "--json")
    assert rc == 0, err
    listed: dict[str, Any] = json.loads(out)
    return listed


async def serving(state: stack.StackState, version: int) -> list[dict[str, Any]]:
    """The live replicas, once each reports serving ``version`` (at its next heartbeat)."""
    for _ in range(50):
        live = [r for r in (await roll_list(state))["replicas"] if r["live"]]
        if live and all(r["serving_version"] == version for r in live):
            return live
        await asyncio.sleep(0.2)
    raise AssertionError(f"replicas not serving roll version {version}: {live}")


def rewritten(source: Path, dest: Path, fix: dict[str, Any] | None = None,
              extra: list[str] | None = None) -> Path:
    """``source`` with ``fix[column](value)`` applied and ``extra`` lines appended."""
    with source.open(newline="", encoding="utf-8") as fh, \
            dest.open("w", newline="", encoding="utf-8") as out:
        reader = csv.DictReader(fh)
        writer = csv.DictWriter(out, fieldnames=list(reader.fieldnames or ()))
        writer.writeheader()
        for row in reader:
            for column, f in (fix or {}).items():
                row[column] = f(row[column])
            writer.writerow(row)
        for line in extra or ():
            out.write(line + "\n")
    return dest


def us_date(iso: str) -> str:
    return f"{iso[5:7]}/{iso[8:10]}/{iso[:4]}" if iso else ""


async def decided_versions(pool: asyncpg.Pool, petition_id: str) -> set[int]:
    return {r["roll_version"] for r in await pool.fetch(
        "SELECT DISTINCT roll_version FROM matching.decisions WHERE petition_id = $1", petition_id)}


async def file_batch(state: stack.StackState, synth: SynthOutput, n: int = 0) -> str:
    """Submit one batch of the synthetic filing under a new petition; wait until verified."""
    pid = h.new_petition_id()
    await h.create_petition(state, pid)
    path, county = synth.batches[n]
    receipt = await h.submit(state, path, pid, county)
    await h.wait_verified(state, pid, receipt.signatures_accepted)
    return pid


# -- refusals --------------------------------------------------------------------------------------

async def test_a_roll_whose_every_row_is_rejected_is_refused_and_the_previous_one_stays_in_use(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput, tmp_path: Path
) -> None:
    async with database(live_stack) as pool:
        before = await active_version(pool)
        voters = await pool.fetchval("SELECT count(*) FROM matching.voters WHERE version = $1",
                                     before)
        # The same voters with American dates: every row is rejected.
        path = rewritten(synth_data.roll_csv, tmp_path / "us-dates.csv",
                         {"birth_date": us_date, "registered_on": us_date})
        with path.open(newline="", encoding="utf-8") as fh:
            first = next(csv.DictReader(fh))
        first_field = "birth_date" if first["birth_date"] else "registered_on"
        rc, out, err = await cli(live_stack, "roll", "load", str(path))
        assert rc != 0
        assert "FAILED_PRECONDITION" in err and "Traceback" not in err + out
        assert f"{loaded_roll:,} of {loaded_roll:,} rows rejected, more than the 1% allowed" in err
        assert f"line 2: {first_field}: not a valid ISO date (YYYY-MM-DD)" in err
        assert f"roll version {before} stays active" in err

        assert await active_version(pool) == before
        refused = await pool.fetchrow(
            "SELECT * FROM matching.roll_versions ORDER BY version DESC LIMIT 1")
        assert refused["state"] == "discarded" and refused["rejected"] == loaded_roll
        assert "rows rejected" in refused["note"]
        assert await pool.fetchval("SELECT count(*) FROM matching.voters WHERE version = $1",
                                   refused["version"]) == 0
        assert await pool.fetchval("SELECT count(*) FROM matching.voters WHERE version = $1",
                                   before) == voters
        entry = await pool.fetchrow(
            "SELECT actor, detail FROM audit.entries WHERE action = 'roll.discarded' "
            "AND subject = $1", f"roll-version-{refused['version']}")
        assert entry is not None and entry["actor"] == await admin_token_id(pool, live_stack)

        # An empty roll (a header, no voters) is refused too.
        empty = tmp_path / "empty.csv"
        empty.write_text(",".join(ROLL_COLUMNS) + "\n", encoding="utf-8")
        rc, _, err = await cli(live_stack, "roll", "load", str(empty))
        assert rc != 0 and "it has no voters" in err
        assert await active_version(pool) == before

        # The matcher still decides with the previous roll: registered signers are found.
        pid = await file_batch(live_stack, synth_data)
        assert await decided_versions(pool, pid) == {before}
        reasons = [r[1] for r in (await h.results(live_stack, pid)).values()]
        assert reasons.count("MATCHED") > len(reasons) // 2


async def test_a_roll_over_max_rejected_is_refused_and_one_within_it_loads(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput, tmp_path: Path
) -> None:
    # 1% of the file's rows, plus one, are unreadable.
    bad = loaded_roll // 100 + 1
    path = rewritten(synth_data.roll_csv, tmp_path / "some-bad.csv",
                     extra=[f"X{i},Ana,,Lopez,,1980-01-01,1 Main St,,Fresno,93701,Fresno,"
                            "MOVED,2010-01-01" for i in range(bad)])
    async with database(live_stack) as pool:
        before = await active_version(pool)
        rc, _, err = await cli(live_stack, "roll", "load", str(path))
        assert rc != 0
        assert f"{bad} of {loaded_roll + bad:,} rows rejected, more than the 1% allowed" in err
        assert f"line {loaded_roll + 2}: status: must be ACTIVE, INACTIVE or CANCELLED" in err
        rc, _, err = await cli(live_stack, "roll", "load", str(path), "--max-rejected", str(bad - 1))
        assert rc != 0 and f"more than the {bad - 1} rows allowed" in err
        assert await active_version(pool) == before

        rc, out, err = await cli(live_stack, "roll", "load", str(path), "--max-rejected", str(bad))
        assert rc == 0, err
        after = await active_version(pool)
        assert after > before
        assert f"roll version {after} active: {loaded_roll:,} voters, {bad} rows rejected" in out
        assert f"version {before} kept for 'sigverify roll rollback'" in out
        assert f"line {loaded_roll + 2}: status: must be ACTIVE, INACTIVE or CANCELLED" in out
        # Progress went to stderr as the load went.
        assert f"roll version {after}: {loaded_roll:,} voters loaded, {bad} rows rejected" in err
        assert "1 of 1 live matcher replica(s) ready" in err


async def test_an_unknown_max_rejected_and_a_file_without_roll_columns_are_refused(
    live_stack: stack.StackState, loaded_roll: int, tmp_path: Path
) -> None:
    rc, _, err = await cli(live_stack, "roll", "load", str(write_roll(tmp_path / "r.csv", 10)),
                           "--max-rejected", "lots")
    assert rc != 0 and "INVALID_ARGUMENT" in err and "max_rejected 'lots'" in err
    path = tmp_path / "batch.csv"
    path.write_text("line,first_name,last_name\n1,A,B\n", encoding="utf-8")
    problem = "batch.csv: roll header lacks column(s): voter_id, middle_name"
    async with database(live_stack) as pool:
        before = await pool.fetchval("SELECT max(version) FROM matching.roll_versions")
        # The CLI checks the header before the upload (exit 2, no version made) ...
        rc, _, err = await cli(live_stack, "roll", "load", str(path))
        assert rc == 2 and err.startswith("error: ") and problem in err, err
        assert await pool.fetchval("SELECT max(version) FROM matching.roll_versions") == before
        # ... and the server still does, for a client of its own.
        async with h.channel(live_stack, "matching") as ch:
            code, details = await _raw_load(ch, path, path.stat().st_size)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and problem in details, details


async def test_a_file_that_is_no_csv_text_is_refused_in_one_line_and_makes_no_version(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput, tmp_path: Path
) -> None:
    """A gzip, a UTF-16 export, a UTF-8 file with one Latin-1 row: the client's check of the
    file failed inside the upload's request stream, which gRPC swallowed: a traceback ending
    in CancelledError, exit 1, and a version discarded as "the load stopped: CancelledError".
    /dev/zero hung. Now each is one error line, exit 2, before any version is made."""
    import gzip

    text = synth_data.roll_csv.read_bytes()
    files = {
        "roll.csv.gz": (gzip.compress(text), "the file is gzip-compressed, not CSV text"),
        "u16.csv": (text.decode().encode("utf-16"), "the file is UTF-16 text, not CSV"),
        "mixed.csv": (text + "Z1,Zoë,,Ng,,1980-01-01,1 Main St,,Fresno,93701,Fresno,ACTIVE,"
                        "2010-01-01\n".encode()
                      + "Z2,José,,Ng,,1980-01-01,1 Main St,,Fresno,93701,Fresno,ACTIVE,"
                        "2010-01-01\n".encode("latin-1"),
                      f"the file mixes encodings: most of it is UTF-8 but line {loaded_roll + 3:,}"),
    }
    async with database(live_stack) as pool:
        before = await pool.fetchval("SELECT max(version) FROM matching.roll_versions")
        active = await active_version(pool)
        for name, (data, problem) in files.items():
            path = tmp_path / name
            path.write_bytes(data)
            rc, out, err = await cli(live_stack, "roll", "load", str(path))
            assert rc == 2, (name, err)
            assert err.startswith("error: ") and problem in err, (name, err)
            assert "Traceback" not in err + out and "CancelledError" not in err + out
        rc, _, err = await asyncio.wait_for(cli(live_stack, "roll", "load", "/dev/zero"), 60)
        assert rc == 2 and "error: /dev/zero: is not a regular file" in err
        assert await pool.fetchval("SELECT max(version) FROM matching.roll_versions") == before
        assert await active_version(pool) == active


async def test_a_file_that_fails_to_read_during_the_upload_ends_it_with_why(
    live_stack: stack.StackState, loaded_roll: int, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file read well when checked and fails half-way (a disk error, or it changed): the
    call is cancelled, so no partial roll is loaded, and the error says why in one line."""
    from collections.abc import Iterator

    from sigverify_cli import main as cli_main
    from sigverify_cli.client import CliError

    path = write_roll(tmp_path / "half.csv", 10)

    def failing(p: Path, encoding: str | None = None) -> Iterator[bytes]:
        yield p.read_bytes()[:200]
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(cli_main, "_file_chunks", failing)
    async with database(live_stack) as pool:
        before = await active_version(pool)
        async with h.channel(live_stack, "matching") as ch:
            with pytest.raises(CliError) as e:
                await upload_roll(ch, path)
        assert str(e.value) == (f"{path}: the file could not be read to its end during the "
                                "upload (Input/output error); the load was abandoned and "
                                "nothing was loaded")
        version = int(await pool.fetchval("SELECT max(version) FROM matching.roll_versions"))
        for _ in range(100):
            row = await pool.fetchrow(
                "SELECT state, note FROM matching.roll_versions WHERE version = $1", version)
            if row["state"] == "discarded":
                break
            await asyncio.sleep(0.1)
        assert row["state"] == "discarded" and "the client abandoned the upload" in row["note"]
        assert await active_version(pool) == before


async def test_a_repeated_or_unknown_roll_column_is_refused_by_name(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput, tmp_path: Path
) -> None:
    """Both used to load: the first last_name used and the second dropped, extra ignored.
    The CLI refuses them before the upload (exit 2, no version made); the server refuses
    them for a client of its own."""
    lines = synth_data.roll_csv.read_text(encoding="utf-8").splitlines()
    async with database(live_stack) as pool:
        before = await active_version(pool)
        for column, problem in (("last_name", "column 'last_name' appears twice in the roll "
                                              "header"),
                                ("extra", "unknown column 'extra' in the roll header")):
            path = tmp_path / f"{column}.csv"
            path.write_text("\n".join([f"{lines[0]},{column}",
                                       *(f"{line},X" for line in lines[1:])]) + "\n",
                            encoding="utf-8")
            newest = await pool.fetchval("SELECT max(version) FROM matching.roll_versions")
            rc, _, err = await cli(live_stack, "roll", "load", str(path))
            assert rc == 2 and err.startswith("error: "), err
            assert f"{column}.csv: {problem}" in err
            assert await pool.fetchval("SELECT max(version) FROM matching.roll_versions") == newest
            async with h.channel(live_stack, "matching") as ch:
                code, details = await _raw_load(ch, path, path.stat().st_size)
            assert code == grpc.StatusCode.INVALID_ARGUMENT, details
            assert f"{column}.csv: {problem}" in details
        assert await active_version(pool) == before


async def test_an_unknown_county_a_future_birth_and_a_nameless_row_count_as_rejected(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput, tmp_path: Path
) -> None:
    """All three used to be loaded as voters."""
    path = rewritten(synth_data.roll_csv, tmp_path / "odd-rows.csv", extra=[
        "X1,Ana,,Lopez,,1980-01-01,1 Main St,,Fresno,93701,Atlantis,ACTIVE,2010-01-01",
        "X2,Ana,,Lopez,,2999-01-01,1 Main St,,Fresno,93701,Fresno,ACTIVE,2010-01-01",
        "V12,,,,,,,,,,Fresno,ACTIVE,2000-01-01"])
    async with database(live_stack) as pool:
        before = await active_version(pool)
        rc, _, err = await cli(live_stack, "roll", "load", str(path), "--max-rejected", "2")
        assert rc == 1 and "FAILED_PRECONDITION" in err, err
        assert f"3 of {loaded_roll + 3:,} rows rejected, more than the 2 rows allowed" in err
        assert (f"line {loaded_roll + 2}: county: unknown county 'Atlantis', not one of the 58 "
                "counties") in err
        assert f"line {loaded_roll + 3}: birth_date: in the future (after the load's date" in err
        assert f"line {loaded_roll + 4}: last_name: missing: the row has no name" in err
        assert await active_version(pool) == before


async def test_a_load_the_client_abandons_leaves_nothing_behind(
    live_stack: stack.StackState, loaded_roll: int, tmp_path: Path
) -> None:
    path = write_roll(tmp_path / "big.csv", CHUNK * 4)
    first_chunk = asyncio.Event()

    def seen(p: matching_pb2.RollProgress, sent: int) -> None:
        if p.rows:
            first_chunk.set()

    async with database(live_stack) as pool:
        before = await active_version(pool)
        async with h.channel(live_stack, "matching") as ch:
            upload = asyncio.create_task(upload_roll(ch, path, on_progress=seen))
            await asyncio.wait_for(first_chunk.wait(), 60)
            upload.cancel()  # as Ctrl-C would
            await asyncio.gather(upload, return_exceptions=True)
        version = int(await pool.fetchval("SELECT max(version) FROM matching.roll_versions"))
        for _ in range(100):
            state = await pool.fetchval(
                "SELECT state FROM matching.roll_versions WHERE version = $1", version)
            if state == "discarded":
                break
            await asyncio.sleep(0.1)
        assert state == "discarded"
        # Why, in words (it was "the load stopped: CancelledError").
        note = await pool.fetchval("SELECT note FROM matching.roll_versions WHERE version = $1",
                                   version)
        assert "the client stopped the upload" in note and "CancelledError" not in note
        assert await pool.fetchval("SELECT count(*) FROM matching.voters WHERE version = $1",
                                   version) == 0
        assert await active_version(pool) == before
    # The lifecycle lock went with the load: the next one goes through.
    async with h.channel(live_stack, "matching") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await upload_roll(ch, write_roll(tmp_path / "small.csv", 10))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "1 of 11 rows rejected" in (e.value.details() or "")


async def _raw_load(ch: grpc.aio.Channel, path: Path, end: int | None
                    ) -> tuple[grpc.StatusCode | None, str]:
    """LoadRoll as a client of its own makes it: the header, the whole file once the server
    answers, then the end announcing ``end`` bytes (None: no end; the stream just stops,
    as gRPC may present a client's Ctrl-C to the server)."""
    go = asyncio.Event()

    async def requests() -> AsyncIterator[matching_pb2.LoadRollRequest]:
        yield matching_pb2.LoadRollRequest(header=matching_pb2.RollHeader(source=path.name))
        await go.wait()
        yield matching_pb2.LoadRollRequest(data=path.read_bytes())
        if end is not None:
            yield matching_pb2.LoadRollRequest(end=matching_pb2.RollEnd(bytes=end))

    try:
        async for _ in matching_pb2_grpc.MatchingServiceStub(ch).LoadRoll(requests(),
                                                                           timeout=120):
            go.set()
    except grpc.aio.AioRpcError as e:
        return e.code(), e.details() or ""
    return None, ""


async def test_an_upload_that_stops_before_its_end_loads_nothing(
    live_stack: stack.StackState, loaded_roll: int, tmp_path: Path
) -> None:
    """The whole file arrives, but not its end: nothing is loaded, the version is discarded
    and the roll in use stays. (Before the end message, a stream that stopped was the end of
    the file: a client's Ctrl-C could load and activate the part sent so far.) An end that
    announces another length is refused too; with the right one the file loads."""
    path = write_roll(tmp_path / "whole.csv", 150)  # its one broken row within 1 %
    size = path.stat().st_size
    async with database(live_stack) as pool:
        before = await active_version(pool)
        async with h.channel(live_stack, "matching") as ch:
            for end, says in ((None, "the upload stopped before the end of the file"),
                              (size + 1, f"announced {size + 1:,} bytes of the file, "
                                         f"{size:,} arrived")):
                code, details = await _raw_load(ch, path, end)
                assert code == grpc.StatusCode.INVALID_ARGUMENT and says in details, details
                version = int(await pool.fetchval(
                    "SELECT max(version) FROM matching.roll_versions"))
                row = await pool.fetchrow(
                    "SELECT state, note FROM matching.roll_versions WHERE version = $1", version)
                assert row["state"] == "discarded" and says in row["note"], dict(row)
                assert await active_version(pool) == before
            assert await _raw_load(ch, path, size) == (None, "")
        assert await active_version(pool) != before
        rc, _out, err = await cli(live_stack, "roll", "activate", str(before))
        assert rc == 0, err


# -- list, activate, rollback ----------------------------------------------------------------------

async def test_roll_list_activate_and_rollback(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput, tmp_path: Path
) -> None:
    async with database(live_stack) as pool:
        admin = await admin_token_id(pool, live_stack)
        first = await active_version(pool)
        rc, out, err = await cli(live_stack, "roll", "load", str(synth_data.roll_csv))
        assert rc == 0, err
        second = await active_version(pool)
        rc, out, err = await cli(live_stack, "roll", "load", str(synth_data.roll_csv))
        assert rc == 0, err
        third = await active_version(pool)
        assert first < second < third

        listed = await roll_list(live_stack)
        states = {v["version"]: v for v in listed["versions"]}
        assert states[third]["state"] == "active" and states[third]["voters"] == loaded_roll
        assert states[third]["source"] == synth_data.roll_csv.name
        assert states[third]["loaded_by"] == admin and states[third]["activated_at"]
        # The previous version is kept for a rollback; the one before it is retired.
        assert states[second]["state"] == "ready" and states[second]["deactivated_at"]
        assert states[first]["state"] == "retired"
        kept = {r["version"]: r["n"] for r in await pool.fetch(
            "SELECT version, count(*) AS n FROM matching.voters GROUP BY version")}
        assert kept == {second: loaded_roll, third: loaded_roll}
        replica = (await serving(live_stack, third))[0]
        assert third in replica["built_versions"]
        rc, out, _ = await cli(live_stack, "roll", "list")
        assert rc == 0 and "matcher replicas" in out and replica["replica_id"] in out

        rc, out, err = await cli(live_stack, "roll", "rollback")
        assert rc == 0, err
        assert f"roll version {second} active ({loaded_roll:,} voters)" in out
        assert await active_version(pool) == second
        pid = await file_batch(live_stack, synth_data, 1)
        assert await decided_versions(pool, pid) == {second}

        # Forward again: the version rolled back from is kept.
        rc, out, err = await cli(live_stack, "roll", "activate", str(third))
        assert rc == 0, err
        assert await active_version(pool) == third
        listed = await roll_list(live_stack)
        assert {v["version"]: v["state"] for v in listed["versions"]}[second] == "ready"
        await serving(live_stack, third)

        rc, _, err = await cli(live_stack, "roll", "activate", str(first))
        assert rc != 0 and f"roll version {first} is retired: its rows are no longer kept" in err
        rc, _, err = await cli(live_stack, "roll", "activate", str(third))
        assert rc != 0 and "already the active version" in err
        rc, _, err = await cli(live_stack, "roll", "activate", "999999")
        assert rc != 0 and "NOT_FOUND" in err

        entries = await pool.fetch(
            "SELECT actor, subject, detail FROM audit.entries WHERE action = 'roll.activated' "
            "ORDER BY id DESC LIMIT 2")
        assert [e["subject"] for e in entries] == [f"roll-version-{third}",
                                                    f"roll-version-{second}"]
        assert {e["actor"] for e in entries} == {admin}
        assert [json.loads(e["detail"])["reason"] for e in entries] == ["activated", "rollback"]


async def test_a_version_is_not_activated_while_a_live_matcher_lacks_its_index(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput
) -> None:
    """A replica that heartbeats but never builds the new index holds the activation back
    until the timeout; the load then fails, the version kept, the active one unchanged."""
    async with database(live_stack) as pool:
        before = await active_version(pool)
        async with h.slow_replica(pool, before) as slow:
            started = time.monotonic()
            rc, _, err = await cli(live_stack, "roll", "load", str(synth_data.roll_csv),
                                   "--timeout", "5")
            assert rc != 0 and "FAILED_PRECONDITION" in err
            kept = int(await pool.fetchval("SELECT max(version) FROM matching.roll_versions"))
            assert (f"roll version {kept} was not activated: after 5s matcher replica(s) {slow} "
                    "had not built its index") in err
            assert "1 of 2 live matcher replica(s) ready" in err
            assert time.monotonic() - started >= 5
            assert await active_version(pool) == before
            assert await pool.fetchval("SELECT state FROM matching.roll_versions WHERE version = $1",
                                       kept) == "ready"
            failed = await pool.fetchrow(
                "SELECT detail FROM audit.entries WHERE action = 'roll.activation_failed' AND "
                "subject = $1", f"roll-version-{kept}")
            assert failed is not None and slow in failed["detail"]
        # Without the slow replica the kept version can be activated.
        rc, _out, err = await cli(live_stack, "roll", "activate", str(kept))
        assert rc == 0, err
        assert await active_version(pool) == kept


async def test_only_admins_may_load_list_or_switch_rolls(
    live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput
) -> None:
    async with database(live_stack) as pool:
        before = await active_version(pool)
        for role, county in (("ops", ""), ("reviewer", ""), ("clerk", "Kern")):
            token = await make_token(live_stack, role, county)
            async with h.channel(live_stack, "matching", token) as ch:
                stub = matching_pb2_grpc.MatchingServiceStub(ch)
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await upload_roll(ch, synth_data.roll_csv)
                assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
                # LoadRoll itself refuses them too (a stream that sends nothing until it ends,
                # so that the status seen is the server's, not a failed send's).
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    async for _ in stub.LoadRoll(_silent(), timeout=10):
                        pass
                assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await stub.ListRolls(matching_pb2.ListRollsRequest(), timeout=10)
                assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    async for _ in stub.ActivateRoll(
                            matching_pb2.ActivateRollRequest(previous=True), timeout=10):
                        pass
                assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
            rc, _, err = await cli(live_stack, "roll", "rollback", token=token)
            assert rc != 0 and f"role {role} may not call ActivateRoll" in err
        assert await active_version(pool) == before
        # Refusals reach the audit log aggregated, at the next flush (every second here).
        wanted = {"LoadRoll", "ListRolls", "ActivateRoll"}
        for _ in range(100):
            denied = await pool.fetch(
                "SELECT subject FROM audit.entries WHERE action = 'access.denied' AND subject "
                "LIKE '%MatchingService/%Roll%'")
            if {d["subject"].rsplit("/", 1)[-1] for d in denied} >= wanted:
                break
            await asyncio.sleep(0.1)
        assert {d["subject"].rsplit("/", 1)[-1] for d in denied} >= wanted


async def _silent() -> AsyncIterator[matching_pb2.LoadRollRequest]:
    await asyncio.sleep(3600)
    yield matching_pb2.LoadRollRequest()


# -- the direct load (fixtures, bench) in a scratch database ---------------------------------------

@pytest.fixture
async def scratch(live_stack: stack.StackState) -> AsyncIterator[asyncpg.Pool]:
    name = f"rolls_{uuid.uuid4().hex[:8]}"
    base = live_stack.database_url.rsplit("/", 1)[0]
    admin = await asyncpg.connect(f"{base}/postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    pool = await asyncpg.create_pool(f"{base}/{name}", min_size=1, max_size=2)
    try:
        await db.migrate(pool, "matching", "sigverify_matching")
        await db.migrate(pool, audit.SCHEMA, audit.MIGRATIONS)
        yield pool
    finally:
        await pool.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def write_roll(path: Path, n: int, prefix: str = "V") -> Path:
    with path.open("w", encoding="utf-8") as f:
        f.write(",".join(ROLL_COLUMNS) + "\n")
        for i in range(n):
            f.write(f"{prefix}{i},Ana,,Lopez,,1980-01-01,{i} Main St,,Fresno,93701,fresno,ACTIVE,"
                    "2010-01-01\n")
        f.write("broken,row\n")
    return path


async def test_versions_replace_each_other_and_a_failed_load_leaves_nothing(
    scratch: asyncpg.Pool, tmp_path: Path
) -> None:
    n = CHUNK * 2 + 123  # several COPY chunks
    first = await load_roll(scratch, write_roll(tmp_path / "a.csv", n))
    assert first.rows == n and first.errors == [(n + 2, "(row)", f"expected {len(ROLL_COLUMNS)} "
                                                "fields, found 2")]
    second = await load_roll(scratch, write_roll(tmp_path / "b.csv", n, "W"))
    assert second.previous == first.version

    async def states() -> dict[int, tuple[str, int]]:
        return {r["version"]: (r["state"], r["rows"]) for r in
                await scratch.fetch("SELECT * FROM matching.roll_versions")}

    assert await states() == {first.version: ("ready", n), second.version: ("active", n)}
    assert await scratch.fetchval("SELECT count(*) FROM matching.voters WHERE version = $1 "
                                  "AND voter_id LIKE 'W%' AND county = 'Fresno'", second.version) == n

    def fail_after_first_chunk(rows: int) -> None:
        raise RuntimeError(f"disk full after {rows} rows")

    with pytest.raises(RuntimeError, match="disk full"):
        await load_roll(scratch, write_roll(tmp_path / "c.csv", n, "X"), fail_after_first_chunk)
    assert await scratch.fetchval("SELECT count(*) FROM matching.voters WHERE voter_id LIKE 'X%'") == 0
    failed = await scratch.fetchrow("SELECT * FROM matching.roll_versions ORDER BY version DESC "
                                    "LIMIT 1")
    # Said in words, not by the exception's class.
    assert (failed["state"], failed["note"]) == (
        "discarded", "the load stopped: an unexpected error in the matching service (its log "
        "names the kind)")
    assert (await states())[second.version] == ("active", n)

    # The next activation retires the version before the previous one, and its rows go.
    third = await load_roll(scratch, write_roll(tmp_path / "d.csv", n, "Y"))
    assert (await states())[first.version] == ("retired", n)
    kept = {r["version"]: r["n"] for r in await scratch.fetch(
        "SELECT version, count(*) AS n FROM matching.voters GROUP BY version")}
    assert kept == {second.version: n, third.version: n}
    # Activations are recorded with the instants they took effect and ended.
    windows = await scratch.fetch("SELECT version, activated_at, deactivated_at FROM "
                                  "matching.roll_activations ORDER BY id")
    assert [w["version"] for w in windows] == [first.version, second.version, third.version]
    assert windows[0]["deactivated_at"] == windows[1]["activated_at"]
    assert windows[2]["deactivated_at"] is None
