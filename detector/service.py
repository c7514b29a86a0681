"""The detector: consume ``ticks.{p}`` with group ``detector``, publish ``alerts``.

Exactly-once as the trader sees it comes from three rules: an entry is acknowledged only
after its alerts are published; a restart replays acknowledged history to rebuild windows
without publishing anything; and an alert id already on the ``alerts`` stream (found at
start or published since) is never published again.

Rules come from the ``rules`` stream, where the gateway's admin API writes them: at start
the newest rule set there is applied (an empty stream is seeded with the one rule of
``WINDOW_S``/``THRESHOLD_*``/``COOLDOWN_S``), and a task follows the stream with a short
block so that a change is applied to the running engine within a second, between batches.

An entry that cannot be decoded, or on which the engine raises ``POISON_MAX_ATTEMPTS``
times, is moved to ``ticks.{p}.dead`` and acknowledged (``common.dead_letters``): it costs
that entry, never the partition or the process.

Where this sits in a tick's path: docs/architecture.md#a-tick-from-socket-to-browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Final, TypeVar

import msgspec

from common.backoff import Backoff
from common.bus import (
    BusUnavailable,
    Delivery,
    GroupConsumer,
    OwnershipLost,
    Record,
    Retention,
    Sharing,
    Transport,
)
from common.dead_letters import (
    DEAD_RETENTION,
    Attempts,
    DeadEntry,
    attempt,
    dead_entry,
    dead_record,
    dead_stream,
    describe_error,
)
from common.partitioning import (
    ALERTS_STREAM,
    DETECTOR_GROUP,
    DETECTOR_HEARTBEAT_STREAM,
    HEARTBEATS_KEPT_S,
    RULES_KEPT,
    RULES_STREAM,
    ticks_stream,
    ticks_streams,
)
from common.runner import Runtime, Service, wait_or_stop, while_bus_down
from common.schemas import (
    Alert,
    DetectorHeartbeat,
    RuleSet,
    decode_ticks,
    encode_alert,
    encode_heartbeat,
)
from common.settings import DetectorSettings
from detector.engine import DetectionEngine
from detector.metrics import DetectorMetrics
from detector.ownership import Ownership, partition_of_stream
from detector.published import SeenIds, load_published
from detector.rules import rule_from_settings
from detector.rules_follower import RulesFollower

log = logging.getLogger(__name__)

T = TypeVar("T")

# Lag is for dashboards and alerts that look at minutes; a few XINFO calls every 2 s cost
# Redis nothing and keep the gauge fresh enough for a 1 s scrape to see movement.
LAG_REFRESH_S: Final = 2.0


class Detector:
    def __init__(self, settings: DetectorSettings, transport: Transport, *,
                 metrics: DetectorMetrics | None = None) -> None:
        self._settings = settings
        self._transport = transport
        self.metrics = metrics if metrics is not None else DetectorMetrics()
        self.consumer: GroupConsumer | None = None
        self.engine = DetectionEngine(rule_from_settings(settings))
        # The engine set here, not bound at construction: tests swap it for one that fails.
        self._rules = RulesFollower(settings, transport, self.metrics,
                                    lambda rule_set: self.engine.set_rules(rule_set.rules))
        self.streams = (ticks_streams(settings.tick_partitions) if settings.shared
                        else [ticks_stream(p) for p in settings.partitions])
        self.ownership = Ownership(settings.tick_partitions, self.metrics)
        self._seen = SeenIds()
        self._attempts = Attempts(settings.poison_max_attempts)
        self.metrics.declare_streams(self.streams)
        self._backoff = Backoff()
        self.rebuilt = asyncio.Event()  # set once the first rebuild is done
        self._rebuilding_since: float | None = time.perf_counter()
        # For the heartbeat: the newest live event time processed, entries behind (if known).
        self.newest_event_ms: int | None = None
        self.behind: int | None = None

    async def run(self, stopping: asyncio.Event) -> None:
        settings = self._settings
        await self._transport.declare(self.streams, Retention(max_age_s=settings.ticks_retention_s))
        await self._transport.declare([dead_stream(s) for s in self.streams], DEAD_RETENTION)
        await self._transport.declare([ALERTS_STREAM], Retention(max_len=settings.alerts_maxlen))
        await self._transport.declare([RULES_STREAM], Retention(max_len=RULES_KEPT))
        await self._retry(self._rules.load, stopping)
        await self._retry(self._load_published, stopping)
        # What the windows of every kind reach back (a volume rule's window and baseline).
        consumer = self._transport.group_consumer(
            DETECTOR_GROUP, settings.detector_consumer, self.streams,
            rebuild_s=self.engine.history_s + settings.rebuild_margin_s,
            sharing=Sharing(settings.lease_s) if settings.shared else None,
        )
        self.consumer = consumer
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._rules.follow(stopping), name="detector-rules")
                await self._consume(consumer, stopping)
        finally:
            # Hand the partitions over now rather than when a lease runs out.
            with contextlib.suppress(BusUnavailable):
                await consumer.close()
            self.ownership.update(frozenset(), stalled=False)

    async def _consume(self, consumer: GroupConsumer, stopping: asyncio.Event) -> None:
        settings = self._settings
        fetched_at = time.monotonic()
        while not stopping.is_set():
            batch = await self._retry(
                lambda: consumer.fetch(settings.read_count, settings.read_block_ms), stopping)
            if batch is None:
                break
            # Longer than a lease since the last fetch: whatever left was taken, not given.
            now = time.monotonic()
            stalled, fetched_at = now - fetched_at > settings.lease_s, now
            fetched = bool(batch)
            batch, gained = await self._follow_ownership(consumer.owned(), batch,
                                                         stalled=stalled)
            # Rebuilt once a fetch brings no replay (the one that gained a stream may be
            # empty: its replay comes next).
            if (self._rebuilding_since is not None and not (batch and batch[0].replay)
                    and (fetched or not gained)):
                self._rebuild_done()
            if batch:
                await self._handle(batch, consumer)
        log.info("detector stopped reading")

    async def _follow_ownership(self, owned: frozenset[str], batch: list[Delivery], *,
                                stalled: bool) -> tuple[list[Delivery], bool]:
        """Apply what moved since the last fetch: the deliveries this detector may process,
        and whether a stream arrived."""
        moves = self.ownership.update(owned, stalled=stalled)
        if moves.left:
            self._forget(moves.left)
        if moves.gained:
            if self._rebuilding_since is None:
                self._rebuilding_since = time.perf_counter()
            # The previous owner may have published since this detector read the history.
            await self._retry(lambda: self._load_published(
                {partition_of_stream(s) for s in moves.gained}), None)
        return [d for d in batch if d.stream in owned], bool(moves.gained)

    def _forget(self, streams: frozenset[str]) -> None:
        forgotten = self.engine.forget(self.ownership.symbols_of(streams))
        log.info("state of %d symbols forgotten with their partitions", forgotten)
        self.metrics.symbols_tracked.set(self.engine.symbols_tracked)

    def _rebuild_done(self) -> None:
        assert self._rebuilding_since is not None
        took_s = time.perf_counter() - self._rebuilding_since
        self._rebuilding_since = None
        self.metrics.rebuild_seconds.set(took_s)
        log.info("windows rebuilt for %d symbols in %.2fs", self.engine.symbols_tracked, took_s)
        self.rebuilt.set()

    async def watch_lag(self, stopping: asyncio.Event, every_s: float = LAG_REFRESH_S) -> None:
        """Refresh the consumer-lag gauges until shutdown, as a task of its own.

        Apart from the detection loop so that a slow or failing lag query can never delay a
        batch; a bus outage only leaves the gauges at their last value (the loop counts and
        logs the outage itself).
        """
        while True:
            consumer = self.consumer
            if consumer is not None:
                try:
                    lags = await consumer.lag()
                except BusUnavailable as exc:
                    log.debug("consumer lag not refreshed: %s", exc)
                else:
                    self.metrics.set_lag(lags, time.time())
                    self.behind = sum(lag.behind for lag in lags.values())
            if await wait_or_stop(stopping, every_s):
                return

    def heartbeat(self) -> DetectorHeartbeat:
        return DetectorHeartbeat(
            consumer=self._settings.detector_consumer,
            partitions=self.ownership.partitions(), sent_at_ms=int(time.time() * 1000),
            newest_event_ms=self.newest_event_ms, behind=self.behind,
            rebuilding=self._rebuilding_since is not None)

    async def beat(self, stopping: asyncio.Event) -> None:
        """Publish a heartbeat every ``DETECTOR_HEARTBEAT_S`` until shutdown, as a task of
        its own.

        This is how the gateways tell "no detector consuming" and "detector behind" without
        asking the bus about the group: group introspection differs per backend (``XINFO
        CONSUMERS`` on Redis, the group coordinator on Kafka) while a small record on a
        capped stream reads the same everywhere. A detector that crash-loops stops beating;
        one that is alive but stuck beats with a ``newest_event_ms`` that falls behind the
        feed. A bus outage skips beats (the detection loop reports the outage itself).
        """
        declared = False
        while True:
            try:
                if not declared:
                    await self._transport.declare([DETECTOR_HEARTBEAT_STREAM],
                                                  Retention(max_age_s=HEARTBEATS_KEPT_S))
                    declared = True
                await self._transport.publish([Record(
                    DETECTOR_HEARTBEAT_STREAM, self._settings.detector_consumer,
                    encode_heartbeat(self.heartbeat()))])
            except BusUnavailable as exc:
                log.debug("heartbeat not published: %s", exc)
            if await wait_or_stop(stopping, self._settings.detector_heartbeat_s):
                return

    @property
    def rule_set(self) -> RuleSet | None:
        """The entry of the rules stream in force."""
        return self._rules.current

    async def _load_published(self, partitions: set[int] | None = None) -> None:
        await load_published(self._transport, self._settings, self._seen, self.engine,
                             partitions)

    async def _handle(self, batch: list[Delivery], consumer: GroupConsumer) -> None:
        started = time.perf_counter()
        now_ms = int(time.time() * 1000)
        fresh: list[tuple[str, Alert]] = []  # (the stream it came from, the alert)
        poisoned: list[DeadEntry] = []
        for delivery in batch:
            if delivery.replay:
                self._rebuild_from(delivery)
                continue
            outcome = self._detect(delivery, now_ms)
            if isinstance(outcome, DeadEntry):
                poisoned.append(outcome)
                continue
            for alert in outcome:
                if alert.id in self._seen:
                    self.metrics.duplicates_skipped.inc()
                    continue
                fresh.append((delivery.stream, alert))
        published = await self._publish(fresh, consumer)
        if published:
            published_s = time.time()
            for alert in published:
                self._seen.add(alert.id)
                self.metrics.alerts.labels(alert.direction).inc()
                # Clamped: a clock behind the exchange's would make it negative.
                self.metrics.alert_latency.observe(
                    max(0.0, published_s - alert.event_time_ms / 1000))
                log.info("alert %s %s %s %+.2f%% at %s (rule %s, level %d)", alert.kind,
                         alert.symbol, alert.direction, alert.change_pct, alert.price,
                         alert.rule, alert.level)
        if poisoned:
            await self._bury(poisoned, consumer)
        owned = self.ownership.streams
        await self._retry(lambda: consumer.ack([d for d in batch if d.stream in owned]), None)
        self.metrics.symbols_tracked.set(self.engine.symbols_tracked)
        if not batch[0].replay:
            self.metrics.batch_seconds.observe(time.perf_counter() - started)

    def _rebuild_from(self, delivery: Delivery) -> None:
        """Feed a replayed entry to the windows. One that cannot be decoded or raises is
        skipped: it was buried on its live pass (replay has no side effects), and a raise
        here would stop every restart within the rebuild span."""
        try:
            ticks = decode_ticks(delivery.payload)
        except msgspec.DecodeError:
            self.metrics.bad_payloads.inc()
            return
        try:
            self.engine.rebuild(ticks)
        except Exception as exc:
            self.metrics.replay_errors.inc()
            log.warning("replayed entry %s of %s skipped: %s", delivery.position,
                        delivery.stream, describe_error(exc))
            return
        self.metrics.ticks_replayed.inc(len(ticks))

    def _detect(self, delivery: Delivery, now_ms: int) -> list[Alert] | DeadEntry:
        """The alerts of one live entry, or the entry to bury (``common.dead_letters``).

        Undecodable: at once, as decoding the same bytes again gives the same error. The
        engine raising: it runs the entry again, up to ``POISON_MAX_ATTEMPTS`` in all.
        A re-run starts from what the failed run left: the ticks before the one that
        raised are in the windows already (an observation repeated at the same time
        changes no window), and an alert one of them fired in the failed run is lost to
        its cooldown. The engine checks its input and does not raise on any tick that
        decodes; this is the net under a bug, so that it costs one entry, not the stream.
        """
        try:
            ticks = decode_ticks(delivery.payload)
        except msgspec.DecodeError as exc:
            self.metrics.bad_payloads.inc()
            return dead_entry(delivery, "undecodable", exc, attempts=1)
        self.metrics.ticks_processed.inc(len(ticks))
        if ticks:  # of every kind, as the gateways' feed health reads them
            newest = max(tick.event_time_ms for tick in ticks)
            if self.newest_event_ms is None or newest > self.newest_event_ms:
                self.newest_event_ms = newest
        return attempt(lambda: self.engine.process(ticks, now_ms), delivery, self._attempts)

    async def _bury(self, entries: list[DeadEntry], consumer: GroupConsumer) -> None:
        """Write the poison entries to their dead streams; those of a stream this member
        lost meanwhile are left to its next owner (``_write_owned``)."""
        buried = await self._write_owned(
            [(entry.stream, dead_record(entry)) for entry in entries], consumer)
        sources = {stream for stream, _ in buried}
        for entry in entries:
            if entry.stream not in sources:
                continue
            self.metrics.poison_entries.labels(entry.stream, entry.reason).inc()
            log.error("entry %s of %s moved to %s after %d attempt(s) (%s): %s",
                      entry.position, entry.stream, dead_stream(entry.stream), entry.attempts,
                      entry.reason, entry.error)

    async def _publish(self, fresh: list[tuple[str, Alert]], consumer: GroupConsumer
                       ) -> list[Alert]:
        """Publish the alerts; those of a stream found lost are dropped (its new owner
        publishes them). Returns what was published."""
        records = [(stream, Record(ALERTS_STREAM, a.symbol, encode_alert(a)))
                   for stream, a in fresh]
        written = await self._write_owned(records, consumer)
        self.metrics.alerts_dropped.inc(len(records) - len(written))
        kept = {stream for stream, _ in written}
        return [a for stream, a in fresh if stream in kept]

    async def _write_owned(self, records: list[tuple[str, Record]], consumer: GroupConsumer
                           ) -> list[tuple[str, Record]]:
        """Write ``(source stream, record)`` pairs, fenced by ownership of their sources: a
        stream found lost is lost here too (its state goes), its records are dropped and the
        rest written. Returns what was written."""
        while records:
            sources = frozenset(stream for stream, _ in records)
            try:
                await self._retry(partial(consumer.publish, [r for _, r in records],
                                          sources=sources), None)
            except OwnershipLost as exc:
                lost = (exc.streams & sources) or sources  # never the same set again
                log.info("%s lost while writing: left to its next owner", ", ".join(lost))
                self.ownership.lose(lost)
                self._forget(lost)
                records = [(stream, r) for stream, r in records if stream not in lost]
                continue
            return records
        return []

    async def _retry(self, operation: Callable[[], Awaitable[T]],
                     stopping: asyncio.Event | None) -> T | None:
        """Retry while the bus is down (``common.runner.while_bus_down``): with
        ``stopping``, give up on shutdown; without it, insist."""
        return await while_bus_down(operation, self._backoff, stopping=stopping,
                                    counter=self.metrics.bus_errors)


async def main(settings: DetectorSettings, stopping: asyncio.Event, runtime: Runtime) -> None:
    detector = Detector(settings, runtime.transport, metrics=DetectorMetrics(runtime.registry))
    async with asyncio.TaskGroup() as tasks:
        loop = tasks.create_task(detector.run(stopping), name="detector-loop")
        tasks.create_task(detector.watch_lag(stopping), name="detector-lag")
        tasks.create_task(detector.beat(stopping), name="detector-heartbeat")
        runtime.healthy = lambda: not loop.done()


SERVICE = Service("detector", DetectorSettings, main,
                  metrics_port="detector_metrics_port")
