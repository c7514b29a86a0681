"""One suite for the bus contract, run against fakeredis, a real Redis-compatible server and
a real Kafka-protocol broker (tansu) (the ``transport`` fixture). Redis-only mechanics are in
``test_redis_streams``, Kafka-only ones under ``kafka/``."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

from common.bus import Transport
from common.bus.kafka.transport import KafkaTransport
from common.bus.redis_streams import RedisTransport
from tests.support.bus import crash, drain, records, settled_lag

STREAMS = ["ticks.0", "ticks.1"]


async def test_published_entries_are_delivered_once_in_order(transport: Transport) -> None:
    await transport.publish(records("ticks.0", 5) + records("ticks.1", 3))
    consumer = transport.group_consumer("g", "c1", STREAMS, rebuild_s=60)
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
    first = transport.group_consumer("g", "c1", STREAMS, rebuild_s=60)
    got = await drain(first, 6)
    await first.ack(got[:4])
    await crash(first)  # with two entries in hand
    await transport.publish(records("ticks.0", 2, start=6))

    second = transport.group_consumer("g", "c1", STREAMS, rebuild_s=60)
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
    third = transport.group_consumer("g", "c1", STREAMS, rebuild_s=60)
    assert [d.replay for d in await drain(third, 8)] == [True] * 8


async def test_replay_is_limited_to_the_rebuild_span(transport: Transport) -> None:
    await transport.publish(records("ticks.0", 3))
    consumer = transport.group_consumer("g", "c1", STREAMS, rebuild_s=60)
    await consumer.ack(await drain(consumer, 3))
    await asyncio.sleep(0.3)
    await transport.publish(records("ticks.0", 2, start=3))
    await consumer.ack(await drain(consumer, 2))
    await crash(consumer)
    restarted = transport.group_consumer("g", "c1", STREAMS, rebuild_s=0.2)
    assert [d.payload for d in await drain(restarted, 2)] == [b"m3", b"m4"]


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


async def test_a_closed_reader_closes_again_and_reads_on_where_it_left_off(
        transport: Transport) -> None:
    await transport.publish(records("alerts", 2))
    reader = transport.broadcast_reader("alerts")
    assert [d.payload for d in await reader.backlog(1)] == [b"m1"]
    await transport.publish(records("alerts", 1, start=2))
    assert [d.payload for d in await reader.read(10, 200)] == [b"m2"]
    await reader.close()
    await reader.close()
    await transport.publish(records("alerts", 1, start=3))
    seen = []
    for _ in range(20):
        seen += await reader.read(10, 100)
        if seen:
            break
    assert [d.payload for d in seen] == [b"m3"]
    await reader.close()


async def test_closing_a_group_consumer_twice_is_harmless(transport: Transport) -> None:
    await transport.publish(records("ticks.0", 2))
    consumer = transport.group_consumer("g", "c1", STREAMS, rebuild_s=60)
    await consumer.ack(await drain(consumer, 2))
    await consumer.close()
    await consumer.close()
    again = transport.group_consumer("g", "c1", STREAMS, rebuild_s=60)
    assert [(d.payload, d.replay) for d in await drain(again, 2)] == [
        (b"m0", True), (b"m1", True)]


async def test_ping(transport: Transport) -> None:
    assert await transport.ping() is True


async def test_lag_counts_undelivered_and_pending_entries(transport: Transport) -> None:
    consumer = transport.group_consumer("g", "c", STREAMS, rebuild_s=60)
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


@pytest.mark.parametrize("implementation", [Transport, RedisTransport, KafkaTransport])
def test_group_consumer_takes_no_backend_option(implementation: Any) -> None:
    """How a vanished member's entries come back is a backend's config, not the call's."""
    parameters = inspect.signature(implementation.group_consumer).parameters
    assert list(parameters) == ["self", "group", "consumer", "streams", "rebuild_s", "sharing"]
