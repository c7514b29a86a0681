"""The transports the bus tests run on: fakeredis, a real Redis-compatible server and a real
Kafka-protocol broker (tansu) for the contract; the first two for Redis-only mechanics."""

from __future__ import annotations

from collections.abc import AsyncIterator

import fakeredis
import pytest

from common.bus import Transport
from common.bus.redis_streams import RedisConfig, RedisTransport
from tests.support.bus import kafka_transport
from tests.support.servers import KafkaBroker, RedisServer


async def _transport(request: pytest.FixtureRequest) -> Transport:
    if request.param == "fakeredis":
        return RedisTransport(RedisConfig("redis://fake"), client=fakeredis.FakeAsyncRedis())
    if request.param == "real":
        server: RedisServer = request.getfixturevalue("redis_server")
        return RedisTransport(RedisConfig(server.url, timeout_s=3))
    broker: KafkaBroker = request.getfixturevalue("kafka_broker")
    return kafka_transport(broker)


@pytest.fixture(params=["fakeredis", "real", "kafka"])
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[Transport]:
    bus = await _transport(request)
    await bus.start()
    yield bus
    await bus.close()


@pytest.fixture(params=["fakeredis", "real"])
async def redis_transport(request: pytest.FixtureRequest) -> AsyncIterator[RedisTransport]:
    bus = await _transport(request)
    assert isinstance(bus, RedisTransport)
    await bus.start()
    yield bus
    await bus.close()
