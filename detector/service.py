"""The detector: consume ``ticks.{p}`` with group ``detector``, publish ``alerts``.

Exactly-once as the trader sees it comes from three rules: an entry is acknowledged only
after its alerts are published; a restart replays acknowledged history to rebuild windows
without publishing anything; and an alert id already on the ``alerts`` stream (found at
start or published since) is never published again.

Rules come from the ``rules`` stream, where the gateway's admin API writes them: at start
the newest rule set there is applied (an empty stream is seeded with the one rule of
``WINDOW_S``/``THRESHOLD_*``/``COOLDOWN_S``), and a task follows the stream with a short
block so that a change is applied to the running engine within a second, between batches.

Where this sits in a tick's path: docs/architecture.md#a-tick-from-socket-to-browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
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
    Sharing,
    Transport,
)
from common.partitioning import (
    ALERTS_STREAM,
    DETECTOR_GROUP,
    DETECTOR_HEARTBEAT_STREAM,
    HEARTBEATS_KEPT_S,
    RULES_KEPT,
    RULES_STREAM,
    partition_of,
    ticks_stream,
    ticks_streams,
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
from detector.ownership import Ownership, partition_of_stream
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
        self.streams = (ticks_streams(settings.tick_partitions) if settings.shared
                        else [ticks_stream(p) for p in settings.partitions])
        self.ownership = Ownership(settings.tick_partitions, self.metrics)
        self._seen = SeenIds()
        self._backoff = Backoff()
        self.rebuilt = asyncio.Event()  # set once the first rebuild is done
        self._rebuilding_since: float | None = time.perf_counter()
        # For the heartbeat: the newest live event time processed, entries behind (if known).
        self.newest_event_ms: int | None = None
        self.behind: int | None = None

    async def run(self, stopping: asyncio.Event) -> None:
        settings = self._settings
        await self._transport.declare(self.streams, Retention(max_age_s=settings.ticks_retention_s))
        await self._transport.declare([ALERTS_STREAM], Retention(max_len=settings.alerts_maxlen))
        await self._transport.declare([RULES_STREAM], Retention(max_len=RULES_KEPT))
        await self._retry(self._load_rules, stopping)
        await self._retry(self._load_published, stopping)
        longest_s = max(rule.window_s for rule in self.engine.rules)
        consumer = self._transport.group_consumer(
            DETECTOR_GROUP, settings.detector_consumer, self.streams,
            rebuild_s=longest_s + settings.rebuild_margin_s,
            sharing=Sharing(settings.lease_s) if settings.shared else None,
        )
        self.consumer = consumer
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._follow_rules(stopping), name="detector-rules")
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

    async def _load_published(self, partitions: set[int] | None = None) -> None:
        """Seed dedupe and cooldowns from the alert history so a restart stays quiet; with
        ``partitions``, only the cooldowns of their symbols (partitions just taken over)."""
        reader = self._transport.broadcast_reader(ALERTS_STREAM)
        published = await reader.backlog(min(self._settings.alerts_maxlen, SEEN_IDS_CAPACITY))
        total = self._settings.tick_partitions
        for delivery in published:
            try:
                alert = decode_alert(delivery.payload)
            except msgspec.DecodeError:
                continue
            self._seen.add(alert.id)
            if partitions is not None and partition_of(alert.symbol, total) not in partitions:
                continue
            name = alert.rule
            if name is None:  # written before rules had names: its window tells the rule
                rule = self.engine.rule_for_window(alert.window_s)
                if rule is None:
                    continue
                name = rule.name
            self.engine.note_alert(alert.symbol, alert.event_time_ms, rule=name,
                                   change_pct=alert.change_pct, level=alert.level)
        log.info("%d published alerts remembered%s", len(published),
                 "" if partitions is None else
                 f" for partitions {','.join(map(str, sorted(partitions)))}")

    async def _handle(self, batch: list[Delivery], consumer: GroupConsumer) -> None:
        started = time.perf_counter()
        now_ms = int(time.time() * 1000)
        fresh: list[tuple[str, Alert]] = []  # (the stream it came from, the alert)
        for delivery in batch:
            try:
                ticks = decode_ticks(delivery.payload)
            except msgspec.DecodeError:
                self.metrics.bad_payloads.inc()
                log.warning("undecodable entry %s on %s skipped", delivery.position,
                            delivery.stream)
                continue
            if delivery.replay:
                self.engine.rebuild(ticks)
                self.metrics.ticks_replayed.inc(len(ticks))
                continue
            self.metrics.ticks_processed.inc(len(ticks))
            if ticks:
                newest = max(tick.event_time_ms for tick in ticks)
                if self.newest_event_ms is None or newest > self.newest_event_ms:
                    self.newest_event_ms = newest
            for alert in self.engine.process(ticks, now_ms):
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
                log.info("alert %s %s %+.2f%% at %s (rule %s, level %d)", alert.symbol,
                         alert.direction, alert.change_pct, alert.price, alert.rule,
                         alert.level)
        owned = self.ownership.streams
        await self._retry(lambda: consumer.ack([d for d in batch if d.stream in owned]), None)
        self.metrics.symbols_tracked.set(self.engine.symbols_tracked)
        if not batch[0].replay:
            self.metrics.batch_seconds.observe(time.perf_counter() - started)

    async def _publish(self, fresh: list[tuple[str, Alert]], consumer: GroupConsumer
                       ) -> list[Alert]:
        """Publish, fenced by ownership of the streams the alerts came from; the alerts of a
        stream found lost are dropped (its new owner publishes them) and its state goes.
        Returns what was published."""
        while fresh:
            records = [Record(ALERTS_STREAM, a.symbol, encode_alert(a)) for _, a in fresh]
            sources = frozenset(stream for stream, _ in fresh)
            try:
                await self._retry(functools.partial(consumer.publish, records, sources=sources),
                                  None)
            except OwnershipLost as exc:
                lost = (exc.streams & sources) or sources  # never the same set again
                self.metrics.alerts_dropped.inc(sum(s in lost for s, _ in fresh))
                self.ownership.lose(lost)
                self._forget(lost)
                fresh = [(s, a) for s, a in fresh if s not in lost]
                continue
            return [a for _, a in fresh]
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
