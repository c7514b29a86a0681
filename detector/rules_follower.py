"""The rules in force for this detector: read from the ``rules`` stream at start (seeded,
when it holds none, with the one rule of the environment) and followed from then on.

The gateway's admin API writes the stream; ``common.rules_stream`` decides which entry is in
force, the same way for every reader. Call ``load`` once before consuming ticks, then run
``follow`` as a task: each newer rule set is handed to ``apply`` between batches, within a
second of landing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from common import rules_stream
from common.bus import BroadcastReader, Transport
from common.partitioning import RULES_STREAM
from common.rules_stream import RulesView
from common.schemas import RuleSet
from common.settings import DetectorSettings
from detector.metrics import DetectorMetrics
from detector.rules import describe_rule, rule_from_settings

log = logging.getLogger(__name__)


class RulesFollower:
    def __init__(self, settings: DetectorSettings, transport: Transport,
                 metrics: DetectorMetrics, apply: Callable[[RuleSet], None]) -> None:
        self._settings = settings
        self._transport = transport
        self._metrics = metrics
        self._apply = apply
        self._view = RulesView()  # the stream as read here, and the entry in force
        self._reader: BroadcastReader | None = None

    @property
    def current(self) -> RuleSet | None:
        """The entry of the rules stream in force."""
        return self._view.current

    async def load(self) -> None:
        """Apply the rule set in force on the ``rules`` stream; seed an empty stream (or one
        with no valid entry) with the one rule of the environment. When two detectors seed
        at once, both entries carry version 1 and the first on the stream wins for everyone
        (``common.rules_stream`` decides, for every reader)."""
        self._reader = reader = self._transport.broadcast_reader(RULES_STREAM)
        self._view = await rules_stream.load(reader, RulesView(on_skip=self._count_skipped))
        if self._view.current is None:
            seed = rules_stream.next_version(
                None, [rule_from_settings(self._settings)],
                by=f"detector {self._settings.detector_consumer}",
                change="seeded from WINDOW_S, THRESHOLD_UP_PCT, THRESHOLD_DOWN_PCT, COOLDOWN_S")
            await rules_stream.write(self._transport, seed)
            self._view = await rules_stream.load(reader)  # a re-read: its skips were counted
            self._view.on_skip = self._count_skipped
        if self._view.current is not None:
            self._use(self._view.current, "in force")

    async def follow(self, stopping: asyncio.Event) -> None:
        """Apply every newer rule set as it lands on the stream, until shutdown."""
        reader = self._reader or self._transport.broadcast_reader(RULES_STREAM)
        block_ms = min(rules_stream.FOLLOW_BLOCK_MS, self._settings.read_block_ms)
        try:
            changes = rules_stream.follow(reader, self._view, block_ms=block_ms,
                                          stopping=stopping)
            async with contextlib.aclosing(changes):
                async for rule_set in changes:
                    self._use(rule_set, "applied")
        finally:
            await reader.close()

    def _count_skipped(self, kind: str) -> None:
        self._metrics.rules_skipped.labels(kind).inc()

    def _use(self, rule_set: RuleSet, what: str) -> None:
        self._apply(rule_set)
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(rule_set.updated_at_ms / 1000))
        log.info("rules version %d %s (by %s at %s: %s): %s", rule_set.version, what,
                 rule_set.updated_by, when, rule_set.change or "-",
                 "; ".join(describe_rule(r) for r in rule_set.rules))
