"""The detector against a real Redis server: ack after publish, rebuild, no duplicates."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from common.bus import Record
from common.bus.redis_streams import PAYLOAD_FIELD, RedisConfig, RedisTransport
from common.partitioning import (
    ALERTS_STREAM,
    DETECTOR_GROUP,
    DETECTOR_HEARTBEAT_STREAM,
    RULES_STREAM,
    partition_of,
    ticks_stream,
)
from common.rule_model import Rule
from common.schemas import (
    FUNDING,
    LIQUIDATION,
    PRICE,
    Alert,
    RuleSet,
    Tick,
    decode_alert,
    decode_heartbeat,
    decode_rule_set,
    decode_ticks,
    encode_alert,
    encode_rule_set,
    encode_ticks,
)
from common.settings import DetectorSettings, load_settings
from detector.engine import DetectionEngine
from detector.service import Detector
from tests.support.servers import RedisServer

PARTITIONS = 2


@pytest.fixture
async def bus(redis_server: RedisServer) -> AsyncIterator[RedisTransport]:
    transport = RedisTransport(RedisConfig(redis_server.url, timeout_s=3))
    yield transport
    await transport.close()


def settings(url: str, **overrides: object) -> DetectorSettings:
    values: dict[str, object] = {"bus_url": url, "tick_partitions": PARTITIONS,
                                 "read_block_ms": 50, "detector_metrics_port": 0}
    values.update(overrides)
    return load_settings(DetectorSettings, **values)


def frame(quotes: dict[str, float], event_ms: int) -> list[Record]:
    """One exchange frame as the ingestor writes it: one entry per partition."""
    by_partition: dict[int, list[Tick]] = {}
    for symbol, price in quotes.items():
        tick = Tick(symbol, price, event_ms, "mini_ticker")
        by_partition.setdefault(partition_of(symbol, PARTITIONS), []).append(tick)
    return [Record(ticks_stream(p), str(p), encode_ticks(ticks))
            for p, ticks in by_partition.items()]


async def alerts_on_bus(bus: RedisTransport) -> list[Alert]:
    deliveries = await bus.broadcast_reader(ALERTS_STREAM).backlog(10_000)
    return [decode_alert(d.payload) for d in deliveries]


async def run_until(detector: Detector, done: asyncio.Event | None = None,
                    settle_s: float = 0.3) -> None:
    """Run a detector until it is idle, then stop it the way SIGTERM does."""
    stopping = asyncio.Event()
    task = asyncio.create_task(detector.run(stopping))
    await asyncio.wait_for(detector.rebuilt.wait(), 10)
    if done is not None:
        await asyncio.wait_for(done.wait(), 10)
    await asyncio.sleep(settle_s)
    stopping.set()
    await asyncio.wait_for(task, 5)


async def pending_count(bus: RedisTransport) -> int:
    total = 0
    for p in range(PARTITIONS):
        if await bus.client.exists(ticks_stream(p)):
            total += (await bus.client.xpending(ticks_stream(p), DETECTOR_GROUP))["pending"]
    return total


async def test_a_jump_gives_one_alert_and_everything_is_acknowledged(
        bus: RedisTransport, redis_server: RedisServer) -> None:
    now = int(time.time() * 1000)
    for i in range(30):
        await bus.publish(frame({"BTCUSDT": 100.0 + (3.5 if i >= 10 else 0.0),
                                 "ETHUSDT": 10.0}, now + i * 1000))
    await run_until(Detector(settings(redis_server.url), bus))
    [alert] = await alerts_on_bus(bus)
    assert (alert.symbol, alert.direction, alert.base_price, alert.price) == (
        "BTCUSDT", "up", 100.0, 103.5)
    assert alert.event_time_ms == now + 10_000
    assert alert.detected_at_ms >= now
    assert await pending_count(bus) == 0


async def test_restart_rebuilds_windows_from_history(bus: RedisTransport,
                                                     redis_server: RedisServer) -> None:
    now = int(time.time() * 1000)
    await bus.publish(frame({"BTCUSDT": 100.0}, now))
    await run_until(Detector(settings(redis_server.url), bus))
    # The jump arrives while no detector runs: only the rebuilt window knows the base.
    await bus.publish(frame({"BTCUSDT": 103.0}, now + 5000))
    await run_until(Detector(settings(redis_server.url), bus))
    assert [a.base_price for a in await alerts_on_bus(bus)] == [100.0]


async def test_restart_keeps_the_cooldown_of_published_alerts(
        bus: RedisTransport, redis_server: RedisServer) -> None:
    now = int(time.time() * 1000)
    await bus.publish(frame({"A": 100.0}, now) + frame({"A": 103.0}, now + 1000))
    await run_until(Detector(settings(redis_server.url), bus))
    await bus.publish(frame({"A": 97.0}, now + 20_000))  # a reversal inside the cooldown
    await run_until(Detector(settings(redis_server.url), bus))
    assert [a.direction for a in await alerts_on_bus(bus)] == ["up"]


@pytest.mark.parametrize("published_before_crash", [True, False])
async def test_a_crash_between_publish_and_ack_neither_loses_nor_repeats(
        bus: RedisTransport, redis_server: RedisServer, published_before_crash: bool) -> None:
    now = int(time.time() * 1000)
    await bus.publish(frame({"A": 100.0}, now) + frame({"A": 103.0}, now + 1000))
    # A detector that took the entries and died, after publishing or before.
    crashed = bus.group_consumer(DETECTOR_GROUP, "detector-1",
                                 [ticks_stream(p) for p in range(PARTITIONS)],
                                 rebuild_s=70)
    taken = await crashed.fetch(100, 50)
    assert taken
    if published_before_crash:
        [alert] = DetectionEngine(Rule()).process(
            [t for d in taken for t in decode_ticks(d.payload)], now)
        await bus.publish([Record(ALERTS_STREAM, alert.symbol, encode_alert(alert))])
    assert await pending_count(bus) == len(taken)

    await run_until(Detector(settings(redis_server.url), bus))
    assert [a.id for a in await alerts_on_bus(bus)] == [f"A:60:{now + 1000}"]
    assert await pending_count(bus) == 0


async def test_alerts_wait_for_the_bus_and_nothing_is_acknowledged_before(
        bus: RedisTransport, redis_server: RedisServer) -> None:
    now = int(time.time() * 1000)
    detector = Detector(settings(redis_server.url, bus_timeout_s=1.0, read_block_ms=100), bus)
    stopping = asyncio.Event()
    task = asyncio.create_task(detector.run(stopping))
    await asyncio.wait_for(detector.rebuilt.wait(), 10)
    redis_server.stop()
    await asyncio.sleep(0.5)
    redis_server.start()
    await bus.publish(frame({"A": 100.0}, now) + frame({"A": 103.0}, now + 1000))
    for _ in range(100):
        if await alerts_on_bus(bus):
            break
        await asyncio.sleep(0.1)
    stopping.set()
    await asyncio.wait_for(task, 10)
    assert len(await alerts_on_bus(bus)) == 1
    assert await pending_count(bus) == 0



async def rules_on_bus(bus: RedisTransport) -> list[RuleSet]:
    return [decode_rule_set(d.payload)
            for d in await bus.broadcast_reader(RULES_STREAM).backlog(100)]


async def put_rules(bus: RedisTransport, version: int, *rules: Rule) -> None:
    rule_set = RuleSet(rules=list(rules), updated_at_ms=int(time.time() * 1000),
                       updated_by="test", version=version, change="test change")
    await bus.publish([Record(RULES_STREAM, "rules", encode_rule_set(rule_set))])


async def test_an_empty_rules_stream_is_seeded_from_the_environment(
        bus: RedisTransport, redis_server: RedisServer) -> None:
    seeding = settings(redis_server.url, window_s=30, threshold_up_pct=1.5, cooldown_s=10)
    await run_until(Detector(seeding, bus))
    [seeded] = await rules_on_bus(bus)
    assert seeded.rules == [Rule(window_s=30, threshold_up_pct=1.5, threshold_down_pct=2.0,
                                 cooldown_s=10)]
    assert seeded.version == 1
    assert seeded.updated_by == f"detector {seeding.detector_consumer}"
    # A restart finds it and writes nothing more.
    await run_until(Detector(settings(redis_server.url), bus))
    assert len(await rules_on_bus(bus)) == 1


async def test_the_rules_on_the_stream_win_over_the_environment(
        bus: RedisTransport, redis_server: RedisServer) -> None:
    await put_rules(bus, 0, Rule(threshold_up_pct=9.0))  # an old unversioned announcement
    await put_rules(bus, 3, Rule(name="tight", threshold_up_pct=1.0))
    await put_rules(bus, 3, Rule(name="late", threshold_up_pct=5.0))  # lost the race for 3
    await bus.publish([Record(RULES_STREAM, "rules", b"\xc1")])  # not msgpack at all
    detector = Detector(settings(redis_server.url), bus)
    await run_until(detector)
    assert [r.name for r in detector.engine.rules] == ["tight"]
    assert len(await bus.broadcast_reader(RULES_STREAM).backlog(100)) == 4
    registry = detector.metrics.registry
    for kind in ("unversioned", "undecodable"):
        assert registry.get_sample_value("detector_rules_entries_skipped_total",
                                         {"kind": kind}) == 1


async def test_a_rules_change_reaches_a_running_detector_within_a_second(
        bus: RedisTransport, redis_server: RedisServer) -> None:
    now = int(time.time() * 1000)
    detector = Detector(settings(redis_server.url), bus)
    stopping = asyncio.Event()
    task = asyncio.create_task(detector.run(stopping))
    try:
        await asyncio.wait_for(detector.rebuilt.wait(), 10)
        await bus.publish(frame({"A": 100.0}, now) + frame({"A": 101.5}, now + 1000))
        async with asyncio.timeout(5):
            while await pending_count(bus) or detector.engine.symbols_tracked == 0:
                await asyncio.sleep(0.02)
        assert await alerts_on_bus(bus) == []  # +1.5 % under the 2 % of the environment

        published = time.perf_counter()
        await put_rules(bus, 2, Rule(name="tight", threshold_up_pct=1.0, cooldown_s=30))
        async with asyncio.timeout(1.0):
            while detector.engine.rules[0].name != "tight":
                await asyncio.sleep(0.005)
        applied_s = time.perf_counter() - published
        assert applied_s < 1.0

        await bus.publish(frame({"A": 101.6}, now + 2000))
        async with asyncio.timeout(5):
            while not await alerts_on_bus(bus):
                await asyncio.sleep(0.02)
    finally:
        stopping.set()
        await asyncio.wait_for(task, 5)
    [alert] = await alerts_on_bus(bus)
    assert (alert.rule, alert.threshold_pct, alert.base_price, alert.level) == (
        "tight", 1.0, 100.0, 1)


async def test_restart_keeps_the_escalation_level_of_published_alerts(
        bus: RedisTransport, redis_server: RedisServer) -> None:
    await put_rules(bus, 1, Rule(escalation_step_pct=2.0))
    now = int(time.time() * 1000)
    await bus.publish(frame({"A": 100.0}, now) + frame({"A": 102.5}, now + 1000))
    await run_until(Detector(settings(redis_server.url), bus))
    # After a restart, +3.5 % is not 2 % beyond the published +2.5 %; +4.6 % is.
    await bus.publish(frame({"A": 103.5}, now + 2000) + frame({"A": 104.6}, now + 3000))
    await run_until(Detector(settings(redis_server.url), bus))
    alerts = await alerts_on_bus(bus)
    assert [(a.level, a.price) for a in alerts] == [(1, 102.5), (2, 104.6)]


async def test_the_heartbeat_says_who_reads_what_and_how_far_it_got(
        bus: RedisTransport, redis_server: RedisServer) -> None:
    """What the gateways read to tell "no detector consuming" and "detector behind"."""
    now = int(time.time() * 1000)
    for i in range(5):
        await bus.publish(frame({"BTCUSDT": 100.0, "ETHUSDT": 10.0}, now + i * 1000))
    detector = Detector(settings(redis_server.url, detector_consumer="det-a",
                                 detector_heartbeat_s=0.05), bus)
    stopping = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(detector.run(stopping))
        tasks.create_task(detector.watch_lag(stopping, every_s=0.05))
        beating = tasks.create_task(detector.beat(stopping))
        await asyncio.wait_for(detector.rebuilt.wait(), 10)
        reader = bus.broadcast_reader(DETECTOR_HEARTBEAT_STREAM)
        for _ in range(100):
            beats = [decode_heartbeat(d.payload) for d in await reader.backlog(100)]
            if beats and beats[-1].newest_event_ms == now + 4000 and beats[-1].behind == 0:
                break
            await asyncio.sleep(0.05)
        stopping.set()
    assert beating.done()
    newest = beats[-1]
    assert (newest.consumer, newest.partitions, newest.rebuilding) == ("det-a", [0, 1], False)
    assert newest.newest_event_ms == now + 4000
    assert newest.behind == 0
    assert abs(newest.sent_at_ms - time.time() * 1000) < 5000
    assert beats[0].sent_at_ms <= newest.sent_at_ms


def kind_frame(ticks: list[Tick]) -> list[Record]:
    by_partition: dict[int, list[Tick]] = {}
    for tick in ticks:
        by_partition.setdefault(partition_of(tick.symbol, PARTITIONS), []).append(tick)
    return [Record(ticks_stream(p), str(p), encode_ticks(group))
            for p, group in by_partition.items()]


async def test_a_liquidation_rule_fires_and_a_restart_continues_its_escalation(
        bus: RedisTransport, redis_server: RedisServer) -> None:
    """Forced orders and mark prices through the real service: the cascade alerts once,
    then, after a restart that rebuilt the sum from the history and the cooldown from the
    alert, one level up; the funding period alerted before the restart stays alerted."""
    await put_rules(bus, 1, Rule(),
                    Rule(name="cascade", kind="liquidation", window_s=60, cooldown_s=60,
                         min_notional_usdt=1_000_000, escalation_step_usdt=500_000),
                    Rule(name="extreme", kind="funding", min_funding_rate_pct=0.1))
    now = int(time.time() * 1000)
    next_funding = now + 3_600_000

    def order(at_ms: int, quantity: float) -> Tick:
        return Tick("BTCUSDT", 60_000.0, at_ms, "force_order", None, LIQUIDATION, quantity,
                    "SELL")

    def funding(at_ms: int) -> Tick:
        return Tick("ETHUSDT", 3_000.0, at_ms, "mark_price", None, FUNDING,
                    funding_rate=-0.002, next_funding_ms=next_funding)

    await bus.publish(kind_frame([order(now, 10.0), funding(now)])
                      + kind_frame([order(now + 1000, 10.0)]))  # 600 k, then 1.2 M
    await run_until(Detector(settings(redis_server.url), bus))
    await bus.publish(kind_frame([order(now + 2000, 5.0), funding(now + 2000)])  # 1.5 M: quiet
                      + kind_frame([order(now + 3000, 4.0)]))  # 1.74 M: level 2
    await run_until(Detector(settings(redis_server.url), bus))
    # The two symbols' partitions are read in either order.
    alerts = sorted(await alerts_on_bus(bus), key=lambda a: (a.kind, a.event_time_ms))
    assert [(a.kind, a.id, a.level) for a in alerts] == [
        ("funding", f"ETHUSDT:funding.extreme:{next_funding}", 1),
        ("liquidation", f"BTCUSDT:liquidation.cascade:{now + 1000}", 1),
        ("liquidation", f"BTCUSDT:liquidation.cascade:{now + 3000}", 2)]
    rate, first, second = alerts
    assert (first.direction, first.notional_usdt, first.liquidations) == (
        "down", 1_200_000.0, 2)
    assert (second.notional_usdt, second.liquidations) == (1_740_000.0, 4)
    assert (rate.direction, rate.funding_rate_pct, rate.next_funding_ms) == (
        "down", -0.2, next_funding)
    assert await pending_count(bus) == 0


async def test_a_restart_replays_a_volume_rules_window_and_its_baseline(
        bus: RedisTransport, redis_server: RedisServer) -> None:
    """The replay reaches back W + L (+ the margin), not just the longest window: after a
    restart the baseline is covered at once and a spike fires."""
    await put_rules(bus, 1, Rule(name="spike", kind="volume", window_s=2, baseline_s=90,
                                 volume_factor=3.0, min_window_volume_usdt=100,
                                 cooldown_s=0))
    start = int(time.time() * 1000) - 200_000
    stream = ticks_stream(partition_of("BTCUSDT", PARTITIONS))

    def trade_at(second: int, quantity: float) -> Tick:
        return Tick("BTCUSDT", 100.0, start + second * 1000, "agg_trade", None, PRICE,
                    quantity)

    # A steady 100 USDT a second for 96 s, written with entry ids at their event times.
    for second in range(96):
        await bus.client.xadd(stream, {PAYLOAD_FIELD: encode_ticks([trade_at(second, 1.0)])},
                              id=f"{start + second * 1000}-0")
    await run_until(Detector(settings(redis_server.url), bus))
    assert await alerts_on_bus(bus) == []
    await bus.client.xadd(stream, {PAYLOAD_FIELD: encode_ticks([trade_at(96, 50.0)])},
                          id=f"{start + 96_000}-0")
    await run_until(Detector(settings(redis_server.url), bus))
    [alert] = await alerts_on_bus(bus)
    assert (alert.kind, alert.event_time_ms, alert.volume_usdt) == (
        "volume", start + 96_000, 5_100.0)
    assert alert.baseline_volume_usdt == 200.0
