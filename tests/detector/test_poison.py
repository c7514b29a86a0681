"""Poison entries on ``ticks.*``, on a real Redis and on a Kafka-protocol broker: an entry
that cannot be decoded, and one on which the engine raises, are moved to ``ticks.0.dead``
with the reason and acknowledged, while the entries around them are processed and fire."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable

import pytest

from common.bus import Record, Retention
from common.dead_letters import DeadEntry, dead_stream, decode_dead_entry
from common.partitioning import ALERTS_STREAM, DETECTOR_GROUP, ticks_stream
from common.rule_model import Rule
from common.schemas import Alert, Tick, decode_alert, decode_ticks, encode_ticks
from common.settings import DetectorSettings, load_settings
from detector.engine import DetectionEngine
from detector.service import Detector
from tests.support.bus import RealBus, real_bus

POISON = "POISONUSDT"
STREAM = ticks_stream(0)
GARBAGE = b"\xc1 not msgpack"


class PoisonedEngine(DetectionEngine):
    """The real engine, except that a tick of ``POISON`` makes it raise, as a bug in it
    would: the engine itself raises on no tick that decodes."""

    def __init__(self, rules: Rule) -> None:
        super().__init__(rules)
        self.raised = 0

    def process(self, ticks: Iterable[Tick], detected_at_ms: int | None = None) -> list[Alert]:
        ticks = list(ticks)
        if any(tick.symbol == POISON for tick in ticks):
            self.raised += 1
            raise RuntimeError(f"cannot handle {POISON}")
        return super().process(ticks, detected_at_ms)

    def rebuild(self, ticks: Iterable[Tick]) -> None:
        ticks = list(ticks)
        if any(tick.symbol == POISON for tick in ticks):
            self.raised += 1
            raise RuntimeError(f"cannot rebuild {POISON}")
        super().rebuild(ticks)


@pytest.fixture(params=["redis", "kafka"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[RealBus]:
    on = real_bus(request)
    yield on
    await on.transport.close()


@pytest.fixture(params=["redis"])
async def redis_bus(request: pytest.FixtureRequest) -> AsyncIterator[RealBus]:
    on = real_bus(request)
    yield on
    await on.transport.close()


def poisoned_detector(bus: RealBus, **overrides: object) -> tuple[Detector, PoisonedEngine]:
    settings = load_settings(DetectorSettings, bus_url=bus.url, tick_partitions=1,
                             read_block_ms=50, detector_metrics_port=0, **overrides)
    detector = Detector(settings, bus.transport)
    engine = PoisonedEngine(Rule())
    detector.engine = engine
    return detector, engine


@contextlib.asynccontextmanager
async def running(detector: Detector) -> AsyncIterator[None]:
    """The detector runs (and must keep running) until the block ends, then stops as
    SIGTERM stops it."""
    stopping = asyncio.Event()
    task = asyncio.create_task(detector.run(stopping))
    try:
        yield
        assert not task.done(), "the detector stopped"
    finally:
        stopping.set()
        await asyncio.wait_for(task, 15)


async def publish_with_poison(bus: RealBus, now: int) -> None:
    await bus.transport.declare([STREAM], Retention(max_age_s=900))
    await bus.transport.publish([
        entry(now, AUSDT=100.0, BUSDT=10.0, CUSDT=20.0),
        Record(STREAM, "0", GARBAGE),
        entry(now + 1000, **{POISON: 1.0}),
        entry(now + 2000, AUSDT=103.0),  # +3 % in the window: fires
        entry(now + 3000, BUSDT=9.7),  # -3 %: fires
    ])


def entry(event_ms: int, **prices: float) -> Record:
    ticks = [Tick(symbol, price, event_ms, "mini_ticker") for symbol, price in prices.items()]
    return Record(STREAM, "0", encode_ticks(ticks))


async def dead_entries(bus: RealBus) -> list[DeadEntry]:
    reader = bus.transport.broadcast_reader(dead_stream(STREAM))
    try:
        return [decode_dead_entry(d.payload) for d in await reader.backlog(100)]
    finally:
        await reader.close()


async def alerts_on(bus: RealBus) -> list[Alert]:
    reader = bus.transport.broadcast_reader(ALERTS_STREAM)
    try:
        return [decode_alert(d.payload) for d in await reader.backlog(100)]
    finally:
        await reader.close()


async def test_poison_entries_are_buried_and_acknowledged_and_the_stream_goes_on(
        bus: RealBus) -> None:
    detector, engine = poisoned_detector(bus, poison_max_attempts=2)
    now = int(time.time() * 1000)
    await publish_with_poison(bus, now)
    async with running(detector):
        async with asyncio.timeout(30):
            while len(await alerts_on(bus)) < 2 or len(await dead_entries(bus)) < 2:
                await asyncio.sleep(0.05)

    alerts = await alerts_on(bus)
    assert [(a.symbol, a.direction, a.base_price) for a in alerts] == [
        ("AUSDT", "up", 100.0), ("BUSDT", "down", 10.0)]
    undecodable, failed = await dead_entries(bus)
    assert (undecodable.stream, undecodable.reason, undecodable.attempts) == (
        STREAM, "undecodable", 1)
    assert undecodable.payload == GARBAGE
    assert undecodable.payload_size == len(GARBAGE)
    assert undecodable.error.startswith("DecodeError: ")
    assert (failed.stream, failed.reason, failed.attempts) == (STREAM, "failed", 2)
    assert failed.error == f"RuntimeError: cannot handle {POISON}"
    assert [t.symbol for t in decode_ticks(failed.payload)] == [POISON]
    assert engine.raised == 2
    on_stream = await bus.transport.broadcast_reader(STREAM).backlog(100)
    assert [undecodable.position, failed.position] == [d.position for d in on_stream[1:3]]
    assert 0 < failed.dead_at_ms - now < 60_000
    # Acknowledged, all of them: nothing comes back to the next detector.
    assert await bus.unacknowledged(DETECTOR_GROUP, STREAM) == 0
    registry = detector.metrics.registry
    for reason in ("undecodable", "failed"):
        assert registry.get_sample_value("detector_poison_entries_total",
                                         {"stream": STREAM, "reason": reason}) == 1


async def test_a_restart_replays_past_the_buried_entries_without_burying_them_again(
        redis_bus: RealBus) -> None:
    """Replay (the window rebuild) has no side effects: an entry buried on its live pass
    is skipped, and one on which the rebuild raises does not stop the restart."""
    bus = redis_bus
    first, _ = poisoned_detector(bus)
    now = int(time.time() * 1000)
    await publish_with_poison(bus, now)
    async with running(first):
        async with asyncio.timeout(30):
            while len(await dead_entries(bus)) < 2:
                await asyncio.sleep(0.05)
    restarted, engine = poisoned_detector(bus)
    async with running(restarted):
        await asyncio.wait_for(restarted.rebuilt.wait(), 10)
        # +5 % on a base only the rebuilt window knows (replayed past both poison entries).
        await bus.transport.publish([entry(now + 4000, CUSDT=21.0)])
        async with asyncio.timeout(10):
            while len(await alerts_on(bus)) < 3:
                await asyncio.sleep(0.05)
    assert [(a.symbol, a.base_price) for a in await alerts_on(bus)][-1] == ("CUSDT", 20.0)
    assert engine.raised == 1  # the rebuild, once
    assert len(await dead_entries(bus)) == 2
    registry = restarted.metrics.registry
    assert registry.get_sample_value("detector_replay_errors_total") == 1
    assert registry.get_sample_value("detector_bad_payloads_total") == 1
    assert registry.get_sample_value("detector_poison_entries_total",
                                     {"stream": STREAM, "reason": "failed"}) == 0
