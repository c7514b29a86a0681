"""The rules in force, followed from the ``rules`` stream and pushed to every browser.

The detectors announce the rules they apply (and, later, an admin changes them there), so
the page shows what actually fires rather than what the gateway's own environment says.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

import msgspec

from common.backoff import Backoff
from common.partitioning import RULES_STREAM
from common.schemas import Rule, RuleSet, decode_rule_set
from common.transport import BusUnavailable, Transport
from gateway.hub import Hub

log = logging.getLogger(__name__)

READ_COUNT: Final = 16
_json: Final = msgspec.json.Encoder()


class RulesDocument(msgspec.Struct, frozen=True):
    rules: list[Rule]
    updated_at_ms: int | None = None


class RulesFollower:
    def __init__(self, hub: Hub, *, read_block_ms: int) -> None:
        self._hub = hub
        self._read_block_ms = read_block_ms
        self.current: RuleSet | None = None

    def document(self) -> bytes:
        """``{"rules": [...], "updated_at_ms": ...}``, for ``/api/rules``."""
        current = self.current
        if current is None:
            return _json.encode(RulesDocument([]))
        return _json.encode(RulesDocument(current.rules, current.updated_at_ms))

    def message(self) -> str:
        """The ``{"type": "rules", ...}`` WebSocket message for the rules in force."""
        rules = self.current.rules if self.current else []
        return '{"type":"rules","rules":' + _json.encode(rules).decode() + "}"

    async def run(self, transport: Transport) -> None:
        reader = transport.broadcast_reader(RULES_STREAM)
        backoff = Backoff(0.1, 5.0)
        primed = False
        while True:
            try:
                if primed:
                    deliveries = await reader.read(READ_COUNT, self._read_block_ms)
                else:
                    deliveries = await reader.backlog(1)
                    primed = True
            except BusUnavailable:
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            for delivery in deliveries:
                try:
                    rule_set = decode_rule_set(delivery.payload)
                except msgspec.MsgspecError as exc:
                    log.warning("skipping an undecodable rules entry %s: %s",
                                delivery.position, exc)
                    continue
                changed = self.current is None or rule_set.rules != self.current.rules
                self.current = rule_set
                if changed:
                    log.info("rules in force: %s (by %s)", rule_set.rules, rule_set.updated_by)
                    self._hub.broadcast(self.message())
