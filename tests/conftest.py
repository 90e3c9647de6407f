"""A real SigVerify stack for the integration and fault tests (one per session): real
PostgreSQL, the real tansu broker, the four services as processes.

PostgreSQL: ``SIGVERIFY_TEST_DATABASE_URL`` if set; else a fresh database on the local
server at 127.0.0.1:5432 when one answers (unless ``SIGVERIFY_TEST_EMBEDDED_PG=1``); else
the embedded server from the wheel, as on a machine with no PostgreSQL.
The broker is always a tansu started for the session.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from sigverify.matching.v1 import matching_pb2, matching_pb2_grpc
from sigverify_cli import credentials, stack
from sigverify_cli.main import upload_roll
from sigverify_cli.synth import SynthOutput, SynthSpec, generate

LOCAL_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
#: How often the session's services write refused calls to the audit log (60 s by default).
REFUSAL_AUDIT_SECONDS = "1"


def _local_server_answers() -> bool:
    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(LOCAL_ADMIN_URL, timeout=3)
        except (TimeoutError, OSError, asyncpg.PostgresError):
            return False
        await conn.close()
        return True
    return asyncio.run(probe())


def _drop_database(admin_url: str, name: str) -> None:
    async def drop() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
    asyncio.run(drop())


#: The session stack's settings beyond the defaults (a service restarted by a test gets them
#: again): a full count keeps few signatures in flight, so that test_statutory sees it stop at
#: the requirement (AB 2219) with signatures left unverified; the first match model waits for
#: 500 signatures, not 1,000 (the session files 600).
SERVICE_ENV: dict[str, dict[str, str]] = {"intake": {"FULL_COUNT_IN_FLIGHT": "100"},
                                          "matching": {"MATCH_TRAIN_MIN": "500"}}


@pytest.fixture(scope="session")
def stack_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sigverify-home")


@pytest.fixture(scope="session")
def live_stack(stack_home: Path) -> Iterator[stack.StackState]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    created_db = ""
    if os.environ.get("SIGVERIFY_TEST_DATABASE_URL"):
        env["DATABASE_URL"] = os.environ["SIGVERIFY_TEST_DATABASE_URL"]
    elif os.environ.get("SIGVERIFY_TEST_EMBEDDED_PG") != "1" and _local_server_answers():
        created_db = f"sigverify_test_{uuid.uuid4().hex[:10]}"
        stack.ensure_database(LOCAL_ADMIN_URL, created_db)
        env["DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:5432/{created_db}"
    # Refused calls reach the audit log within a second (services started or restarted by any
    # test read it from this process's environment).
    mp = pytest.MonkeyPatch()
    mp.setenv("REFUSAL_AUDIT_SECONDS", REFUSAL_AUDIT_SECONDS)
    try:
        state = stack.up(stack_home, env, lambda m: None, service_extra_env=SERVICE_ENV)
        yield state
    finally:
        stack.down(stack_home, lambda m: None)
        mp.undo()
        if created_db:
            _drop_database(LOCAL_ADMIN_URL, created_db)


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> SynthOutput:
    spec = SynthSpec(voters=8000, signatures=600, batch_size=150, seed=11,
                     counties=("Kern", "Alameda", "Orange"))
    return generate(tmp_path_factory.mktemp("synth"), spec)


@pytest.fixture(scope="session")
def loaded_roll(live_stack: stack.StackState, synth_data: SynthOutput) -> int:
    """The synthetic roll loaded as an admin does (LoadRoll): active once the matcher serves it;
    then the match model learned as in production, from signatures received: the synthetic
    batches are filed as a petition of their own, and an admin's TrainModel fixes the model
    every test of the session decides with (learned from exactly those signatures)."""
    async def load() -> int:
        async with credentials.open_channel(live_stack.addr("matching"),
                                            live_stack.admin_token()) as ch:
            rows = (await upload_roll(ch, synth_data.roll_csv, timeout=120)).rows
        from tests.integration import helpers as h

        petition = "model-training"
        await h.create_petition(live_stack, petition)
        total = 0
        for path, county in synth_data.batches:
            total += (await h.submit(live_stack, path, petition, county)).signatures_accepted
        await h.wait_verified(live_stack, petition, total, timeout=240)
        async with credentials.open_channel(live_stack.addr("matching"),
                                            live_stack.admin_token()) as ch:
            await matching_pb2_grpc.MatchingServiceStub(ch).TrainModel(
                matching_pb2.TrainModelRequest(max_signatures=total), timeout=300)
        return rows
    return asyncio.run(load())
