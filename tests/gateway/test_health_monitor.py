"""The gateway's health monitor on a real Redis server: it follows ``ticks.*`` and the
detector heartbeats, and tells the browsers (the hub's queues) when the state changes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from common.bus import Record
from common.bus.redis_streams import RedisTransport
from common.partitioning import DETECTOR_HEARTBEAT_STREAM, partition_of, ticks_stream
from common.schemas import DetectorHeartbeat, Tick, encode_heartbeat, encode_ticks
from gateway.health_monitor import HealthMonitor
from gateway.hub import Hub
from gateway.metrics import Metrics
from tests.support.gateway import RecordingSink, gateway_settings
from tests.support.servers import RedisServer

PARTITIONS = 2


def now_ms() -> int:
    return int(time.time() * 1000)


def frame(symbols: list[str], event_ms: int) -> list[Record]:
    by_partition: dict[int, list[Tick]] = {}
    for symbol in symbols:
        by_partition.setdefault(partition_of(symbol, PARTITIONS), []).append(
            Tick(symbol, 1.0, event_ms, "mini_ticker"))
    return [Record(ticks_stream(p), str(p), encode_ticks(t)) for p, t in by_partition.items()]


def heartbeat(newest_event_ms: int) -> Record:
    beat = DetectorHeartbeat(consumer="d1", partitions=[0, 1], sent_at_ms=now_ms(),
                             newest_event_ms=newest_event_ms, behind=0)
    return Record(DETECTOR_HEARTBEAT_STREAM, "d1", encode_heartbeat(beat))


async def next_health(sink: RecordingSink, timeout_s: float = 5.0) -> dict[str, Any]:
    """The next health message the hub wrote to ``sink`` (taken off it)."""
    async with asyncio.timeout(timeout_s):
        while True:
            while sink.messages:
                message = sink.messages.pop(0)
                if message["type"] == "health":
                    health: dict[str, Any] = message["health"]
                    return health
            await asyncio.sleep(0.01)


async def test_changes_reach_the_browsers_and_a_stale_state_is_repeated(
        redis_server: RedisServer, bus: RedisTransport) -> None:
    settings = gateway_settings(redis_server.url, tick_partitions=PARTITIONS,
                                health_feed_stale_s=1.0, health_detector_stale_s=1.0,
                                health_check_s=0.1)
    hub = Hub(metrics=Metrics(), history_size=1, max_buffered_bytes=1 << 20, max_clients=5,
              read_block_ms=50)
    monitor = HealthMonitor(settings, hub, repeat_s=0.5)
    subscriber = RecordingSink()
    assert hub.subscribe(subscriber) is not None
    symbols = [f"S{n:02d}USDT" for n in range(12)]
    # Old entries on the bus: only the newest of each stream counts.
    await bus.publish(frame(symbols[:3], now_ms() - 600_000))
    task = asyncio.create_task(monitor.run(bus))
    try:
        first = await next_health(subscriber)
        assert first["level"] == "down"
        assert first["reasons"][0].startswith("exchange feed stale for 10 min")

        async def feed(stop: asyncio.Event) -> None:
            while not stop.is_set():
                t = now_ms()
                await bus.publish([*frame(symbols, t), heartbeat(t)])
                await asyncio.sleep(0.1)

        stop = asyncio.Event()
        feeding = asyncio.create_task(feed(stop))
        while (health := await next_health(subscriber))["level"] != "ok":
            pass
        assert health["symbols"] == len(symbols)
        assert health["summary"].startswith(f"watching {len(symbols)} symbols · data 0.")
        # Nothing changes: nothing is sent.
        with contextlib.suppress(TimeoutError):
            extra = await next_health(subscriber, 0.5)
            raise AssertionError(f"sent although nothing changed: {extra}")

        stop.set()
        await feeding
        stale = await next_health(subscriber)
        assert stale["level"] == "warn" or stale["level"] == "down"
        assert "exchange feed stale for 1." in " ".join(stale["reasons"])
        # While it is not ok, it is sent again now and then, so the figures move on.
        again = await next_health(subscriber, 1.5)
        assert again["at_ms"] - stale["at_ms"] >= 500
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
