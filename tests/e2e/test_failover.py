"""Several detectors sharing the tick partitions, as deployed: real processes on a real bus,
the fake exchange over a real socket making moves on cue, and a WebSocket client at the
gateway counting alerts by id. A detector killed, paused, joining or stopping: every move
is alerted exactly once, and the partitions of one that went are taken over in time."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fake_exchange import FakeExchange
from tests.support.alert_client import AlertClient, alert_client
from tests.support.failover import (
    FAILOVER_ENV,
    Heartbeats,
    ScriptedMarket,
    add_detector,
    alert_ids_on_bus,
    balanced,
    detector_metric,
    heartbeats,
    labelled_metric,
    member,
    pause,
    resume,
    wait_healthy,
)
from tests.support.processes import Pipeline, Service, running
from tests.support.servers import Bus

pytestmark = pytest.mark.e2e

PARTITIONS = 6
LEASE_S = float(FAILOVER_ENV["LEASE_S"])
# A rebuild of a 5 s window over 40 symbols takes milliseconds; the rest is a loaded machine.
MARGIN_S = 4.0
only_redis = pytest.mark.parametrize("bus", ["redis"], indirect=True)
only_kafka = pytest.mark.parametrize("bus", ["kafka"], indirect=True)


@dataclass
class Rig:
    bus: Bus
    market: ScriptedMarket
    pipeline: Pipeline
    beats: Heartbeats
    client: AlertClient

    @property
    def detectors(self) -> list[Service]:
        return [s for name, s in self.pipeline.services.items() if name.startswith("detector")
                and s.process is not None]


@pytest.fixture
async def rig(request: pytest.FixtureRequest, bus: Bus, log_dir: Path) -> AsyncIterator[Rig]:
    """The pipeline with ``request.param`` detectors, shares settled, a client connected."""
    detectors: int = request.param
    market = ScriptedMarket()
    async with FakeExchange(market, interval_s=0.1) as exchange:
        pipeline = Pipeline(bus.url, exchange.url("!miniTicker@arr"), log_dir, extra_env={
            "TICK_PARTITIONS": str(PARTITIONS), **FAILOVER_ENV, **bus.env})
        for n in range(2, detectors + 1):
            add_detector(pipeline, f"detector-{n}")
        async with heartbeats(bus) as beats, running(pipeline):
            for service in pipeline.services.values():
                if service.name.startswith("detector"):
                    await wait_healthy(service)
            await beats.wait_for(balanced(detectors, PARTITIONS), since=time.monotonic(),
                                 what=f"{detectors} balanced shares")
            async with alert_client(pipeline.ws_url) as client:
                rig = Rig(bus, market, pipeline, beats, client)
                yield rig
            # All at once: on Kafka a member leaving while the group rebalances for the one
            # before waits for its bus timeout.
            await asyncio.gather(*(asyncio.to_thread(s.stop) for s in rig.detectors))


def client_alerts(client: AlertClient) -> list[dict[str, Any]]:
    unique = {a["id"]: a for a in client.history}
    unique.update({a["id"]: a for _, a in client.live})
    return list(unique.values())


async def play(rig: Rig, symbols: list[str], *, every_s: float = 0.25,
               before: dict[int, Callable[[], Awaitable[None]]] | None = None) -> None:
    """Move each symbol in turn (up, down, up, ...), running ``before[i]`` before move i."""
    for index, symbol in enumerate(symbols):
        if before and index in before:
            await before[index]()
        rig.market.move(symbol, 3.0 if index % 2 == 0 else -3.0)
        await asyncio.sleep(every_s)


async def assert_each_move_alerted_exactly_once(rig: Rig, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while len(client_alerts(rig.client)) < sum(rig.market.moves.values()):
        assert time.monotonic() < deadline, (
            f"{len(client_alerts(rig.client))} of {sum(rig.market.moves.values())} alerts")
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # time for a second copy to show
    alerts = client_alerts(rig.client)
    assert Counter((a["symbol"], a["direction"]) for a in alerts) == rig.market.moves
    live = rig.client.live_ids()
    assert len(live) == len(set(live)), f"an alert was shown twice: {live}"
    on_bus = await alert_ids_on_bus(rig.bus)
    assert len(on_bus) == len(set(on_bus)), f"an alert was published twice: {on_bus}"
    assert set(on_bus) == rig.client.ids()


def partitions_of(rig: Rig, service: Service) -> list[int]:
    [parts] = rig.beats.shares(since=0, of=member(service)).values()
    return parts


def covered_by(detectors: int) -> Callable[[dict[str, list[int]]], bool]:
    def check(shares: dict[str, list[int]]) -> bool:
        return (len(shares) == detectors
                and sorted(p for parts in shares.values() for p in parts) == list(
                    range(PARTITIONS)))
    return check


def report(what: str, seconds: float) -> None:
    print(f"\n{what}: {seconds:.2f}s")


@only_redis
@pytest.mark.parametrize("rig", [3], indirect=True)
async def test_kill_9_of_one_of_three_detectors_mid_stream(rig: Rig) -> None:
    """Balanced 2/2/2; one killed while moves keep coming: its partitions are taken over
    within a lease and a rebuild, and every move is alerted exactly once."""
    victim = rig.detectors[1]
    theirs = partitions_of(rig, victim)
    others = [p for p in range(PARTITIONS) if p not in theirs]
    mine = member(victim)
    killed_at = 0.0

    async def kill() -> None:
        nonlocal killed_at
        await asyncio.to_thread(victim.kill)
        killed_at = time.monotonic()

    # Their partitions' moves before, at and after the kill, the others' in between.
    symbols = rig.market.symbols_in(theirs, PARTITIONS)[:6] + rig.market.symbols_in(
        others, PARTITIONS)[:4]
    order = [symbols[0], symbols[6], symbols[1], symbols[2], symbols[7], symbols[3],
             symbols[8], symbols[4], symbols[9], symbols[5]]
    await play(rig, order, before={2: kill})
    taken_at = await rig.beats.wait_for(covered_by(2), since=killed_at,
                                        of=lambda name: not mine(name), what="the takeover")
    report("kill -9 of one of three detectors: partitions taken over and rebuilt after",
           taken_at - killed_at)
    assert taken_at - killed_at < LEASE_S + MARGIN_S
    await assert_each_move_alerted_exactly_once(rig)
    assert balanced(2, PARTITIONS)(rig.beats.shares(since=taken_at,
                                                    of=lambda name: not mine(name)))


@pytest.mark.parametrize("rig", [2], indirect=True)
async def test_a_paused_detector_publishes_nothing_for_the_partitions_it_lost(
        rig: Rig) -> None:
    """SIGSTOP past the lease while its partitions have moves, then SIGCONT: the other
    detector published them; the paused one, whose read may have held them, drops them."""
    paused, other = rig.detectors[1], rig.detectors[0]
    theirs = partitions_of(rig, paused)
    published_before = detector_metric(paused, "detector_alerts_total")
    symbols = rig.market.symbols_in(theirs, PARTITIONS)[:3]
    pause(paused)
    stopped_at = time.monotonic()
    try:
        await play(rig, symbols, every_s=0.1)
        taken_at = await rig.beats.wait_for(covered_by(1), since=stopped_at,
                                            of=member(other), what="the takeover")
        report("SIGSTOP of one of two detectors: partitions taken over and rebuilt after",
               taken_at - stopped_at)
        assert taken_at - stopped_at < LEASE_S + MARGIN_S
        await asyncio.sleep(max(0.0, stopped_at + 2 * LEASE_S - time.monotonic()))
    finally:
        resume(paused)
    resumed_at = time.monotonic()
    # Back in the group: shares balance again, with nothing published twice.
    await rig.beats.wait_for(balanced(2, PARTITIONS), since=resumed_at, what="shares again")
    assert detector_metric(paused, "detector_alerts_total") == published_before
    assert labelled_metric(paused, "detector_ownership_changes_total", 'change="lost"') >= 1
    await play(rig, rig.market.symbols_in(range(PARTITIONS), PARTITIONS)[:6])
    await assert_each_move_alerted_exactly_once(rig)
    assert paused.process is not None
    assert paused.process.poll() is None, "the paused detector died"


@only_redis
@pytest.mark.parametrize("rig", [1], indirect=True)
async def test_a_joining_detector_takes_a_share_and_a_stopping_one_hands_over_at_once(
        rig: Rig) -> None:
    first = rig.detectors[0]
    await play(rig, rig.market.symbols_in(range(PARTITIONS), PARTITIONS)[:3])
    joining = add_detector(rig.pipeline, "detector-2")
    joining.start()
    joined_at = time.monotonic()
    await play(rig, rig.market.symbols_in(range(PARTITIONS), PARTITIONS)[:6])
    shared_at = await rig.beats.wait_for(balanced(2, PARTITIONS), since=joined_at,
                                         what="a share for the new detector")
    report("a second detector started: balanced shares after", shared_at - joined_at)
    await play(rig, rig.market.symbols_in(range(PARTITIONS), PARTITIONS)[:3])
    mine = member(first)
    assert await asyncio.to_thread(first.stop, signal.SIGTERM) == 0
    stopped_at = time.monotonic()
    taken_at = await rig.beats.wait_for(covered_by(1), since=stopped_at,
                                        of=lambda name: not mine(name), what="the handover")
    report("SIGTERM of one of two detectors: partitions taken over and rebuilt after",
           taken_at - stopped_at)
    assert taken_at - stopped_at < LEASE_S, "the stopping detector did not hand over"
    await play(rig, rig.market.symbols_in(range(PARTITIONS), PARTITIONS)[:6])
    await assert_each_move_alerted_exactly_once(rig)


@only_kafka
@pytest.mark.parametrize("rig", [2], indirect=True)
async def test_kill_9_of_one_of_two_detectors_on_kafka(rig: Rig) -> None:
    """The consumer group gives the dead member's partitions to the other after the
    session timeout; every move is alerted exactly once."""
    victim = rig.detectors[1]
    theirs = partitions_of(rig, victim)
    mine = member(victim)
    session_s = int(rig.bus.env["KAFKA_SESSION_TIMEOUT_MS"]) / 1000
    killed_at = 0.0

    async def kill() -> None:
        nonlocal killed_at
        await asyncio.to_thread(victim.kill)
        killed_at = time.monotonic()

    symbols = rig.market.symbols_in(theirs, PARTITIONS)[:4]
    symbols += rig.market.symbols_in(set(range(PARTITIONS)) - set(theirs), PARTITIONS)[:2]
    await play(rig, symbols, before={1: kill})
    taken_at = await rig.beats.wait_for(covered_by(1), since=killed_at,
                                        of=lambda name: not mine(name), what="the takeover")
    report("kill -9 of one of two detectors on Kafka: partitions taken over and rebuilt "
           "after", taken_at - killed_at)
    assert taken_at - killed_at < session_s + MARGIN_S
    await assert_each_move_alerted_exactly_once(rig)
