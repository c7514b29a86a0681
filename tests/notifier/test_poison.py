"""Poison entries on ``alerts``, on a real Redis and on a Kafka-protocol broker, with a real
webhook over HTTP: an entry that cannot be decoded, and an alert whose routing raises, are
moved to ``alerts.dead`` with the reason and acknowledged; the alerts around them are
delivered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.bus import Record
from common.dead_letters import DeadEntry, dead_stream, decode_dead_entry
from common.partitioning import ALERTS_STREAM, NOTIFIER_GROUP
from common.schemas import Alert, decode_alert, encode_alert
from fake_notify.server import FakeApis, running_fake
from notifier.config import load_config
from notifier.routing import Router
from notifier.service import Notifier
from tests.support.bus import RealBus, real_bus
from tests.support.notifier import notifier_settings, wait_until, write_notify_config
from tests.support.notify import make_alert

POISON = "POISONUSDT"
DEAD = dead_stream(ALERTS_STREAM)
GARBAGE = b"\x93 cut short"


class PoisonedRouter(Router):
    """The real routing, except that an alert for ``POISON`` makes it raise, as a bug in it
    would: the router itself raises on no alert that decodes."""

    raised = 0

    def channels_for(self, alert: Alert) -> tuple[str, ...]:
        if alert.symbol == POISON:
            self.raised += 1
            raise KeyError(POISON)
        return super().channels_for(alert)


@pytest.fixture(params=["redis", "kafka"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[RealBus]:
    on = real_bus(request)
    yield on
    await on.transport.close()


@pytest.fixture
async def fakes() -> AsyncIterator[FakeApis]:
    async with running_fake() as fakes:
        yield fakes


async def dead_entries(bus: RealBus) -> list[DeadEntry]:
    reader = bus.transport.broadcast_reader(DEAD)
    try:
        return [decode_dead_entry(d.payload) for d in await reader.backlog(100)]
    finally:
        await reader.close()


async def test_poison_alerts_are_buried_and_acknowledged_and_the_others_delivered(
        bus: RealBus, fakes: FakeApis, tmp_path: Path) -> None:
    env = write_notify_config(tmp_path / "notify.toml", fakes, ["hooks"])
    settings = notifier_settings(bus.url, tmp_path / "notify.toml")
    config = load_config(settings.notify_config, env)
    notifier = Notifier(settings, config, bus.transport)
    router = notifier.router = PoisonedRouter(config.route)
    before, poison, after = make_alert("AUSDT"), make_alert(POISON), make_alert("BUSDT")
    stopping = asyncio.Event()
    running = asyncio.create_task(notifier.run(stopping))
    try:
        await asyncio.wait_for(notifier.started.wait(), 20)
        await bus.transport.publish([
            Record(ALERTS_STREAM, before.symbol, encode_alert(before)),
            Record(ALERTS_STREAM, "x", GARBAGE),
            Record(ALERTS_STREAM, poison.symbol, encode_alert(poison)),
            Record(ALERTS_STREAM, after.symbol, encode_alert(after)),
        ])

        async def settled() -> bool:
            assert not running.done(), "the notifier stopped"
            return len(fakes.of("webhook")) == 2 and len(await dead_entries(bus)) == 2

        await wait_until(settled, what="two deliveries and two dead entries")
    finally:
        stopping.set()
        await asyncio.wait_for(running, 20)

    assert [r.headers["webhook-id"] for r in fakes.of("webhook")] == [before.id, after.id]
    undecodable, failed = await dead_entries(bus)
    assert (undecodable.stream, undecodable.reason, undecodable.attempts) == (
        ALERTS_STREAM, "undecodable", 1)
    assert undecodable.payload == GARBAGE
    assert (failed.stream, failed.reason, failed.attempts) == (ALERTS_STREAM, "failed", 3)
    assert failed.error == f"KeyError: '{POISON}'"
    assert decode_alert(failed.payload) == poison
    assert router.raised == 3
    assert time.time() * 1000 - 60_000 < failed.dead_at_ms <= time.time() * 1000
    on_stream = await bus.transport.broadcast_reader(ALERTS_STREAM).backlog(10)
    assert [undecodable.position, failed.position] == [d.position for d in on_stream[1:3]]
    assert await bus.unacknowledged(NOTIFIER_GROUP, ALERTS_STREAM) == 0
    registry = notifier.metrics.registry
    for reason in ("undecodable", "failed"):
        assert registry.get_sample_value("notifier_poison_entries_total",
                                         {"stream": ALERTS_STREAM, "reason": reason}) == 1
