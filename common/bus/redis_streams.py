"""Redis Streams implementation of the bus contract (``redis.asyncio`` with hiredis).

Every command is bounded: socket timeouts are set on purpose (a ``BLOCK`` stays below them),
pipelines are chunked, and connection failures surface as ``BusUnavailable`` so that the
caller, which still holds its data, decides when to retry. redis-py's own retries are off:
a retried ``XADD`` whose first reply was lost would write twice.

The transport takes a ``RedisConfig`` built from the service settings at start
(``from_settings``, the registry's entry for ``redis://``, ``rediss://`` and ``unix://``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from common.bus.contract import (
    BusUnavailable,
    ConsumerLag,
    Delivery,
    Record,
    Retention,
    Sharing,
)

if TYPE_CHECKING:
    from common.settings import BaseServiceSettings

log = logging.getLogger(__name__)

PAYLOAD_FIELD: Final = b"d"
PIPELINE_CHUNK: Final = 512
HISTORY_PAGE: Final = 1000
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def _entry_ms(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


def _delivery(stream: str, entry_id: Any, fields: Any, *, replay: bool = False) -> Delivery:
    """Build a delivery from a raw entry; a trimmed-away pending entry has no fields."""
    payload = fields.get(PAYLOAD_FIELD, b"") if fields else b""
    return Delivery(stream, _text(entry_id), payload, _entry_ms(entry_id), replay=replay)


@asynccontextmanager
async def _translated_errors() -> AsyncIterator[None]:
    try:
        yield
    except _UNAVAILABLE as exc:
        raise BusUnavailable(f"redis unavailable: {exc}") from exc
    # A cancel that lands while a blocking read is timing out can be swallowed inside the
    # client (the command then just returns nothing); re-raise it, or the caller's loop
    # would read on forever in the "cancelling" state and shutdown would hang.
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """What the Redis backend needs: where (``BUS_URL``), how long a command may take
    (``BUS_TIMEOUT_S``; a ``BLOCK`` stays below it) and when a group consumer claims
    entries another one left pending (``CLAIM_MIN_IDLE_S``)."""

    url: str = field(repr=False)  # it may hold a password
    timeout_s: float = 10.0
    claim_min_idle_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: BaseServiceSettings) -> RedisConfig:
        return cls(settings.bus_url, settings.bus_timeout_s, settings.claim_min_idle_s)


def from_settings(settings: BaseServiceSettings) -> RedisTransport:
    """The registry's entry: the transport for ``settings.bus_url``."""
    return RedisTransport(RedisConfig.from_settings(settings))


class RedisTransport:
    def __init__(self, config: RedisConfig, *, client: redis.Redis | None = None) -> None:
        self.config = config
        self._client = client or redis.Redis.from_url(
            config.url,
            socket_timeout=config.timeout_s,
            socket_connect_timeout=min(config.timeout_s, 5.0),
            retry=Retry(NoBackoff(), 0),
            health_check_interval=30,
        )
        self._retention: dict[str, Retention] = {}
        self._shared: list[RedisGroupConsumer] = []  # closed (handed over) with the transport

    @property
    def client(self) -> redis.Redis:
        return self._client

    async def start(self) -> None:
        """Connections are made lazily; nothing to do, and not failing here lets a service
        start while Redis is still down and report not-ready instead of crash-looping."""

    async def close(self) -> None:
        for consumer in self._shared:
            with contextlib.suppress(BusUnavailable):
                await consumer.close()
        self._shared.clear()
        await self._client.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except (*_UNAVAILABLE, ResponseError):
            return False

    async def declare(self, streams: Sequence[str], retention: Retention) -> None:
        for stream in streams:
            self._retention[stream] = retention

    async def publish(self, records: Sequence[Record]) -> None:
        """One round trip per chunk, the chunk's ``XADD``s in one ``MULTI``/``EXEC``.

        The transaction is for the readers, not for atomicity: a reader blocked on several
        streams (the detector on every ``ticks.*``, the gateway on ``alerts``) is woken by
        Redis after the command that fed it, so without it a frame's four partitions would
        reach the detector as four reads, and the alerts of one batch the gateway one by one,
        each a round trip later than the first. After ``EXEC`` they are all there at once.
        """
        now_ms = int(time.time() * 1000)
        async with _translated_errors():
            for start in range(0, len(records), PIPELINE_CHUNK):
                pipe = self._client.pipeline(transaction=True)
                for record in records[start : start + PIPELINE_CHUNK]:
                    maxlen, minid = self.trim(record.stream, now_ms)
                    pipe.xadd(record.stream, {PAYLOAD_FIELD: record.payload},
                              maxlen=maxlen, minid=minid, approximate=True)
                await pipe.execute()

    def trim(self, stream: str, now_ms: int) -> tuple[int | None, int | None]:
        """The ``MAXLEN`` and ``MINID`` a write to ``stream`` trims with (its retention)."""
        retention = self._retention.get(stream)
        if retention is None:
            return None, None
        minid = None
        if retention.max_age_s is not None:
            minid = now_ms - int(retention.max_age_s * 1000)
        return retention.max_len, minid

    def group_consumer(self, group: str, consumer: str, streams: Sequence[str], *,
                       rebuild_s: float, sharing: Sharing | None = None) -> RedisGroupConsumer:
        if sharing is not None:
            # Imported here: the shared consumer builds on this module's.
            from common.bus.redis_shared import SharedRedisGroupConsumer

            shared = SharedRedisGroupConsumer(
                self._client, group, consumer, streams, rebuild_s=rebuild_s, sharing=sharing,
                transport=self)
            self._shared.append(shared)
            return shared
        return RedisGroupConsumer(self._client, group, consumer, streams, rebuild_s=rebuild_s,
                                  claim_min_idle_s=self.config.claim_min_idle_s,
                                  publish=self.publish)

    def broadcast_reader(self, stream: str) -> RedisBroadcastReader:
        return RedisBroadcastReader(self._client, stream)


class RedisGroupConsumer:
    """Consumer-group reader: replay → own pending → claimed idle → new.

    Replay covers entries the group acknowledged within the rebuild span; entries still
    pending are left out of it because they come back through the pending phase, where their
    side effects are allowed (and deduplicated by the caller).
    """

    def __init__(self, client: redis.Redis, group: str, consumer: str,
                 streams: Sequence[str], *, rebuild_s: float, claim_min_idle_s: float,
                 publish: Callable[[Sequence[Record]], Awaitable[None]]) -> None:
        self._client = client
        self._publish = publish
        self._group = group
        self._consumer = consumer
        self._streams = list(streams)
        self._rebuild_ms = int(rebuild_s * 1000)
        self._claim_min_idle_ms = int(claim_min_idle_s * 1000)
        self._groups_ready = False
        self._replay: AsyncIterator[list[Delivery]] | None = None
        self._replay_done = False
        self._pending_ids: dict[str, Any] = {}
        self._next_claim = 0.0

    async def _ensure_groups(self) -> None:
        if self._groups_ready:
            return
        for stream in self._streams:
            try:
                # "0": a group created after ticks were written must still see them.
                await self._client.xgroup_create(stream, self._group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups_ready = True
        self._pending_ids = dict.fromkeys(self._streams, b"0")

    async def fetch(self, count: int, block_ms: int) -> list[Delivery]:
        async with _translated_errors():
            await self._ensure_groups()
            if not self._replay_done:
                if self._replay is None:
                    self._replay = self._history()
                batch = await anext(self._replay, None)
                if batch is not None:
                    return batch
                self._replay_done = True
            if self._pending_ids:
                pending = await self._read_own_pending(count)
                if pending:
                    return pending
            claimed = await self._claim_idle(count)
            if claimed:
                return claimed
            return await self._read_new(count, block_ms)

    async def _history(self) -> AsyncIterator[list[Delivery]]:
        for stream in self._streams:
            async for batch in self._stream_history(stream):
                yield batch

    async def _stream_history(self, stream: str) -> AsyncIterator[list[Delivery]]:
        """The group's acknowledged entries of ``stream`` within the rebuild span."""
        groups = await self._client.xinfo_groups(stream)
        info = next((g for g in groups if _text(g.get("name")) == self._group), None)
        if info is None:
            return
        last_delivered = _text(info.get("last-delivered-id")) or "0-0"
        if last_delivered == "0-0":
            return
        pending = await self._pending_positions(stream)
        start = max(0, _entry_ms(last_delivered) - self._rebuild_ms)
        cursor = f"{start}-0"
        while True:
            entries = await self._client.xrange(stream, cursor, last_delivered,
                                                count=HISTORY_PAGE)
            if not entries:
                break
            batch = [_delivery(stream, eid, fields, replay=True) for eid, fields in entries
                     if _text(eid) not in pending]
            if batch:
                yield batch
            if len(entries) < HISTORY_PAGE:
                break
            cursor = "(" + _text(entries[-1][0])

    async def _pending_positions(self, stream: str) -> set[str]:
        positions: set[str] = set()
        cursor = "-"
        while True:
            rows = await self._client.xpending_range(stream, self._group, cursor, "+", 1000)
            positions.update(_text(row["message_id"]) for row in rows)
            if len(rows) < 1000:
                return positions
            cursor = "(" + _text(rows[-1]["message_id"])

    async def _read_own_pending(self, count: int) -> list[Delivery]:
        positions: dict[Any, Any] = dict(self._pending_ids)
        reply = await self._client.xreadgroup(self._group, self._consumer, positions,
                                              count=count)
        deliveries: list[Delivery] = []
        for stream_name, entries in _stream_rows(reply):
            if not entries:
                del self._pending_ids[stream_name]
                continue
            self._pending_ids[stream_name] = entries[-1][0]
            deliveries.extend(_delivery(stream_name, eid, fields) for eid, fields in entries)
        return deliveries

    async def _claim_idle(self, count: int) -> list[Delivery]:
        now = time.monotonic()
        if now < self._next_claim:
            return []
        self._next_claim = now + max(self._claim_min_idle_ms / 2000, 1.0)
        deliveries: list[Delivery] = []
        for stream in self._streams:
            reply = await self._client.xautoclaim(stream, self._group, self._consumer,
                                                  self._claim_min_idle_ms, "0-0", count=count)
            entries = reply[1] if len(reply) > 1 else []
            if entries:
                log.warning("claimed %d entries of %s left idle by another consumer",
                            len(entries), stream)
            deliveries.extend(_delivery(stream, eid, fields) for eid, fields in entries)
        return deliveries

    async def _read_new(self, count: int, block_ms: int) -> list[Delivery]:
        reply = await self._client.xreadgroup(self._group, self._consumer,
                                              dict.fromkeys(self._streams, ">"),
                                              count=count, block=block_ms)
        return [_delivery(stream, eid, fields)
                for stream, entries in _stream_rows(reply) for eid, fields in entries]

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        by_stream: dict[str, list[str]] = {}
        for delivery in deliveries:
            if not delivery.replay and not delivery.acked:
                by_stream.setdefault(delivery.stream, []).append(delivery.position)
        if not by_stream:
            return
        async with _translated_errors():
            pipe = self._client.pipeline(transaction=False)
            for stream, positions in by_stream.items():
                pipe.xack(stream, self._group, *positions)
            await pipe.execute()
        for delivery in deliveries:
            delivery.acked = delivery.acked or not delivery.replay

    def owned(self) -> frozenset[str]:
        return frozenset(self._streams)

    async def publish(self, records: Sequence[Record], *, sources: Collection[str]) -> None:
        await self._publish(records)

    async def close(self) -> None:
        """Nothing to hand back: the group's state lives in Redis, the connections are
        the transport's."""

    async def lag(self) -> dict[str, ConsumerLag]:
        lags: dict[str, ConsumerLag] = {}
        async with _translated_errors():
            for stream in self._streams:
                groups = await self._client.xinfo_groups(stream) if await self._client.exists(
                    stream) else []
                info = next((g for g in groups if _text(g.get("name")) == self._group), None)
                if info is None:
                    lags[stream] = ConsumerLag(await self._client.xlen(stream), 0)
                    continue
                # "lag" is unknown (nil) after deletions in the stream; fall back on length.
                behind = info.get("lag")
                if behind is None:
                    behind = await self._client.xlen(stream) - int(info.get("entries-read") or 0)
                lags[stream] = ConsumerLag(max(0, int(behind)), int(info.get("pending") or 0))
        return lags


class RedisBroadcastReader:
    def __init__(self, client: redis.Redis, stream: str) -> None:
        self._client = client
        self._stream = stream
        self._last_id: str | None = None

    async def backlog(self, count: int) -> list[Delivery]:
        async with _translated_errors():
            newest = await self._client.xrevrange(self._stream, count=max(count, 1))
        entries: list[Any] = newest or []
        deliveries = [_delivery(self._stream, eid, fields) for eid, fields in reversed(entries)]
        if entries:
            self._last_id = _text(entries[0][0])
        elif self._last_id is None:
            self._last_id = "0-0"
        return deliveries[-count:] if count else []

    async def read(self, count: int, block_ms: int) -> list[Delivery]:
        async with _translated_errors():
            if self._last_id is None:
                await self.backlog(0)
            reply = await self._client.xread({self._stream: self._last_id or "0-0"},
                                             count=count, block=block_ms)
        deliveries = [_delivery(stream, eid, fields)
                      for stream, entries in _stream_rows(reply) for eid, fields in entries]
        if deliveries:
            self._last_id = deliveries[-1].position
        return deliveries

    async def close(self) -> None:
        """Nothing to release: the reader holds only its position."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _stream_rows(reply: Any) -> list[tuple[str, list[Any]]]:
    """XREAD/XREADGROUP answer as (stream, entries) pairs under RESP2 and RESP3 alike."""
    if not reply:
        return []
    items = reply.items() if isinstance(reply, dict) else reply
    rows: list[tuple[str, list[Any]]] = []
    for stream, entries in items:
        rows.append((_text(stream), list(entries)))
    return rows

