"""The registry: ``BUS_URL``'s scheme picks a backend, which builds its config from the
service settings; the settings accept exactly the schemes registered."""

from __future__ import annotations

import pytest

from common.bus import (
    Record,
    TransportConfigError,
    create_transport,
    register_transport,
    registry,
    schemes,
)
from common.bus.kafka.transport import KafkaTransport
from common.bus.redis_streams import RedisTransport
from common.settings import BaseServiceSettings, GatewaySettings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def registry_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """Schemes registered by a test are gone after it."""
    monkeypatch.setattr(registry, "_BACKENDS", dict(registry._BACKENDS))


def service_settings(url: str) -> BaseServiceSettings:
    return load_settings(BaseServiceSettings, bus_url=url, bus_timeout_s=4)


def test_the_scheme_picks_the_backend_and_the_settings_its_config() -> None:
    redis_bus = create_transport(service_settings("redis://localhost:1/0"))
    assert isinstance(redis_bus, RedisTransport)
    assert (redis_bus.config.url, redis_bus.config.timeout_s) == ("redis://localhost:1/0", 4)
    kafka_bus = create_transport(service_settings("kafka://localhost:1"))
    assert isinstance(kafka_bus, KafkaTransport)
    assert (kafka_bus.config.servers, kafka_bus.config.timeout_s) == (("localhost:1",), 4)


def test_an_unknown_scheme_names_bus_url_and_lists_the_registered_ones() -> None:
    register_transport("memo", "tests.support.bus", "fake_redis_transport")
    with pytest.raises(SettingsError, match="BUS_URL") as failure:
        load_settings(GatewaySettings, bus_url="nats://localhost")
    message = str(failure.value)
    assert "'nats'" in message
    assert all(repr(scheme) in message for scheme in ("kafka", "memo", "redis", "unix"))


def test_a_scheme_registered_at_run_time_is_accepted_and_served() -> None:
    with pytest.raises(SettingsError, match="BUS_URL"):
        load_settings(GatewaySettings, bus_url="memo://anything")
    register_transport("memo", "tests.support.bus", "fake_redis_transport")
    assert "memo" in schemes()
    settings = load_settings(GatewaySettings, bus_url="memo://anything")
    transport = create_transport(settings)
    assert isinstance(transport, RedisTransport)


async def test_a_transport_from_a_registered_scheme_works() -> None:
    register_transport("memo", "tests.support.bus", "fake_redis_transport")
    transport = create_transport(service_settings("memo://anything"))
    await transport.publish([Record("alerts", "k", b"x")])
    assert [d.payload for d in await transport.broadcast_reader("alerts").backlog(5)] == [b"x"]
    await transport.close()


def test_create_transport_refuses_a_scheme_nobody_registered() -> None:
    register_transport("memo", "tests.support.bus", "fake_redis_transport")
    settings = service_settings("memo://anything")  # accepted while registered...
    del registry._BACKENDS["memo"]  # ...and then gone
    with pytest.raises(TransportConfigError, match="'memo' is not supported"):
        create_transport(settings)


def test_a_backend_whose_module_is_missing_says_what_to_install() -> None:
    register_transport("nats", "no_such_bus_module", "from_settings", extra="nats")
    with pytest.raises(TransportConfigError, match=r"needs no_such_bus_module.*\[nats\]"):
        create_transport(service_settings("nats://localhost"))
