"""The notifier: consume ``alerts`` with group ``notifier``, deliver each alert to the
channels its routes name, acknowledge it when all of them are done.

At least once, never twice: an alert is acknowledged only after every channel routed to it
has written "done" to the ledger (``notifier.ledger``), and a redelivered alert (after a
crash, or claimed back on Redis) skips the channels the ledger says are done. One worker
per channel (``notifier.dispatch``) paces, folds bursts into digests, retries and gives up.

An ``alerts`` entry that cannot be decoded, or whose routing raises ``POISON_MAX_ATTEMPTS``
times, goes to ``alerts.dead`` and is acknowledged (``common.dead_letters``); what a channel
could not deliver goes to ``notifications.dead`` (``notifier.ledger``).

The configuration (``NOTIFY_CONFIG``, ``notifier.config``) is read once at start; a bad
file stops the service with exit 2 naming the channel and the field.

Where this sits: docs/architecture.md#the-notifier.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Final, TypeVar

import msgspec

from common.aio import race
from common.backoff import Backoff
from common.bus import Delivery, GroupConsumer, Retention, Transport
from common.dead_letters import (
    DEAD_RETENTION,
    Attempts,
    DeadEntry,
    attempt,
    bury,
    dead_entry,
    dead_stream,
)
from common.partitioning import ALERTS_STREAM, NOTIFIER_GROUP
from common.runner import Runtime, Service, while_bus_down
from common.schemas import Alert, decode_alert
from common.settings import NotifierSettings
from notifier.channels.registry import build_channel
from notifier.config import NotifyConfig, load_config
from notifier.dispatch import ChannelWorker, Ticket
from notifier.ledger import Ledger
from notifier.metrics import NotifierMetrics
from notifier.pacing import Pacer, SharedWindows
from notifier.routing import Router

log = logging.getLogger(__name__)

T = TypeVar("T")

# Alerts held (delivered, not yet acknowledged) at most; past it, reading pauses until
# channels catch up. Alerts are ~1 kB: this bounds memory, never what gets delivered.
MAX_HELD: Final = 10_000


class Notifier:
    """Reads, routes, tracks and acknowledges; the channel workers deliver."""

    def __init__(self, settings: NotifierSettings, config: NotifyConfig,
                 transport: Transport, *, metrics: NotifierMetrics | None = None) -> None:
        self._settings = settings
        self._transport = transport
        self.metrics = metrics if metrics is not None else NotifierMetrics()
        self.router = Router(config.route)
        self.ledger = Ledger(transport, kept_s=settings.notify_ledger_kept_s)
        shared = SharedWindows()
        self.workers: dict[str, ChannelWorker] = {}
        for channel_config in config.channel:
            channel = build_channel(channel_config, timeout_s=settings.notify_timeout_s)
            self.workers[channel.name] = ChannelWorker(
                channel, Pacer(channel.budget, shared), self.ledger, self.metrics,
                retry_deadline_s=settings.notify_retry_deadline_s)
        self.metrics.declare_channels(self.workers)
        self._held: dict[tuple[str, str], Ticket] = {}  # (stream, position) → its ticket
        self._done: list[Delivery] = []
        self._done_ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._backoff = Backoff()
        self._attempts = Attempts(settings.poison_max_attempts)
        self.metrics.declare_streams([ALERTS_STREAM])
        self.consumer: GroupConsumer | None = None
        self.started = asyncio.Event()

    def details(self) -> Mapping[str, object]:
        """The readiness detail: each channel's state."""
        return {name: {"failing": worker.failing is not None, "reason": worker.failing,
                       "queued": worker.queued}
                for name, worker in self.workers.items()}

    async def run(self, stopping: asyncio.Event) -> None:
        settings = self._settings
        try:
            await self._retry(lambda: self._transport.declare(
                [ALERTS_STREAM], Retention(max_len=settings.alerts_maxlen)), stopping)
            await self._retry(lambda: self._transport.declare(
                [dead_stream(ALERTS_STREAM)], DEAD_RETENTION), stopping)
            await self._retry(self.ledger.declare, stopping)
            loaded = await self._retry(self.ledger.load, stopping)
            if loaded is None:
                return
            log.info("%d deliveries remembered; channels: %s", loaded,
                     ", ".join(f"{w.name} ({w.channel.kind})" for w in self.workers.values()))
            self.consumer = consumer = self._transport.group_consumer(
                NOTIFIER_GROUP, settings.notifier_consumer, [ALERTS_STREAM], rebuild_s=0)
            self.started.set()
            delivered = asyncio.Event()  # the workers are done: what they settled is final
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._acknowledge(consumer, delivered), name="notifier-ack")
                async with asyncio.TaskGroup() as delivering:
                    for worker in self.workers.values():
                        delivering.create_task(worker.run(stopping),
                                               name=f"notifier-{worker.name}")
                    await self._consume(consumer, stopping)
                delivered.set()
        finally:
            for worker in self.workers.values():
                await worker.channel.aclose()

    async def _consume(self, consumer: GroupConsumer, stopping: asyncio.Event) -> None:
        settings = self._settings
        while not stopping.is_set():
            if not self._room.is_set():
                await wait_either(stopping, self._room)
                continue
            batch = await self._retry(
                lambda: consumer.fetch(settings.read_count, settings.read_block_ms), stopping)
            if batch is None:
                break
            poisoned: list[tuple[Delivery, DeadEntry]] = []
            for delivery in batch:
                entry = self._take(delivery)
                if entry is not None:
                    poisoned.append((delivery, entry))
            if poisoned:
                await self._bury(poisoned)
        log.info("notifier stopped reading")

    def _take(self, delivery: Delivery) -> DeadEntry | None:
        """Route one delivered alert to its workers, or settle it at once; or the entry to
        bury (``common.dead_letters``): undecodable at once, or routing it raised
        ``POISON_MAX_ATTEMPTS`` times."""
        if delivery.replay:
            return None
        key = (delivery.stream, delivery.position)
        if key in self._held:  # claimed back while still in hand (Redis, CLAIM_MIN_IDLE_S)
            return None
        try:
            alert = decode_alert(delivery.payload)
        except msgspec.DecodeError as exc:
            self.metrics.alerts_skipped.labels("undecodable").inc()
            return dead_entry(delivery, "undecodable", exc, attempts=1)
        self.metrics.alerts_received.inc()
        age_s = time.time() - alert.detected_at_ms / 1000
        if age_s > self._settings.notify_max_age_s:
            self.metrics.alerts_skipped.labels("stale").inc()
            log.info("alert %s is %.0fs old (NOTIFY_MAX_AGE_S=%.0f): not sent", alert.id,
                     age_s, self._settings.notify_max_age_s)
            self._settled(delivery)
            return None
        routed = attempt(lambda: self._route(delivery, alert), delivery, self._attempts)
        if isinstance(routed, DeadEntry):
            return routed
        ticket, workers = routed
        if not workers:
            self._settled(delivery)
            return None
        self._held[key] = ticket
        if len(self._held) >= MAX_HELD:
            self._room.clear()
        for worker in workers:
            worker.put(ticket)
        return None

    def _route(self, delivery: Delivery, alert: Alert) -> tuple[Ticket, list[ChannelWorker]]:
        """The alert's ticket and the workers of the channels not done with it yet; no
        side effect but a metric, so that a raise leaves nothing half done."""
        routed = self.router.channels_for(alert)
        if not routed:
            self.metrics.alerts_skipped.labels("unrouted").inc()
        channels = [name for name in routed if not self.ledger.is_done(alert.id, name)]
        workers = [self.workers[name] for name in channels]
        return Ticket(delivery, alert, channels, self._ticket_done), workers

    async def _bury(self, poisoned: list[tuple[Delivery, DeadEntry]]) -> None:
        """Write the poison entries to ``alerts.dead``, then settle them (acknowledged)."""
        await self._retry(lambda: bury(self._transport.publish, [e for _, e in poisoned]),
                          None)
        for delivery, entry in poisoned:
            self.metrics.poison_entries.labels(entry.stream, entry.reason).inc()
            log.error("entry %s of %s moved to %s after %d attempt(s) (%s): %s",
                      entry.position, entry.stream, dead_stream(entry.stream), entry.attempts,
                      entry.reason, entry.error)
            self._settled(delivery)

    def _ticket_done(self, ticket: Ticket) -> None:
        self._held.pop((ticket.delivery.stream, ticket.delivery.position), None)
        if len(self._held) < MAX_HELD:
            self._room.set()
        self._settled(ticket.delivery)

    def _settled(self, delivery: Delivery) -> None:
        self._done.append(delivery)
        self._done_ready.set()

    async def _acknowledge(self, consumer: GroupConsumer, delivered: asyncio.Event) -> None:
        """Acknowledge settled alerts in batches until the workers have stopped, then the
        last of them."""
        while True:
            await wait_either(delivered, self._done_ready)
            self._done_ready.clear()
            batch, self._done = self._done, []
            if batch:
                await self._retry(partial(consumer.ack, batch), None)
            if delivered.is_set() and not self._done:
                return

    async def _retry(self, operation: Callable[[], Awaitable[T]],
                     stopping: asyncio.Event | None) -> T | None:
        """Retry while the bus is down (``common.runner.while_bus_down``): with
        ``stopping``, give up on shutdown; without it, insist."""
        return await while_bus_down(operation, self._backoff, stopping=stopping,
                                    counter=self.metrics.bus_errors)


async def wait_either(first: asyncio.Event, second: asyncio.Event) -> None:
    """Until one of the two events is set."""
    if not (first.is_set() or second.is_set()):
        await race(first.wait(), second.wait())


async def main(settings: NotifierSettings, stopping: asyncio.Event, runtime: Runtime) -> None:
    config = load_config(settings.notify_config, os.environ)
    notifier = Notifier(settings, config, runtime.transport,
                        metrics=NotifierMetrics(runtime.registry))
    async with asyncio.TaskGroup() as tasks:
        loop = tasks.create_task(notifier.run(stopping), name="notifier-loop")
        runtime.healthy = lambda: not loop.done()
        runtime.details = notifier.details


SERVICE = Service("notifier", NotifierSettings, main,
                  metrics_port="notifier_metrics_port")
