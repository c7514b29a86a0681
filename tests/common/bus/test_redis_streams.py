"""What only the Redis backend has: claiming idle entries, trimming, socket timeouts, and
its config taken from the service settings."""

from __future__ import annotations

import asyncio

import fakeredis
import pytest
import redis.asyncio as redis

from common.bus import BusUnavailable, Retention, Sharing
from common.bus.redis_streams import RedisConfig, RedisTransport
from common.settings import DetectorSettings, load_settings
from tests.support.bus import drain, records
from tests.support.servers import RedisServer

STREAMS = ["ticks.0", "ticks.1"]


def with_claim_after(transport: RedisTransport, claim_min_idle_s: float) -> RedisTransport:
    """Another transport on the same server, claiming after ``claim_min_idle_s``."""
    config = RedisConfig(transport.config.url, transport.config.timeout_s, claim_min_idle_s)
    return RedisTransport(config, client=transport.client)


@pytest.mark.parametrize(("claim_min_idle_s", "claimed"), [
    (0.1, [b"m0", b"m1", b"m2"]),  # idle long enough: the heir takes them over
    (30, []),  # not yet: they stay the dead consumer's
])
async def test_entries_of_a_dead_consumer_are_claimed_when_idle(
        redis_transport: RedisTransport, claim_min_idle_s: float, claimed: list[bytes]) -> None:
    await redis_transport.publish(records("ticks.1", 3))
    dead = redis_transport.group_consumer("g", "dead", STREAMS, rebuild_s=60)
    assert len(await drain(dead, 3)) == 3
    heir = with_claim_after(redis_transport, claim_min_idle_s).group_consumer(
        "g", "heir", STREAMS, rebuild_s=60)
    await asyncio.sleep(0.2)
    taken = await drain(heir, len(claimed))
    assert sorted(d.payload for d in taken) == claimed
    await heir.ack(taken)
    assert await heir.fetch(10, 50) == []


async def test_claim_min_idle_s_comes_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAIM_MIN_IDLE_S", "0.1")
    config = RedisConfig.from_settings(load_settings(DetectorSettings))
    assert config.claim_min_idle_s == 0.1
    client = fakeredis.FakeAsyncRedis()
    bus = RedisTransport(config, client=client)
    await bus.publish(records("ticks.0", 2))
    dead = bus.group_consumer("g", "dead", STREAMS, rebuild_s=60)
    assert len(await drain(dead, 2)) == 2
    await asyncio.sleep(0.2)
    heir = bus.group_consumer("g", "heir", STREAMS, rebuild_s=60)
    assert sorted(d.payload for d in await drain(heir, 2)) == [b"m0", b"m1"]
    await bus.close()


@pytest.mark.parametrize("sharing", [None, Sharing(lease_s=1.0)])
async def test_a_group_that_vanished_is_unavailable_once_then_made_again(
        redis_server: RedisServer, sharing: Sharing | None) -> None:
    """A failover to a replica that never had the group (it was made within the
    replication lag) must not crash the service: the next fetch makes it again."""
    redis_transport = RedisTransport(RedisConfig(redis_server.url, timeout_s=3))
    consumer = redis_transport.group_consumer("g", "c", STREAMS, rebuild_s=60, sharing=sharing)
    await redis_transport.publish(records("ticks.0", 1))
    assert [d.payload for d in await drain(consumer, 1)] == [b"m0"]
    for stream in STREAMS:
        await redis_transport.client.xgroup_destroy(stream, "g")
    await redis_transport.publish(records("ticks.0", 1, start=1))
    with pytest.raises(BusUnavailable, match="consumer group g is missing"):
        await drain(consumer, 1)
    # Made again from the start of the stream: both entries, the first one again.
    assert sorted(d.payload for d in await drain(consumer, 2)) == [b"m0", b"m1"]
    await redis_transport.close()


async def test_group_creation_tolerates_an_existing_group(redis_transport: RedisTransport) -> None:
    one = redis_transport.group_consumer("g", "a", STREAMS, rebuild_s=1)
    two = redis_transport.group_consumer("g", "b", STREAMS, rebuild_s=1)
    assert await one.fetch(10, 10) == []
    assert await two.fetch(10, 10) == []
    await redis_transport.publish(records("ticks.0", 1))
    assert len(await one.fetch(10, 200)) + len(await two.fetch(10, 10)) == 1


async def test_one_publish_wakes_a_blocked_reader_once_with_every_record(
        redis_server: RedisServer) -> None:
    """A frame's partitions (or a batch's alerts) reach a reader blocked on them in one read,
    not one read per stream: the latency of the last one is what a trader waits."""
    bus = RedisTransport(RedisConfig(redis_server.url, timeout_s=3))
    streams = [f"ticks.{p}" for p in range(4)]
    consumer = bus.group_consumer("g", "c", streams, rebuild_s=60)
    assert await consumer.fetch(10, 10) == []
    alerts = bus.broadcast_reader("alerts")
    assert await alerts.read(10, 10) == []
    blocked = [asyncio.create_task(consumer.fetch(100, 2000)),
               asyncio.create_task(alerts.read(100, 2000))]
    async with asyncio.timeout(2):
        while sum("b" in c["flags"] for c in await bus.client.client_list()) < 2:
            await asyncio.sleep(0.01)
    await bus.publish([record for s in streams for record in records(s, 1)]
                      + records("alerts", 5))
    ticks, alerted = await asyncio.gather(*blocked)
    assert sorted(d.stream for d in ticks) == streams
    assert [d.payload for d in alerted] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    await bus.close()


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


async def test_outage_raises_bus_unavailable_and_recovers(redis_server: RedisServer) -> None:
    bus = RedisTransport(RedisConfig(redis_server.url, timeout_s=2))
    consumer = bus.group_consumer("g", "c", STREAMS, rebuild_s=60)
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
    bus = RedisTransport(RedisConfig(redis_server.url, timeout_s=0.5))
    with pytest.raises(BusUnavailable):
        await bus.broadcast_reader("alerts").read(1, 1500)
    await bus.close()
    await client.aclose()
