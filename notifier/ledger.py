"""The notifier's delivery state on the bus: which channel is done with which alert.

An alert is acknowledged on ``alerts`` only when every channel routed to it is done with it
(sent it, folded it into a digest that was sent, or gave up on it). Each channel writes
"done" here first, one entry per (alert, channel), so a restart after a kill -9 (when the
alert comes back unacknowledged) skips the channels that already have it: nothing a channel
accepted is sent again, beyond the one request in flight at the kill. Entries are kept by
age (``NOTIFY_LEDGER_KEPT_S``), the bounded horizon of that promise; alerts older than
``NOTIFY_MAX_AGE_S`` are not sent at all, and the settings keep the horizon above it.

What a channel gave up on also goes to ``notifications.dead`` (JSON, readable with
``XRANGE``), with the reason, so nothing is lost silently.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Final, Literal

import msgspec

from common.bus import Record, Retention, Transport
from common.partitioning import (
    NOTIFICATIONS_DEAD_KEPT,
    NOTIFICATIONS_DEAD_STREAM,
    NOTIFICATIONS_LEDGER_STREAM,
)
from common.schemas import Alert

log = logging.getLogger(__name__)

Outcome = Literal["sent", "digested", "dead"]
# Entries read back at start, at most (a day of a busy market is far below this).
LEDGER_BACKLOG: Final = 200_000
# Entries remembered in memory since: the same bound.
REMEMBERED: Final = 200_000


class Done(msgspec.Struct, frozen=True, array_like=True):
    alert_id: str
    channel: str
    outcome: Outcome
    at_ms: int


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    channel: str
    reason: str
    detail: str
    at_ms: int
    alert: Alert


_done_encoder: Final = msgspec.msgpack.Encoder()
_done_decoder: Final = msgspec.msgpack.Decoder(Done)
_dead_encoder: Final = msgspec.json.Encoder()
dead_letter_decoder: Final = msgspec.json.Decoder(DeadLetter)


class Ledger:
    """Which (alert, channel) pairs are done: read back at start, written as they finish."""

    def __init__(self, transport: Transport, *, kept_s: float) -> None:
        self._transport = transport
        self._kept_s = kept_s
        self._done: OrderedDict[tuple[str, str], None] = OrderedDict()

    async def declare(self) -> None:
        await self._transport.declare([NOTIFICATIONS_LEDGER_STREAM],
                                      Retention(max_age_s=self._kept_s))
        await self._transport.declare([NOTIFICATIONS_DEAD_STREAM],
                                      Retention(max_len=NOTIFICATIONS_DEAD_KEPT))

    async def load(self) -> int:
        """Read back what earlier runs finished; the number of entries read."""
        reader = self._transport.broadcast_reader(NOTIFICATIONS_LEDGER_STREAM)
        try:
            entries = await reader.backlog(LEDGER_BACKLOG)
        finally:
            await reader.close()
        for delivery in entries:
            try:
                done = _done_decoder.decode(delivery.payload)
            except msgspec.DecodeError:
                log.warning("undecodable ledger entry %s skipped", delivery.position)
                continue
            self._remember(done.alert_id, done.channel)
        return len(entries)

    def is_done(self, alert_id: str, channel: str) -> bool:
        return (alert_id, channel) in self._done

    async def record(self, channel: str, alerts: Sequence[Alert], outcome: Outcome, *,
                     reason: str = "", detail: str = "") -> None:
        """Write that ``channel`` is done with ``alerts`` (and, for ``dead``, the dead
        letters), in one publish; raises ``BusUnavailable`` like any publish."""
        now_ms = int(time.time() * 1000)
        records = [Record(NOTIFICATIONS_LEDGER_STREAM, a.id,
                          _done_encoder.encode(Done(a.id, channel, outcome, now_ms)))
                   for a in alerts]
        if outcome == "dead":
            records += [Record(NOTIFICATIONS_DEAD_STREAM, a.id, _dead_encoder.encode(
                DeadLetter(channel=channel, reason=reason, detail=detail, at_ms=now_ms,
                           alert=a))) for a in alerts]
        await self._transport.publish(records)
        for alert in alerts:
            self._remember(alert.id, channel)

    def _remember(self, alert_id: str, channel: str) -> None:
        self._done[(alert_id, channel)] = None
        if len(self._done) > REMEMBERED:
            self._done.popitem(last=False)
