"""One channel's delivery loop: pace, fold a burst into a digest, send, retry, give up.

Each channel has one worker task and one queue of alerts waiting for it; requests to one
channel go one at a time. When the channel's next slot comes (``notifier.pacing``), a human
channel takes *everything* waiting: one alert is its own message, several become one digest,
most significant first. So in a burst no alert waits longer than the channel's next free
slot, where sending them one by one would lag minutes behind (Telegram allows one message a
second per chat). A webhook (``human = False``) takes one alert per request: machines want
every alert by itself, and have no eyes to spare.

What the API answered decides what happens next:

- accepted: the ledger records the alerts as done for this channel, then their tickets are
  settled (``Ticket.settle``), which acknowledges an alert once all its channels are done;
- 429: the alerts go back to the front of the queue and the channel pauses for the API's
  ``retry_after`` (the next attempt folds in whatever arrived meanwhile);
- 5xx, timeout, lost connection: the same, with jittered backoff, until an alert is
  ``NOTIFY_RETRY_DEADLINE_S`` old: then it goes to ``notifications.dead``;
- a permanent refusal (400/401/403/404): the channel is marked failing (metric, one log
  line, the readiness detail) and the alerts go to ``notifications.dead`` with the reason;
  while failing, alerts go there without a request, but one request every
  ``FAILING_PROBE_S`` tries again, so a fixed token or chat recovers without a storm.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import Final

from common.aio import race
from common.backoff import Backoff
from common.bus import Delivery
from common.runner import while_bus_down
from common.schemas import Alert
from notifier.alert_text import by_significance
from notifier.channels.base import Accepted, Answer, Channel, RateLimited, Refused, Transient
from notifier.ledger import Ledger, Outcome
from notifier.metrics import NotifierMetrics
from notifier.pacing import Pacer

log = logging.getLogger(__name__)

FAILING_PROBE_S: Final = 60.0
# Transient failures back off from 1 s to 30 s (jittered, common.backoff).
RETRY_MIN_S: Final = 1.0
RETRY_MAX_S: Final = 30.0


class Ticket:
    """One delivered alert and the channels not done with it yet. ``settle`` is
    idempotent per channel; when the last one settles, ``on_done`` gets the delivery
    (to be acknowledged)."""

    __slots__ = ("alert", "delivery", "on_done", "waiting")

    def __init__(self, delivery: Delivery, alert: Alert, channels: Sequence[str],
                 on_done: Callable[[Ticket], None]) -> None:
        self.delivery = delivery
        self.alert = alert
        self.waiting = set(channels)
        self.on_done = on_done

    def settle(self, channel: str) -> None:
        if channel in self.waiting:
            self.waiting.discard(channel)
            if not self.waiting:
                self.on_done(self)


class ChannelWorker:
    """The queue and the loop of one channel; ``put`` from the consumer, ``run`` as a task."""

    def __init__(self, channel: Channel, pacer: Pacer, ledger: Ledger,
                 metrics: NotifierMetrics, *, retry_deadline_s: float,
                 probe_s: float = FAILING_PROBE_S) -> None:
        self.channel = channel
        self.name = channel.name
        self._pacer = pacer
        self._ledger = ledger
        self._metrics = metrics
        self._deadline_s = retry_deadline_s
        self._probe_s = probe_s
        self._queue: deque[Ticket] = deque()  # oldest first
        self._queued = metrics.queued.labels(self.name)
        self._accepted_seconds = metrics.accepted_seconds.labels(self.name)
        self._arrived = asyncio.Event()
        self._backoff = Backoff(RETRY_MIN_S, RETRY_MAX_S)
        self._bus_backoff = Backoff()
        self.failing: str | None = None  # the refusal, while the channel is failing
        self._probe_at = 0.0

    @property
    def queued(self) -> int:
        return len(self._queue)

    def put(self, ticket: Ticket) -> None:
        self._queue.append(ticket)
        self._queued.set(len(self._queue))
        self._arrived.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Deliver until shutdown; what is still queued then stays unacknowledged on the
        bus and comes back to the next run."""
        while not stopping.is_set():
            if not self._queue:
                self._arrived.clear()
                await race(stopping.wait(), self._arrived.wait())
                continue
            delay = self._pacer.free_at() - time.monotonic()
            if delay > 0:
                await race(stopping.wait(), asyncio.sleep(delay))
                continue
            await self._deliver_next()

    async def _deliver_next(self) -> None:
        if self.failing is not None and time.monotonic() < self._probe_at:
            tickets = list(self._queue)
            self._queue.clear()
            await self._give_up(tickets, "channel_failing", self.failing)
            return
        take = len(self._queue) if self.channel.human else 1
        tickets = [self._queue.popleft() for _ in range(take)]
        self._queued.set(len(self._queue))
        alerts = by_significance([ticket.alert for ticket in tickets])
        slot = self._pacer.reserve(time.monotonic())
        answer = await self.channel.send(alerts)
        slot.done(time.monotonic())
        await self._handle(tickets, alerts, answer)

    async def _handle(self, tickets: list[Ticket], alerts: list[Alert], answer: Answer) -> None:
        now = time.monotonic()
        match answer:
            case Accepted():
                self._backoff.reset()
                if self.failing is not None:
                    log.info("channel %s accepts again", self.name)
                    self.failing = None
                    self._metrics.failing.labels(self.name).set(0)
                if answer.pause_s > 0:
                    self._pacer.pause(now + answer.pause_s)
                    self._metrics.rate_limited_seconds.labels(self.name).inc(answer.pause_s)
                digest = len(tickets) > 1
                self._metrics.sent.labels(self.name, "digest" if digest else "alert").inc()
                await self._finish(tickets, "digested" if digest else "sent")
                accepted_s = time.time()
                for alert in alerts:
                    self._accepted_seconds.observe(
                        max(0.0, accepted_s - alert.detected_at_ms / 1000))
            case RateLimited():
                self._metrics.rate_limited.labels(self.name).inc()
                self._metrics.rate_limited_seconds.labels(self.name).inc(answer.retry_after_s)
                log.info("channel %s rate limited: waiting %.1fs", self.name,
                         answer.retry_after_s)
                self._pacer.pause(now + answer.retry_after_s)
                self._requeue(tickets)
            case Transient():
                self._metrics.failures.labels(self.name, answer.reason).inc()
                delay = self._backoff.next_delay()
                log.warning("channel %s: %s (%s); retrying in %.1fs", self.name,
                            answer.reason, answer.detail, delay)
                self._pacer.pause(now + delay)
                cutoff_ms = (time.time() - self._deadline_s) * 1000
                expired = [t for t in tickets if t.alert.detected_at_ms < cutoff_ms]
                self._requeue([t for t in tickets if t.alert.detected_at_ms >= cutoff_ms])
                if expired:
                    await self._give_up(expired, answer.reason,
                                        f"gave up after {self._deadline_s:.0f}s: "
                                        f"{answer.detail}")
            case Refused():
                self._metrics.failures.labels(self.name, answer.reason).inc()
                if self.failing is None:
                    log.error("channel %s refused permanently (%s: %s): its alerts go to "
                              "notifications.dead until it accepts again", self.name,
                              answer.reason, answer.detail)
                    self._metrics.failing.labels(self.name).set(1)
                self.failing = f"{answer.reason}: {answer.detail}"
                self._probe_at = now + self._probe_s
                await self._give_up(tickets, answer.reason, answer.detail)

    def _requeue(self, tickets: list[Ticket]) -> None:
        self._queue.extendleft(reversed(tickets))
        self._queued.set(len(self._queue))

    async def _give_up(self, tickets: list[Ticket], reason: str, detail: str) -> None:
        self._metrics.dead_letters.labels(self.name, reason).inc(len(tickets))
        await self._finish(tickets, "dead", reason=reason, detail=detail)

    async def _finish(self, tickets: list[Ticket], outcome: Outcome, *, reason: str = "",
                      detail: str = "") -> None:
        """Record the outcome on the bus (insisting while it is down: these alerts must not
        be acknowledged before it is written), then settle their tickets."""
        alerts = [ticket.alert for ticket in tickets]
        await while_bus_down(
            partial(self._ledger.record, self.name, alerts, outcome, reason=reason,
                    detail=detail),
            self._bus_backoff, stopping=None, counter=self._metrics.bus_errors,
            what=f"recording {self.name}'s outcome again")
        if outcome != "dead":
            self._metrics.alerts_delivered.labels(self.name, outcome).inc(len(tickets))
        for ticket in tickets:
            ticket.settle(self.name)

