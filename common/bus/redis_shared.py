"""A Redis group consumer that shares its streams with the group's other members
(``Sharing``): it reads only the streams it holds a lease on (``redis_leases``).

Every ``fetch`` first runs the lease round when one is due (renewing well inside the
expiry), then serves, for each stream it just started owning: the acknowledged history
within the rebuild span (``replay``), then *every* entry pending in the group on that
stream, whoever it was delivered to (the lease says its previous reader is gone: their
side effects are allowed again, the caller dedupes), then new entries. A stream that left
is simply not read any more; its deliveries still in hand are not acknowledged (``ack``
skips them), so its next owner gets them again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis.asyncio as redis

from common.bus.contract import (
    ConsumerLag,
    Delivery,
    OwnershipLost,
    Record,
    Sharing,
)
from common.bus.redis_leases import Leases, OwnershipChange
from common.bus.redis_streams import (
    PAYLOAD_FIELD,
    RedisGroupConsumer,
    _delivery,
    _stream_rows,
    _text,
    _translated_errors,
)

if TYPE_CHECKING:
    from common.bus.redis_streams import RedisTransport

log = logging.getLogger(__name__)

IDLE_WAIT_S = 1.0  # the longest a fetch that owns nothing waits


@dataclass(slots=True)
class _Takeover:
    """A stream just gained: its replay, then the claim of what is pending on it."""

    replay: AsyncIterator[list[Delivery]] | None
    claim_cursor: str = "0-0"
    claimed: int = 0
    started: float = field(default_factory=time.monotonic)


class SharedRedisGroupConsumer(RedisGroupConsumer):
    """``RedisGroupConsumer`` over the streams it holds a lease on. ``ownership_changes``
    counts (change, cause) pairs for metrics; ``listener`` is told of each change."""

    def __init__(self, client: redis.Redis, group: str, consumer: str,
                 streams: Sequence[str], *, rebuild_s: float, sharing: Sharing,
                 transport: RedisTransport) -> None:
        super().__init__(client, group, consumer, streams, rebuild_s=rebuild_s,
                         claim_min_idle_s=transport.config.claim_min_idle_s,
                         publish=transport.publish)
        self._transport = transport
        self._leases = Leases(client, group, consumer, streams, sharing.lease_s)
        self._takeovers: dict[str, _Takeover] = {}
        self._lease_s = sharing.lease_s
        self._next_sweep = 0.0
        self._closed = False

    @property
    def leases(self) -> Leases:
        return self._leases

    @property
    def ownership_changes(self) -> Counter[tuple[str, str]]:
        return self._leases.changes

    @property
    def listener(self) -> Callable[[OwnershipChange], None] | None:
        return self._leases.listener

    @listener.setter
    def listener(self, listener: Callable[[OwnershipChange], None] | None) -> None:
        self._leases.listener = listener

    def owned(self) -> frozenset[str]:
        """Streams gain only inside ``fetch``; one may also leave between fetches, when its
        lease runs out by this process's clock (it stalled, or could not renew)."""
        return self._leases.owned()

    async def fetch(self, count: int, block_ms: int) -> list[Delivery]:
        if self._closed:
            await asyncio.sleep(min(block_ms / 1000, IDLE_WAIT_S))
            return []
        async with _translated_errors():
            await self._ensure_groups()
            if self._leases.due():
                for change in await self._leases.round():
                    self._apply(change)
            owned = self.owned()
            for stream in [s for s in self._takeovers if s not in owned]:
                del self._takeovers[stream]
            for stream in list(self._takeovers):
                batch = await self._take_over(stream, count)
                if batch:
                    return batch
            live = [s for s in self._streams if s in owned]
            if live and time.monotonic() >= self._next_sweep:
                self._next_sweep = time.monotonic() + self._lease_s
                strays = await self._claim_strays(live, count)
                if strays:
                    return strays
            # Never block past the next round: renewals must not be late.
            wait_ms = max(1, min(block_ms, int(self._leases.seconds_to_round() * 1000)))
            if not live:
                await asyncio.sleep(min(wait_ms / 1000, IDLE_WAIT_S))
                return []
            reply = await self._client.xreadgroup(self._group, self._consumer,
                                                  dict.fromkeys(live, ">"),
                                                  count=count, block=wait_ms)
        # Entries of a stream whose lease lapsed during the read stay pending: its next
        # owner (maybe this member again) claims them.
        owned = self.owned()
        return [_delivery(stream, eid, fields)
                for stream, entries in _stream_rows(reply) if stream in owned
                for eid, fields in entries]

    def _apply(self, change: OwnershipChange) -> None:
        if change.change == "gained":
            self._takeovers[change.stream] = _Takeover(self._stream_history(change.stream))
        else:
            self._takeovers.pop(change.stream, None)

    async def _take_over(self, stream: str, count: int) -> list[Delivery]:
        """The next batch of a gained stream's replay, then of its claimed entries; done
        (and read live from then on) once both are through."""
        takeover = self._takeovers[stream]
        if takeover.replay is not None:
            batch = await anext(takeover.replay, None)
            if batch is not None:
                return batch
            takeover.replay = None
        # Min-idle 0: the lease says whoever holds these entries stopped reading them.
        reply = await self._client.xautoclaim(stream, self._group, self._consumer, 0,
                                              takeover.claim_cursor, count=count)
        cursor = _text(reply[0]) if reply else "0-0"
        entries = reply[1] if len(reply) > 1 else []
        takeover.claim_cursor = cursor
        takeover.claimed += len(entries)
        if cursor == "0-0":
            del self._takeovers[stream]
            log.info("%s took over %s in %.2fs: %d pending entries claimed", self._consumer,
                     stream, time.monotonic() - takeover.started, takeover.claimed)
        return [_delivery(stream, eid, fields) for eid, fields in entries]

    async def _claim_strays(self, streams: list[str], count: int) -> list[Delivery]:
        """Entries of owned streams left pending with another member for longer than a
        lease. None in the normal course (a takeover claims them all); after a Redis
        failover lost a renewal, a member that still believed it owned a stream may have
        read from it while this one already did: without this they would stay pending."""
        idle_ms = int(self._lease_s * 1000)
        deliveries: list[Delivery] = []
        for stream in streams:
            rows = await self._client.xpending_range(stream, self._group, "-", "+", count,
                                                     idle=idle_ms)
            strays: list[Any] = [row["message_id"] for row in rows
                      if _text(row["consumer"]) != self._consumer]
            if not strays:
                continue
            claimed: list[Any] = await self._client.xclaim(
                stream, self._group, self._consumer, idle_ms, strays)
            log.warning("%s claimed %d entries of %s left pending by another member",
                        self._consumer, len(claimed), stream)
            deliveries += [_delivery(stream, eid, fields) for eid, fields in claimed]
        return deliveries

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge those of streams still owned: an entry of a stream that left goes
        to its next owner, who processes it again (an ack here could make it skip it)."""
        owned = self.owned()
        await super().ack([d for d in deliveries if d.stream in owned])

    async def publish(self, records: Sequence[Record], *, sources: Collection[str]) -> None:
        wanted = sorted(set(sources))
        owned = self.owned()
        lost = [s for s in wanted if s not in owned]
        if lost:
            raise OwnershipLost(lost)
        if not records:
            return
        now_ms = int(time.time() * 1000)
        entries = [(r.payload, *self._transport.trim(r.stream, now_ms)) for r in records]
        async with _translated_errors():
            lost = await self._leases.fenced_publish(wanted, [r.stream for r in records],
                                                     entries, field=PAYLOAD_FIELD)
        if lost:
            for stream in lost:
                self._takeovers.pop(stream, None)
            raise OwnershipLost(lost)

    async def close(self) -> None:
        """Release every lease and leave the group, so that the others take the streams
        over at their next round; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._takeovers.clear()
        async with _translated_errors():
            await self._leases.hand_over()

    async def lag(self) -> dict[str, ConsumerLag]:
        """Of the streams owned now: the members' figures add up to the group's."""
        owned = self.owned()
        return {s: lag for s, lag in (await super().lag()).items() if s in owned}
