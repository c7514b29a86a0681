"""The rules in force, followed from the ``rules`` stream and pushed to every browser.

The detectors apply the rule set in force on the stream (an admin changes it there through
``gateway.admin``), so the page shows what actually fires rather than what the gateway's
own environment says. Which entry is in force is decided by ``common.rules_stream``, the
same code every detector runs, so the page and the detectors agree on every edge.

A bus outage is waited out. Anything else that ends the follower is a bug: it propagates
to ``gateway.service.serve``, which marks the gateway not ready naming the follower and
stops it (its supervisor restarts it) instead of serving rules that never change again.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Final

import msgspec

from common import rules_stream
from common.bus import Transport
from common.partitioning import RULES_STREAM
from common.rule_model import Rule
from common.rules_stream import RulesView
from common.schemas import RuleSet
from gateway.hub import Hub
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

_json: Final = msgspec.json.Encoder()


class RulesDocument(msgspec.Struct, frozen=True):
    rules: list[Rule]
    updated_at_ms: int | None = None
    version: int | None = None


class RulesMessage(msgspec.Struct, frozen=True, tag_field="type", tag="rules"):
    rules: list[Rule]
    version: int | None = None


class RulesFollower:
    def __init__(self, hub: Hub, metrics: Metrics, *, read_block_ms: int) -> None:
        self._hub = hub
        self._read_block_ms = read_block_ms
        self.view = RulesView(on_skip=lambda kind: metrics.rules_skipped.labels(kind).inc())
        self._announced: RuleSet | None = None  # the rules the browsers were told

    @property
    def current(self) -> RuleSet | None:
        return self.view.current

    def document(self) -> bytes:
        """``{"rules": [...], "updated_at_ms": ..., "version": ...}``, for ``/api/rules``."""
        current = self.current
        if current is None:
            return _json.encode(RulesDocument([]))
        return _json.encode(RulesDocument(current.rules, current.updated_at_ms,
                                          current.version))

    def message(self) -> str:
        """The ``{"type": "rules", ...}`` WebSocket message for the rules in force."""
        current = self.current
        message = RulesMessage(current.rules if current else [],
                               current.version if current else None)
        return _json.encode(message).decode()

    def offer(self, rule_set: RuleSet) -> bool:
        """Hold ``rule_set``, an entry the admin API read or wrote, if it is newer than the
        one held (the stream will bring it too, a moment later). True when it was taken."""
        if not self.view.offer(rule_set):
            return False
        self._announce(rule_set)
        return True

    def _announce(self, rule_set: RuleSet) -> None:
        """Log the rules now in force and tell the browsers, when the rules changed."""
        previous, self._announced = self._announced, rule_set
        if previous is None or rule_set.rules != previous.rules:
            log.info("rules version %d in force (by %s): %s", rule_set.version,
                     rule_set.updated_by, rule_set.change or [r.name for r in rule_set.rules])
            self._hub.broadcast(self.message())

    async def run(self, transport: Transport) -> None:
        """Follow the stream until cancelled; a bug raises out of here."""
        reader = transport.broadcast_reader(RULES_STREAM)
        try:
            changes = rules_stream.follow(reader, self.view, block_ms=self._read_block_ms)
            async with contextlib.aclosing(changes):
                async for rule_set in changes:
                    self._announce(rule_set)
        finally:
            await reader.close()
