"""The Sentinel override (infra/docker-compose.sentinel.yml): valid on either stack, and one
switch away like Kafka: a replica and three Sentinels added, the services' BUS_URL naming
those Sentinels and the master they watch, and nothing else about the services changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from common.bus.redis_sentinel import SentinelAddress
from tests.support.deploy import (
    APP_SERVICES,
    SENTINEL_COMBOS,
    compose,
    environment,
    render,
    write_env_file,
)

SENTINELS = ("sentinel-1", "sentinel-2", "sentinel-3")
ADDED = {"redis-replica", *SENTINELS}


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    env_file = write_env_file(tmp_path_factory.mktemp("env") / ".env")
    return {combo: render(combo, env_file)
            for combo in ("dev", "prod", *SENTINEL_COMBOS)}


@pytest.mark.parametrize("combo", SENTINEL_COMBOS)
def test_config_is_valid(combo: str, tmp_path: Path) -> None:
    env_file = write_env_file(tmp_path / ".env", all_settings=True)
    result = compose(combo, env_file, "config", "-q")
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr


@pytest.mark.parametrize("base", ["dev", "prod"])
def test_sentinel_is_one_switch_away(base: str, configs: dict[str, dict[str, Any]]) -> None:
    plain, ha = configs[base]["services"], configs[f"{base}+sentinel"]["services"]
    assert set(ha) - set(plain) == ADDED
    for name in APP_SERVICES:
        before, after = dict(plain[name]), dict(ha[name])
        env_before, env_after = before.pop("environment"), after.pop("environment")
        assert {k for k in env_after if env_after[k] != env_before.get(k)} == {"BUS_URL"}
        assert after.pop("depends_on") == {
            **before.pop("depends_on"),
            **{added: {"condition": "service_healthy"} for added in ADDED}}
        assert before == after, name
        address = SentinelAddress.parse(str(env_after["BUS_URL"]))
        assert address.sentinels == tuple((s, 26379) for s in SENTINELS)
        assert (address.master, address.db) == ("bus", 0)


@pytest.mark.parametrize("combo", SENTINEL_COMBOS)
def test_the_replica_and_the_sentinels_watch_the_master(
        combo: str, configs: dict[str, dict[str, Any]]) -> None:
    config = configs[combo]
    services = config["services"]
    master = " ".join(services["redis"]["command"])
    replica = " ".join(services["redis-replica"]["command"])
    for command in (master, replica):
        assert "--appendonly yes" in command
    assert "--replicaof redis 6379" in replica
    assert "--replica-announce-ip redis-replica" in replica
    assert "--replica-announce-ip redis" in master
    for name in SENTINELS:
        sentinel = services[name]
        script = " ".join(sentinel["command"])
        # Two of the three must agree that the master is down, as a majority must to
        # elect the one that fails it over.
        assert "sentinel monitor bus redis 6379 2" in script
        assert "--sentinel" in script
        assert environment(sentinel)["SENTINEL_HOSTNAME"] == name
        assert sentinel["volumes"] == [f"{name}-data:/data:rw"]
        assert sentinel["depends_on"] == {"redis": {"condition": "service_healthy"}}
    for name in ADDED:
        service = services[name]
        assert service["healthcheck"]["test"][0] == "CMD-SHELL", name
        assert not service.get("ports"), name
        assert service["restart"] == "unless-stopped", name
        assert service["logging"]["options"]["max-size"], name
        assert set(service["deploy"]["resources"]["limits"]) == {"cpus", "memory"}, name
    assert services["redis-replica"]["volumes"] == ["redis-replica-data:/data:rw"]
    assert {f"{name}-data" for name in SENTINELS} | {"redis-replica-data"} <= set(
        config["volumes"])
