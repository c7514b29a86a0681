"""``redis+sentinel://`` URLs: what they name, what is refused (naming ``BUS_URL``, never
quoting a password), and a service that stops with exit 2 on one it cannot use."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.bus import TransportConfigError, create_transport
from common.bus.redis_sentinel import SentinelAddress, SentinelTransport
from common.settings import BaseServiceSettings, load_settings, redact_url
from tests.support.processes import assert_config_failure, run_to_exit, service_env


def test_sentinels_master_database_and_both_passwords_come_from_the_url() -> None:
    address = SentinelAddress.parse(
        "redis+sentinel://app:s%40cret@s1:26380,s2,[::1]:5000/bus/3"
        "?sentinel_username=watch&sentinel_password=wat%26ch")
    assert address.sentinels == (("s1", 26380), ("s2", 26379), ("::1", 5000))
    assert (address.master, address.db) == ("bus", 3)
    assert (address.username, address.password) == ("app", "s@cret")
    assert (address.sentinel_username, address.sentinel_password) == ("watch", "wat&ch")
    assert "s@cret" not in repr(address)
    assert "wat&ch" not in repr(address)


def test_the_database_and_the_credentials_are_optional() -> None:
    for url in ("redis+sentinel://s1/bus", "redis+sentinel://s1/bus/"):
        address = SentinelAddress.parse(url)
        assert (address.master, address.db, address.password) == ("bus", 0, None)
    assert SentinelAddress.parse("redis+sentinel://:pw@s1/bus").password == "pw"


@pytest.mark.parametrize(("url", "reason"), [
    ("redis+sentinel://:hunter2@s1:26379", "names no master"),
    ("redis+sentinel://:hunter2@s1:26379/", "names no master"),
    ("redis+sentinel://:hunter2@s1/bus/zero", "database must be a number"),
    ("redis+sentinel://:hunter2@s1/bus/0/more", "more than"),
    ("redis+sentinel://:hunter2@s1:port/bus", "port must be a number"),
    ("redis+sentinel://:hunter2@s1:0/bus", "port must be a number"),
    ("redis+sentinel://:hunter2@s1,,s2/bus", "empty Sentinel"),
    ("redis+sentinel://:hunter2@/bus", "empty Sentinel"),
    ("redis+sentinel://:hunter2@:26379/bus", "without a host"),
    ("redis+sentinel://:hunter2@s1/bus?sentinel_pasword=hunter2", "unknown option"),
])
def test_a_bad_url_is_a_config_error_naming_bus_url_and_no_secret(url: str, reason: str) -> None:
    settings = load_settings(BaseServiceSettings, bus_url=url)
    with pytest.raises(TransportConfigError, match=reason) as caught:
        create_transport(settings)
    assert str(caught.value).startswith("BUS_URL")
    assert "hunter2" not in str(caught.value)


def test_the_registry_builds_a_sentinel_transport_with_the_bus_timeouts() -> None:
    settings = load_settings(BaseServiceSettings, bus_timeout_s=4,
                             bus_url="redis+sentinel://:pw@s1,s2:1/bus/2?sentinel_password=sp")
    transport = create_transport(settings)
    assert isinstance(transport, SentinelTransport)
    kwargs = transport.client.connection_pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["db"], kwargs["password"]) == (4, 2, "pw")
    assert kwargs["retry"].get_retries() == 0  # a retried XADD could write twice
    sentinels = [s.connection_pool.connection_kwargs for s in transport._sentinel.sentinels]
    assert [(s["host"], s["port"], s["password"]) for s in sentinels] == [
        ("s1", 26379, "sp"), ("s2", 1, "sp")]
    assert sentinels[0]["socket_timeout"] == 4
    assert "pw" not in repr(transport.config)


def test_passwords_in_a_sentinel_url_are_hidden_from_logs() -> None:
    shown = redact_url("redis+sentinel://app:s3cret@s1,s2/bus/0?sentinel_password=w4tch")
    assert shown == "redis+sentinel://app:***@s1,s2/bus/0?sentinel_password=***"


async def test_a_service_given_a_bad_sentinel_url_exits_2_naming_bus_url(tmp_path: Path) -> None:
    env = service_env(BUS_URL="redis+sentinel://:hunter2@127.0.0.1:1/", DETECTOR_METRICS_PORT="0")
    code, stderr = await run_to_exit("detector", env, tmp_path)
    assert_config_failure(code, stderr, "detector", "BUS_URL")
    assert "hunter2" not in stderr
