"""The rules in force, followed from the ``rules`` stream and pushed to every browser.

The detectors apply the newest rule set of the stream (an admin changes it there through
``gateway.admin``), so the page shows what actually fires rather than what the gateway's own
environment says. A reader applies an entry only when its version is higher than the one it
holds (``RuleSet.supersedes``), so every gateway and every detector agrees on the winner
when two writers race.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

import msgspec

from common.backoff import Backoff
from common.bus import BusUnavailable, Delivery, Transport
from common.partitioning import RULES_KEPT, RULES_STREAM
from common.schemas import Rule, RuleSet, decode_rule_set
from gateway.hub import Hub

log = logging.getLogger(__name__)

READ_COUNT: Final = 16
_json: Final = msgspec.json.Encoder()


class RulesDocument(msgspec.Struct, frozen=True):
    rules: list[Rule]
    updated_at_ms: int | None = None
    version: int | None = None


class RulesMessage(msgspec.Struct, frozen=True, tag_field="type", tag="rules"):
    rules: list[Rule]
    version: int | None = None


class RulesFollower:
    def __init__(self, hub: Hub, *, read_block_ms: int) -> None:
        self._hub = hub
        self._read_block_ms = read_block_ms
        self.current: RuleSet | None = None
        self.primed = asyncio.Event()  # the stream's backlog has been read once

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
        """Hold ``rule_set`` if it supersedes the one held; tell the browsers when the rules
        changed. True when it was taken."""
        previous = self.current
        if not rule_set.supersedes(previous):
            return False
        self.current = rule_set
        if previous is None or rule_set.rules != previous.rules:
            log.info("rules version %d in force (by %s): %s", rule_set.version,
                     rule_set.updated_by, rule_set.change or [r.name for r in rule_set.rules])
            self._hub.broadcast(self.message())
        return True

    def offer_entry(self, delivery: Delivery) -> None:
        try:
            rule_set = decode_rule_set(delivery.payload)
        except msgspec.MsgspecError as exc:
            log.warning("skipping an undecodable rules entry %s: %s", delivery.position, exc)
            return
        self.offer(rule_set)

    async def run(self, transport: Transport) -> None:
        reader = transport.broadcast_reader(RULES_STREAM)
        backoff = Backoff(0.1, 5.0)
        while True:
            try:
                if self.primed.is_set():
                    deliveries = await reader.read(READ_COUNT, self._read_block_ms)
                else:
                    deliveries = await reader.backlog(RULES_KEPT)
            except BusUnavailable:
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            for delivery in deliveries:
                self.offer_entry(delivery)
            self.primed.set()
