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
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Final, TypeVar

import msgspec

from common import rules_stream
from common.backoff import Backoff
from common.bus import (
    BroadcastReader,
    BusUnavailable,
    Delivery,
    GroupConsumer,
    OwnershipLost,
    Record,
    Retention,
    Transport,
)
from common.dead_letters import (
    DEAD_RETENTION,
    Attempts,
    DeadEntry,
    attempt,
    bury,
    dead_entry,
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
)
from common.rules_stream import RulesView
from common.runner import Runtime, Service, wait_or_stop, while_bus_down
from common.schemas import (
    Alert,
    DetectorHeartbeat,
    RuleSet,
    decode_alert,
    decode_ticks,
    encode_alert,
    encode_heartbeat,
)
from common.settings import DetectorSettings
from detector.engine import DetectionEngine
from detector.metrics import DetectorMetrics
from detector.rules import describe_rule, rule_from_settings

log = logging.getLogger(__name__)

T = TypeVar("T")

SEEN_IDS_CAPACITY = 100_000
# Lag is for dashboards and alerts that look at minutes; a few XINFO calls every 2 s cost
# Redis nothing and keep the gauge fresh enough for a 1 s scrape to see movement.
LAG_REFRESH_S: Final = 2.0


class SeenIds:
    """Bounded memory of published alert ids, oldest forgotten first."""

    def __init__(self, capacity: int = SEEN_IDS_CAPACITY) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def __contains__(self, alert_id: object) -> bool:
        return alert_id in self._ids

    def add(self, alert_id: str) -> None:
        self._ids[alert_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)


class Detector:
    def __init__(self, settings: DetectorSettings, transport: Transport, *,
                 metrics: DetectorMetrics | None = None) -> None:
        self._settings = settings
        self._transport = transport
        self.metrics = metrics if metrics is not None else DetectorMetrics()
        self.consumer: GroupConsumer | None = None
        self.engine = DetectionEngine(rule_from_settings(settings))
        self._rules = RulesView()  # the rules stream as read here, and the entry in force
        self._rules_reader: BroadcastReader | None = None
        self.streams = [ticks_stream(p) for p in settings.partitions]
        self._seen = SeenIds()
        self._attempts = Attempts(settings.poison_max_attempts)
        self.metrics.declare_streams(self.streams)
        self._backoff = Backoff()
        self.rebuilt = asyncio.Event()
        # For the heartbeat: the newest live event time processed, entries behind (if known).
        self.newest_event_ms: int | None = None
        self.behind: int | None = None

    async def run(self, stopping: asyncio.Event) -> None:
        settings = self._settings
        await self._transport.declare(self.streams, Retention(max_age_s=settings.ticks_retention_s))
        await self._transport.declare([dead_stream(s) for s in self.streams], DEAD_RETENTION)
        await self._transport.declare([ALERTS_STREAM], Retention(max_len=settings.alerts_maxlen))
        await self._transport.declare([RULES_STREAM], Retention(max_len=RULES_KEPT))
        await self._retry(self._load_rules, stopping)
        await self._retry(self._load_published, stopping)
        longest_s = max(rule.window_s for rule in self.engine.rules)
        consumer = self._transport.group_consumer(
            DETECTOR_GROUP, settings.detector_consumer, self.streams,
            rebuild_s=longest_s + settings.rebuild_margin_s,
        )
        self.consumer = consumer
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._follow_rules(stopping), name="detector-rules")
            await self._consume(consumer, stopping)

    async def _consume(self, consumer: GroupConsumer, stopping: asyncio.Event) -> None:
        settings = self._settings
        rebuild_started = time.perf_counter()
        replaying = True
        while not stopping.is_set():
            batch = await self._retry(
                lambda: consumer.fetch(settings.read_count, settings.read_block_ms), stopping)
            if batch is None:
                break
            if replaying and not (batch and batch[0].replay):
                replaying = False
                self.metrics.rebuild_seconds.set(time.perf_counter() - rebuild_started)
                log.info("windows rebuilt for %d symbols in %.2fs",
                         self.engine.symbols_tracked, time.perf_counter() - rebuild_started)
                self.rebuilt.set()
            if batch:
                await self._handle(batch, consumer)
        log.info("detector stopped reading")

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
            partitions=list(self._settings.partitions), sent_at_ms=int(time.time() * 1000),
            newest_event_ms=self.newest_event_ms, behind=self.behind,
            rebuilding=not self.rebuilt.is_set())

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

    async def _load_rules(self) -> None:
        """Apply the rule set in force on the ``rules`` stream; seed an empty stream (or one
        with no valid entry) with the one rule of the environment. When two detectors seed
        at once, both entries carry version 1 and the first on the stream wins for everyone
        (``common.rules_stream`` decides, for every reader)."""
        self._rules_reader = reader = self._transport.broadcast_reader(RULES_STREAM)
        self._rules = await rules_stream.load(reader, RulesView(on_skip=self._count_skipped))
        if self._rules.current is None:
            seed = rules_stream.next_version(
                None, [rule_from_settings(self._settings)],
                by=f"detector {self._settings.detector_consumer}",
                change="seeded from WINDOW_S, THRESHOLD_UP_PCT, THRESHOLD_DOWN_PCT, COOLDOWN_S")
            await rules_stream.write(self._transport, seed)
            self._rules = await rules_stream.load(reader)  # a re-read: its skips were counted
            self._rules.on_skip = self._count_skipped
        if self._rules.current is not None:
            self._apply_rules(self._rules.current, "in force")

    def _count_skipped(self, kind: str) -> None:
        self.metrics.rules_skipped.labels(kind).inc()

    async def _follow_rules(self, stopping: asyncio.Event) -> None:
        """Apply every newer rule set as it lands on the stream, until shutdown."""
        reader = self._rules_reader or self._transport.broadcast_reader(RULES_STREAM)
        block_ms = min(rules_stream.FOLLOW_BLOCK_MS, self._settings.read_block_ms)
        try:
            changes = rules_stream.follow(reader, self._rules, block_ms=block_ms,
                                          stopping=stopping)
            async with contextlib.aclosing(changes):
                async for rule_set in changes:
                    self._apply_rules(rule_set, "applied")
        finally:
            await reader.close()

    def _apply_rules(self, rule_set: RuleSet, what: str) -> None:
        self.engine.set_rules(rule_set.rules)  # valid: a RuleSet passed check_rules
        self._log_rules(what)

    @property
    def rule_set(self) -> RuleSet | None:
        """The entry of the rules stream in force."""
        return self._rules.current

    def _log_rules(self, what: str) -> None:
        rule_set = self.rule_set
        assert rule_set is not None
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(rule_set.updated_at_ms / 1000))
        log.info("rules version %d %s (by %s at %s: %s): %s", rule_set.version, what,
                 rule_set.updated_by, when, rule_set.change or "-",
                 "; ".join(describe_rule(r) for r in rule_set.rules))

    async def _load_published(self) -> None:
        """Seed dedupe and cooldowns from the alert history so a restart stays quiet."""
        reader = self._transport.broadcast_reader(ALERTS_STREAM)
        published = await reader.backlog(min(self._settings.alerts_maxlen, SEEN_IDS_CAPACITY))
        for delivery in published:
            try:
                alert = decode_alert(delivery.payload)
            except msgspec.DecodeError:
                continue
            self._seen.add(alert.id)
            name = alert.rule
            if name is None:  # written before rules had names: its window tells the rule
                rule = self.engine.rule_for_window(alert.window_s)
                if rule is None:
                    continue
                name = rule.name
            self.engine.note_alert(alert.symbol, alert.event_time_ms, rule=name,
                                   change_pct=alert.change_pct, level=alert.level)
        log.info("%d published alerts remembered", len(published))

    async def _handle(self, batch: list[Delivery], consumer: GroupConsumer) -> None:
        started = time.perf_counter()
        now_ms = int(time.time() * 1000)
        fresh: list[Alert] = []
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
                fresh.append(alert)
        if fresh:
            records = [Record(ALERTS_STREAM, a.symbol, encode_alert(a)) for a in fresh]
            await self._retry(lambda: self._transport.publish(records), None)
            published_s = time.time()
            for alert in fresh:
                self._seen.add(alert.id)
                self.metrics.alerts.labels(alert.direction).inc()
                # Clamped: a clock behind the exchange's would make it negative.
                self.metrics.alert_latency.observe(
                    max(0.0, published_s - alert.event_time_ms / 1000))
                log.info("alert %s %s %+.2f%% at %s (rule %s, level %d)", alert.symbol,
                         alert.direction, alert.change_pct, alert.price, alert.rule,
                         alert.level)
        lost = await self._bury(poisoned, consumer)
        done = [d for d in batch if d.stream not in lost] if lost else batch
        await self._retry(lambda: consumer.ack(done), None)
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
        if ticks:
            newest = max(tick.event_time_ms for tick in ticks)
            if self.newest_event_ms is None or newest > self.newest_event_ms:
                self.newest_event_ms = newest
        return attempt(lambda: self.engine.process(ticks, now_ms), delivery, self._attempts)

    async def _bury(self, entries: list[DeadEntry], consumer: GroupConsumer) -> frozenset[str]:
        """Write the poison entries to their dead streams, through the consumer's fenced
        publish; the streams this member lost meanwhile (their entries must not be
        acknowledged: the next owner gets them again)."""
        if not entries:
            return frozenset()
        sources = {entry.stream for entry in entries}
        try:
            await self._retry(lambda: bury(partial(consumer.publish, sources=sources),
                                           entries), None)
        except OwnershipLost as exc:
            log.info("poison entries of %s left to their next owner", ", ".join(exc.streams))
            return exc.streams
        for entry in entries:
            self.metrics.poison_entries.labels(entry.stream, entry.reason).inc()
            log.error("entry %s of %s moved to %s after %d attempt(s) (%s): %s",
                      entry.position, entry.stream, dead_stream(entry.stream), entry.attempts,
                      entry.reason, entry.error)
        return frozenset()

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
