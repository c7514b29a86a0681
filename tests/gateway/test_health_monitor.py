"""The gateway's health monitor on a real Redis server: it follows ``ticks.*`` and the
detector heartbeats, and tells the browsers (the hub's queues) when the state changes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from common.bus import Delivery, Record
from common.bus.redis_streams import RedisTransport
from common.partitioning import DETECTOR_HEARTBEAT_STREAM, partition_of, ticks_stream
from common.schemas import (
    FUNDING,
    LIQUIDATION,
    DetectorHeartbeat,
    Tick,
    encode_heartbeat,
    encode_ticks,
)
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


class CountingTransport:
    """``bus``, counting the reads of its broadcast readers per stream."""

    def __init__(self, bus: RedisTransport) -> None:
        self._bus = bus
        self.reads: dict[str, int] = {}

    def broadcast_reader(self, stream: str) -> Any:
        reader = self._bus.broadcast_reader(stream)
        read = reader.read

        async def counted(count: int, block_ms: int) -> list[Delivery]:
            self.reads[stream] = self.reads.get(stream, 0) + 1
            return await read(count, block_ms)

        reader.read = counted  # type: ignore[method-assign]
        return reader


async def test_a_trade_feed_is_read_a_few_times_a_check_not_once_an_entry(
        redis_server: RedisServer, bus: RedisTransport) -> None:
    """A flush-batched trade feed writes hundreds of entries a second per partition: the
    monitor takes them a few reads per check, yet counts every symbol, has the newest time
    and still sees the feed go stale."""
    settings = gateway_settings(redis_server.url, tick_partitions=1, health_check_s=0.4,
                                health_feed_stale_s=1.0)
    hub = Hub(metrics=Metrics(), history_size=1, max_buffered_bytes=1 << 20, max_clients=5,
              read_block_ms=50)
    monitor = HealthMonitor(settings, hub)
    counting = CountingTransport(bus)
    task = asyncio.create_task(monitor.run(counting))  # type: ignore[arg-type]
    try:
        await asyncio.sleep(0.2)
        entries, last_ms = 150, 0
        started = time.monotonic()
        for n in range(entries):  # an entry every ~5 ms, two symbols each, for ~1 s
            last_ms = now_ms()
            await bus.publish([Record(ticks_stream(0), "k", encode_ticks([
                Tick(f"T{2 * n:03d}USDT", 1.0, last_ms, "agg_trade", quantity=1.0),
                Tick(f"T{2 * n + 1:03d}USDT", 1.0, last_ms - 1, "agg_trade", quantity=2.0)]))])
            await asyncio.sleep(0.005)
        fed_s = time.monotonic() - started
        await asyncio.sleep(0.2)
        observed = monitor.observation()
        assert observed.symbols == 2 * entries
        assert observed.newest_by_partition == {0: last_ms}
        # One read per 0.1 s (HEALTH_CHECK_S / 4) and a few spare; one an entry would be 150.
        assert counting.reads[ticks_stream(0)] <= (fed_s + 0.4) / 0.1 + 3
        assert monitor.current().components["feed"].level == "ok"
        await asyncio.sleep(1.3)
        assert "exchange feed stale for 1." in " ".join(monitor.current().reasons)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_the_light_decoding_reads_every_kind_of_tick() -> None:
    """What the monitor decodes of an entry agrees with ``Tick`` for every kind, trailing
    fields and all."""
    ticks = [Tick("AUSDT", 1.5, 10, "agg_trade", quantity=2.0),
             Tick("BUSDT", 2.5, 30, "force_order", kind=LIQUIDATION, quantity=1.0, side="SELL"),
             Tick("CUSDT", 3.5, 20, "mark_price", kind=FUNDING, funding_rate=0.001,
                  next_funding_ms=99),
             Tick("DUSDT", 4.5, 5, "mini_ticker", quote_volume=1e6)]
    hub = Hub(metrics=Metrics(), history_size=1, max_buffered_bytes=1 << 20, max_clients=5,
              read_block_ms=50)
    monitor = HealthMonitor(gateway_settings("redis://127.0.0.1:1/0", tick_partitions=2), hub)
    monitor.take_ticks(1, [Delivery("ticks.1", "1-0", encode_ticks(ticks), 1),
                           Delivery("ticks.1", "2-0", b"\xc1not msgpack", 2)])
    assert monitor.observation().newest_by_partition == {1: 30}
    assert monitor._last_seen == {"AUSDT": 10, "BUSDT": 30, "CUSDT": 20, "DUSDT": 5}
