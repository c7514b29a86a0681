"""One suite for the bus contract, run against fakeredis, a real Redis-compatible server and
a real Kafka-protocol broker (tansu). Tests of Redis-only mechanics (trimming, claiming,
socket timeouts) use ``redis_transport``; Kafka-only ones are in ``test_kafka_transport``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import fakeredis
import pytest
import redis.asyncio as redis

from common.bus import (
    BusUnavailable,
    ConsumerLag,
    GroupConsumer,
    Retention,
    Transport,
    TransportConfigError,
    create_transport,
)
from common.bus.kafka.transport import KafkaTransport
from common.bus.redis_streams import RedisTransport
from tests.support.bus import crash, drain, kafka_transport, records
from tests.support.servers import KafkaBroker, RedisServer

STREAMS = ["ticks.0", "ticks.1"]


async def _transport(request: pytest.FixtureRequest) -> Transport:
    if request.param == "fakeredis":
        return RedisTransport("redis://fake", client=fakeredis.FakeAsyncRedis())
    if request.param == "real":
        server: RedisServer = request.getfixturevalue("redis_server")
        return RedisTransport(server.url, timeout_s=3)
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


async def settled_lag(consumer: GroupConsumer, ready: Callable[[dict[str, ConsumerLag]], bool]
                      ) -> dict[str, ConsumerLag]:
    """Lag once it shows what the test did: Kafka reports a partition's end from the last
    fetch of it, which trails a publish by one fetch."""
    deadline = time.monotonic() + 5
    while True:
        lags = await consumer.lag()
        if ready(lags) or time.monotonic() > deadline:
            return lags
        await asyncio.sleep(0.05)


async def test_published_entries_are_delivered_once_in_order(transport: Transport) -> None:
    await transport.publish(records("ticks.0", 5) + records("ticks.1", 3))
    consumer = transport.group_consumer("g", "c1", STREAMS, rebuild_s=60, claim_min_idle_s=30)
    got = await drain(consumer, 8)
    by_stream = {s: [d.payload for d in got if d.stream == s] for s in STREAMS}
    assert by_stream == {"ticks.0": [f"m{i}".encode() for i in range(5)],
                         "ticks.1": [b"m0", b"m1", b"m2"]}
    assert not any(d.replay for d in got)
    await consumer.ack(got)
    assert await consumer.fetch(100, 50) == []


async def test_unacknowledged_entries_come_back_and_acknowledged_ones_replay(
        transport: Transport) -> None:
    await transport.publish(records("ticks.0", 6))
    first = transport.group_consumer("g", "c1", STREAMS, rebuild_s=60, claim_min_idle_s=30)
    got = await drain(first, 6)
    await first.ack(got[:4])
    await crash(first)  # with two entries in hand
    await transport.publish(records("ticks.0", 2, start=6))

    second = transport.group_consumer("g", "c1", STREAMS, rebuild_s=60, claim_min_idle_s=30)
    again = await drain(second, 8)
    replayed = [d.payload for d in again if d.replay]
    live = [d.payload for d in again if not d.replay]
    assert replayed == [b"m0", b"m1", b"m2", b"m3"]
    assert live == [b"m4", b"m5", b"m6", b"m7"]
    await second.ack(again)
    await second.ack(again)  # idempotent
    assert all(d.acked for d in again if not d.replay)
    assert not any(d.acked for d in again if d.replay)
    await crash(second)
    third = transport.group_consumer("g", "c1", STREAMS, rebuild_s=60, claim_min_idle_s=30)
    assert [d.replay for d in await drain(third, 8)] == [True] * 8


async def test_replay_is_limited_to_the_rebuild_span(transport: Transport) -> None:
    await transport.publish(records("ticks.0", 3))
    consumer = transport.group_consumer("g", "c1", STREAMS, rebuild_s=60, claim_min_idle_s=30)
    await consumer.ack(await drain(consumer, 3))
    await asyncio.sleep(0.3)
    await transport.publish(records("ticks.0", 2, start=3))
    await consumer.ack(await drain(consumer, 2))
    await crash(consumer)
    restarted = transport.group_consumer("g", "c1", STREAMS, rebuild_s=0.2,
                                         claim_min_idle_s=30)
    assert [d.payload for d in await drain(restarted, 2)] == [b"m3", b"m4"]


async def test_entries_of_a_dead_consumer_are_claimed_when_idle(
        redis_transport: RedisTransport) -> None:
    await redis_transport.publish(records("ticks.1", 3))
    dead = redis_transport.group_consumer("g", "dead", STREAMS, rebuild_s=60, claim_min_idle_s=30)
    assert len(await drain(dead, 3)) == 3
    heir = redis_transport.group_consumer("g", "heir", STREAMS, rebuild_s=60, claim_min_idle_s=0.1)
    await asyncio.sleep(0.2)
    claimed = await drain(heir, 3)
    assert sorted(d.payload for d in claimed) == [b"m0", b"m1", b"m2"]
    await heir.ack(claimed)
    assert await heir.fetch(10, 50) == []


async def test_group_creation_tolerates_an_existing_group(redis_transport: RedisTransport) -> None:
    one = redis_transport.group_consumer("g", "a", STREAMS, rebuild_s=1, claim_min_idle_s=30)
    two = redis_transport.group_consumer("g", "b", STREAMS, rebuild_s=1, claim_min_idle_s=30)
    assert await one.fetch(10, 10) == []
    assert await two.fetch(10, 10) == []
    await redis_transport.publish(records("ticks.0", 1))
    assert len(await one.fetch(10, 200)) + len(await two.fetch(10, 10)) == 1


async def test_max_len_retention_trims_the_stream(redis_transport: RedisTransport) -> None:
    await redis_transport.declare(["alerts"], Retention(max_len=100))
    for start in range(0, 1000, 100):
        await redis_transport.publish(records("alerts", 100, start))
    length = await redis_transport.client.xlen("alerts")
    assert 100 <= length < 300


async def test_max_age_retention_trims_old_entries(redis_transport: RedisTransport) -> None:
    await redis_transport.declare(["ticks.0"], Retention(max_age_s=0.5))
    await redis_transport.publish(records("ticks.0", 500))
    await asyncio.sleep(0.7)
    await redis_transport.publish(records("ticks.0", 1, start=500))
    assert await redis_transport.client.xlen("ticks.0") < 200


async def test_broadcast_readers_each_see_everything(transport: Transport) -> None:
    await transport.publish(records("alerts", 5))
    one, two = transport.broadcast_reader("alerts"), transport.broadcast_reader("alerts")
    assert [d.payload for d in await one.backlog(3)] == [b"m2", b"m3", b"m4"]
    assert await two.backlog(0) == []
    await transport.publish(records("alerts", 2, start=5))
    assert [d.payload for d in await one.read(10, 100)] == [b"m5", b"m6"]
    assert [d.payload for d in await two.read(10, 100)] == [b"m5", b"m6"]
    assert await one.read(10, 50) == []


async def test_broadcast_read_without_backlog_starts_at_the_end(
        transport: Transport) -> None:
    await transport.publish(records("alerts", 2))
    reader = transport.broadcast_reader("alerts")
    assert await reader.read(10, 20) == []
    await transport.publish(records("alerts", 1, start=2))
    assert [d.payload for d in await reader.read(10, 100)] == [b"m2"]


async def test_ping(transport: Transport) -> None:
    assert await transport.ping() is True


async def test_outage_raises_bus_unavailable_and_recovers(redis_server: RedisServer) -> None:
    bus = RedisTransport(redis_server.url, timeout_s=2)
    consumer = bus.group_consumer("g", "c", STREAMS, rebuild_s=60, claim_min_idle_s=30)
    await bus.publish(records("ticks.0", 1))
    redis_server.stop()
    assert await bus.ping() is False
    with pytest.raises(BusUnavailable):
        await bus.publish(records("ticks.0", 1, start=1))
    with pytest.raises(BusUnavailable):
        await consumer.fetch(10, 10)
    redis_server.start()
    await bus.publish(records("ticks.0", 1, start=2))
    assert [d.payload for d in await drain(consumer, 2)] == [b"m0", b"m2"]
    await bus.close()


async def test_a_block_longer_than_the_socket_timeout_is_not_used(
        redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    bus = RedisTransport(redis_server.url, timeout_s=0.5)
    with pytest.raises(BusUnavailable):
        await bus.broadcast_reader("alerts").read(1, 1500)
    await bus.close()
    await client.aclose()


def test_registry_picks_by_scheme_and_names_unknown_ones() -> None:
    assert isinstance(create_transport("redis://localhost:1/0"), RedisTransport)
    assert isinstance(create_transport("kafka://localhost:1"), KafkaTransport)
    with pytest.raises(TransportConfigError, match="'nats'"):
        create_transport("nats://localhost")


async def test_lag_counts_undelivered_and_pending_entries(transport: Transport) -> None:
    consumer = transport.group_consumer("g", "c", STREAMS, rebuild_s=60, claim_min_idle_s=30)
    await consumer.fetch(10, 10)
    await transport.publish(records("ticks.0", 5) + records("ticks.1", 2))
    lags = await settled_lag(consumer, lambda lags: lags["ticks.0"].behind == 5)
    assert (lags["ticks.0"].behind, lags["ticks.0"].pending) == (5, 0)
    assert (lags["ticks.1"].behind, lags["ticks.1"].pending) == (2, 0)
    taken = await consumer.fetch(3, 50)
    assert taken
    lags = await consumer.lag()
    assert sum(lag.behind for lag in lags.values()) == 7 - len(taken)
    assert sum(lag.pending for lag in lags.values()) == len(taken)
    await consumer.ack(taken)
    assert sum(lag.pending for lag in (await consumer.lag()).values()) == 0
