"""One channel's worker: the first alert alone, a burst as one digest at the next slot,
webhooks one by one, 429 and 5xx retried, a refusal dead-lettered, the ledger written
before an alert is settled. A scripted channel stands in for the API here; the channels
themselves meet the fake APIs over HTTP in tests/notifier/channels."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import fakeredis
import pytest

from common.bus import Delivery
from common.bus.redis_streams import RedisConfig, RedisTransport
from common.partitioning import NOTIFICATIONS_DEAD_STREAM, NOTIFICATIONS_LEDGER_STREAM
from common.schemas import Alert
from notifier.channels.base import Budget, Limit, RateLimited, Refused, Transient
from notifier.dispatch import ChannelWorker, Ticket
from notifier.ledger import Ledger, dead_letter_decoder
from notifier.metrics import NotifierMetrics
from notifier.pacing import Pacer
from tests.support.notifier import ScriptedChannel
from tests.support.notify import burst, make_alert


@pytest.fixture
async def transport() -> AsyncIterator[RedisTransport]:
    bus = RedisTransport(RedisConfig("redis://fake"), client=fakeredis.FakeAsyncRedis())
    await bus.start()
    yield bus
    await bus.close()


class Harness:
    def __init__(self, channel: ScriptedChannel, transport: RedisTransport, *,
                 deadline_s: float = 300.0, probe_s: float = 60.0) -> None:
        self.channel = channel
        self.ledger = Ledger(transport, kept_s=3600)
        self.metrics = NotifierMetrics()
        self.worker = ChannelWorker(channel, Pacer(channel.budget), self.ledger, self.metrics,
                                    retry_deadline_s=deadline_s, probe_s=probe_s)
        self.settled: list[str] = []
        self.done = asyncio.Event()
        self.expected = 0

    def put(self, *alerts: Alert) -> None:
        self.expected += len(alerts)
        self.done.clear()
        for alert in alerts:
            delivery = Delivery("alerts", alert.id, b"", 0)
            self.worker.put(Ticket(delivery, alert, [self.channel.name], self._on_done))

    def _on_done(self, ticket: Ticket) -> None:
        # The ledger says "done" before the ticket settles: a kill now resends nothing.
        assert self.ledger.is_done(ticket.alert.id, self.channel.name)
        self.settled.append(ticket.alert.id)
        if len(self.settled) >= self.expected:
            self.done.set()

    async def wait_settled(self, timeout_s: float = 10.0) -> None:
        await asyncio.wait_for(self.done.wait(), timeout_s)

    async def wait_requests(self, count: int, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            while len(self.channel.requests) < count:
                await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def running(harness: Harness) -> AsyncIterator[Harness]:
    stopping = asyncio.Event()
    task = asyncio.create_task(harness.worker.run(stopping))
    try:
        yield harness
    finally:
        stopping.set()
        await asyncio.wait_for(task, 5)


async def test_the_first_alert_goes_alone_and_a_burst_waits_for_one_digest(
        transport: RedisTransport) -> None:
    harness = Harness(ScriptedChannel(budget=Budget((Limit(1, 0.3),))), transport)
    async with running(harness):
        first = make_alert("BTCUSDT")
        harness.put(first)
        await harness.wait_requests(1)
        alerts = burst(50)
        harness.put(*alerts)
        await harness.wait_settled()
    requests = harness.channel.requests
    assert [len(sent) for _, sent in requests] == [1, 50]
    assert requests[1][0] - requests[0][0] >= 0.3
    # Most significant first.
    moves = [abs(a.change_pct) for a in requests[1][1]]
    assert moves == sorted(moves, reverse=True)
    assert sorted(harness.settled) == sorted([first.id, *(a.id for a in alerts)])
    assert harness.metrics.sent.labels("desk", "digest")._value.get() == 1
    assert harness.metrics.alerts_delivered.labels("desk", "digested")._value.get() == 50


async def test_a_webhook_gets_every_alert_by_itself(transport: RedisTransport) -> None:
    harness = Harness(ScriptedChannel(human=False, budget=Budget(())), transport)
    alerts = burst(30)
    async with running(harness):
        harness.put(*alerts)
        await harness.wait_settled()
    assert [len(sent) for _, sent in harness.channel.requests] == [1] * 30
    assert set(harness.channel.alert_ids()) == {a.id for a in alerts}


async def test_a_429_waits_the_apis_figure_and_folds_in_what_arrived_meanwhile(
        transport: RedisTransport) -> None:
    channel = ScriptedChannel(budget=Budget(()), answers=[RateLimited(0.5, "slow down")])
    harness = Harness(channel, transport)
    async with running(harness):
        harness.put(make_alert("BTCUSDT"))
        await harness.wait_requests(1)
        harness.put(make_alert("ETHUSDT", -2.5))
        await harness.wait_settled()
    (first_at, first), (second_at, second) = channel.requests
    assert [a.symbol for a in first] == ["BTCUSDT"]
    assert second_at - first_at >= 0.5
    assert {a.symbol for a in second} == {"BTCUSDT", "ETHUSDT"}
    assert harness.metrics.rate_limited.labels("desk")._value.get() == 1


async def test_a_5xx_is_retried_with_backoff_until_accepted(transport: RedisTransport) -> None:
    channel = ScriptedChannel(budget=Budget(()), answers=[Transient("http_502", "502")])
    harness = Harness(channel, transport)
    async with running(harness):
        harness.put(make_alert())
        await harness.wait_settled()
    assert len(channel.requests) == 2
    assert channel.requests[1][0] - channel.requests[0][0] >= 0.5  # RETRY_MIN_S / 2
    assert harness.metrics.failures.labels("desk", "http_502")._value.get() == 1
    assert harness.metrics.dead_letters.labels("desk", "http_502")._value.get() == 0


async def test_past_the_retry_deadline_an_alert_goes_to_the_dead_letters(
        transport: RedisTransport) -> None:
    channel = ScriptedChannel(budget=Budget(()), answers=[Transient("timeout", "no answer")])
    harness = Harness(channel, transport, deadline_s=60)
    old = make_alert(detected_at_ms=int(time.time() * 1000) - 61_000)
    async with running(harness):
        harness.put(old)
        await harness.wait_settled()
    assert len(channel.requests) == 1
    dead = await transport.broadcast_reader(NOTIFICATIONS_DEAD_STREAM).backlog(10)
    letter = dead_letter_decoder.decode(dead[0].payload)
    assert (letter.channel, letter.reason, letter.alert) == ("desk", "timeout", old)
    assert "gave up after 60s" in letter.detail


async def test_a_refusal_marks_the_channel_failing_without_a_retry_storm(
        transport: RedisTransport) -> None:
    channel = ScriptedChannel(budget=Budget(()), answers=[Refused("http_401", "Unauthorized")])
    harness = Harness(channel, transport, probe_s=0.5)
    async with running(harness):
        harness.put(make_alert("BTCUSDT"))
        await harness.wait_requests(1)
        await asyncio.sleep(0.05)
        assert harness.worker.failing == "http_401: Unauthorized"
        assert harness.metrics.failing.labels("desk")._value.get() == 1
        harness.put(*burst(5))  # while failing: dead-lettered without a request
        await asyncio.sleep(0.1)
        assert len(channel.requests) == 1
        await asyncio.sleep(0.5)
        harness.put(make_alert("ETHUSDT"))  # after the probe interval: tried, accepted
        await harness.wait_settled()
    assert len(channel.requests) == 2
    assert harness.worker.failing is None
    assert harness.metrics.failing.labels("desk")._value.get() == 0
    assert harness.metrics.dead_letters.labels("desk", "http_401")._value.get() == 1
    assert harness.metrics.dead_letters.labels("desk", "channel_failing")._value.get() == 5
    dead = await transport.broadcast_reader(NOTIFICATIONS_DEAD_STREAM).backlog(100)
    assert len(dead) == 6


async def test_every_outcome_is_on_the_ledger_stream(transport: RedisTransport) -> None:
    channel = ScriptedChannel(budget=Budget(()), answers=[Refused("http_404", "gone")])
    harness = Harness(channel, transport, probe_s=0.0)
    async with running(harness):
        harness.put(make_alert("BTCUSDT"))
        await harness.wait_requests(1)
        harness.put(make_alert("ETHUSDT"))
        await harness.wait_settled()
    restarted = Ledger(transport, kept_s=3600)
    assert await restarted.load() == 2
    assert all(restarted.is_done(alert_id, "desk") for alert_id in harness.settled)
    entries = await transport.broadcast_reader(NOTIFICATIONS_LEDGER_STREAM).backlog(10)
    assert len(entries) == 2
