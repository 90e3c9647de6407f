"""The roll lifecycle's access rows and the matcher's roll settings."""

from __future__ import annotations

import pytest

from sigverify_common import access
from sigverify_common.access import Role
from sigverify_common.errors import ConfigError
from sigverify_matching.config import Config

BASE = {"DATABASE_URL": "postgresql://x/y", "KAFKA_BOOTSTRAP_SERVERS": "k:9092",
        "GRPC_PORT": "1", "METRICS_PORT": "2"}


@pytest.mark.parametrize("rpc", ["LoadRoll", "ListRolls", "ActivateRoll"])
def test_only_admins_may_manage_the_roll(rpc: str) -> None:
    method = f"/{access.MATCHING}/{rpc}"
    assert method in access.POLICY
    assert {r for r in Role if access.permits(method, r)} == {Role.ADMIN}


def test_an_admin_only_row_is_not_widened_by_its_service_wildcard(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(access.POLICY, f"/{access.MATCHING}/*", frozenset({Role.REVIEWER}))
    assert not access.permits(f"/{access.MATCHING}/LoadRoll", Role.REVIEWER)
    assert access.permits(f"/{access.MATCHING}/SomethingElse", Role.REVIEWER)


def test_roll_settings_have_defaults_and_are_checked() -> None:
    c = Config.from_env(BASE)
    assert c.roll.replica_id and c.roll.heartbeat_seconds < c.roll.stale_seconds
    assert c.roll.activation_timeout_seconds == 900
    c = Config.from_env({**BASE, "MATCHING_REPLICA_ID": "matching-0",
                         "ROLL_ACTIVATION_TIMEOUT_SECONDS": "60"})
    assert (c.roll.replica_id, c.roll.activation_timeout_seconds) == ("matching-0", 60)
    with pytest.raises(ConfigError, match="ROLL_HEARTBEAT_SECONDS"):
        Config.from_env({**BASE, "ROLL_HEARTBEAT_SECONDS": "20"})
    with pytest.raises(ConfigError, match="ROLL_ACTIVATION_TIMEOUT_SECONDS"):
        Config.from_env({**BASE, "ROLL_ACTIVATION_TIMEOUT_SECONDS": "0"})
