"""Frames of ticks → bus entries, through a bounded buffer and a single writer task.

The feed must never wait for the bus (the exchange would disconnect a slow reader), so it
only appends to the buffer; the writer drains everything buffered into one ``publish`` call,
which batches naturally: the slower the bus, the bigger each batch. While the bus is down
the writer keeps its batch and retries, so nothing is lost until the buffer overflows, and
then the oldest frames go first (fresh prices matter more than old ones to a detector).

A trade-level feed sends one trade per frame, tens of thousands a second: one bus entry per
frame would make the bus cost per trade. With ``FLUSH_MS`` > 0 the writer waits until the
oldest buffered frame is that old and writes everything buffered as one entry per partition
(at most ``MAX_TICKS_PER_RECORD`` ticks each), so a tick waits at most ``FLUSH_MS`` plus the
bus write before it. ``FLUSH_MS=0``: the writer takes what is buffered as soon as it is
free, one entry per partition per frame. Since a flush ignores frame boundaries, small
frames are bundled in the buffer (up to ``BUNDLE_TICKS`` ticks a slot), so that the
``INGEST_BUFFER_FRAMES`` slots hold minutes of one-trade frames through a bus outage, not
half a second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable
from typing import Final

from common.backoff import Backoff
from common.bus import BusUnavailable, Record, Retention, Transport
from common.partitioning import partition_of, ticks_stream
from common.runner import wait_or_stop
from common.schemas import Tick, encode_ticks
from ingestor.metrics import IngestorMetrics

log = logging.getLogger(__name__)

DROP_LOG_INTERVAL_S: Final = 10.0
# One bus entry of a flush holds at most this many ticks (~300 KB of msgpack): what a bus
# outage piles up is written as many entries, not one that Redis or Kafka would refuse.
MAX_TICKS_PER_RECORD: Final = 10_000
BUNDLE_TICKS: Final = 1000
_PARTITION_CACHE_LIMIT: Final = 100_000


class _PartitionCache(dict[str, int]):
    """symbol → partition; crc32 once per symbol instead of once per tick."""

    def __init__(self, partitions: int) -> None:
        super().__init__()
        self.partitions = partitions

    def __missing__(self, symbol: str) -> int:
        if len(self) >= _PARTITION_CACHE_LIMIT:  # only a feed of garbage symbols gets here
            self.clear()
        partition = self[symbol] = partition_of(symbol, self.partitions)
        return partition


class Publisher:
    def __init__(self, transport: Transport, metrics: IngestorMetrics, *, partitions: int,
                 buffer_frames: int, retention: Retention, flush_timeout_s: float,
                 flush_ms: int = 0, retry_min_s: float = 0.1, retry_max_s: float = 5.0
                 ) -> None:
        self._transport = transport
        self._metrics = metrics
        self._partitions = partitions
        self._streams = [ticks_stream(p) for p in range(partitions)]
        self._partition_of = _PartitionCache(partitions)
        self._retention = retention
        self._flush_timeout_s = flush_timeout_s
        self._retry = (retry_min_s, retry_max_s)
        self._flush_s = flush_ms / 1000
        # The ticks of each frame; bounded by hand, to count what is dropped.
        self._buffer: deque[list[Tick]] = deque(maxlen=buffer_frames)
        self._oldest_at = 0.0  # time.monotonic() when the oldest buffered frame came
        self._wakeup = asyncio.Event()
        self._finishing = asyncio.Event()
        self._finish_at: float | None = None
        self._dropped_unlogged = 0
        self._next_drop_log = 0.0
        metrics.buffer_frames.set_function(lambda: len(self._buffer))

    @property
    def buffered_frames(self) -> int:
        return len(self._buffer)

    def records_for(self, ticks: list[Tick]) -> list[Record]:
        """One entry per partition present in the frame, keyed by its first symbol."""
        if self._partitions == 1 or len(ticks) == 1:
            tick = ticks[0]
            stream = self._streams[self._partition_of[tick.symbol]]
            return [Record(stream, tick.symbol, encode_ticks(ticks))]
        return [Record(stream, bucket[0].symbol, encode_ticks(bucket))
                for stream, bucket in zip(self._streams, self._by_partition((ticks,)),
                                          strict=True) if bucket]

    def _by_partition(self, frames: Iterable[list[Tick]]) -> list[list[Tick]]:
        """The ticks of ``frames``, in order, in one list per partition."""
        cache = self._partition_of
        buckets: list[list[Tick]] = [[] for _ in self._streams]
        append_to = [bucket.append for bucket in buckets]  # the per-tick loop: one call
        for frame in frames:
            for tick in frame:
                append_to[cache[tick.symbol]](tick)
        return buckets

    def submit(self, ticks: list[Tick]) -> None:
        """Called by the feed for every frame; never waits."""
        if not ticks:
            return
        buffer = self._buffer
        if not buffer:
            self._oldest_at = time.monotonic()
        elif self._flush_s and len(last := buffer[-1]) + len(ticks) <= BUNDLE_TICKS:
            last.extend(ticks)
            return
        elif len(buffer) == buffer.maxlen:
            self._dropped(len(buffer[0]))  # append() below evicts it
        # A slot of its own (a copy when bundling), so that what it holds is ours alone.
        buffer.append(list(ticks) if self._flush_s else ticks)
        self._wakeup.set()

    def finish(self, deadline: float | None = None) -> None:
        """No more frames will come: flush what is buffered by ``deadline`` (event-loop
        time; by default ``flush_timeout_s`` from now), then the writer returns."""
        if self._finish_at is None:
            if deadline is None:
                deadline = asyncio.get_running_loop().time() + self._flush_timeout_s
            self._finish_at = deadline
            self._finishing.set()
            self._wakeup.set()

    async def run(self) -> None:
        """The writer task. Returns after ``finish()`` once the buffer is flushed (or the
        deadline passed); any error other than the bus being unavailable propagates."""
        if not await self._declare():
            self._give_up(0)
            return
        buffer = self._buffer
        while True:
            if not buffer:
                if self._finish_at is not None:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self._flush_s > 0 and self._finish_at is None:
                wait = self._oldest_at + self._flush_s - time.monotonic()
                if wait > 0:
                    await wait_or_stop(self._finishing, wait)
                    continue  # (finish() cuts the wait short: flush at once)
            frames = list(buffer)
            buffer.clear()
            records = self._records(frames)
            ticks = sum(len(frame) for frame in frames)
            if not await self._publish(records, ticks):
                self._give_up(ticks)
                return

    def _records(self, frames: list[list[Tick]]) -> list[Record]:
        if not self._flush_s:
            return [record for frame in frames for record in self.records_for(frame)]
        step = MAX_TICKS_PER_RECORD
        return [Record(stream, bucket[at].symbol, encode_ticks(bucket[at:at + step]))
                for stream, bucket in zip(self._streams, self._by_partition(frames),
                                          strict=True)
                for at in range(0, len(bucket), step)]

    async def _declare(self) -> bool:
        backoff = Backoff(*self._retry)
        while True:
            try:
                await self._transport.declare(self._streams, self._retention)
            except BusUnavailable as exc:
                log.warning("bus unavailable, cannot declare tick streams yet: %s", exc)
                if not await self._pause(backoff.next_delay()):
                    return False
            else:
                return True

    async def _publish(self, records: list[Record], ticks: int) -> bool:
        """True once written; False when the shutdown deadline passed first."""
        backoff = Backoff(*self._retry)
        outage_since: float | None = None
        while True:
            started = time.perf_counter()
            try:
                if not await self._publish_once(records):
                    return False
            except BusUnavailable as exc:
                self._metrics.publish_errors.inc()
                if outage_since is None:
                    outage_since = time.monotonic()
                    log.warning("bus unavailable, holding %d entries (%d ticks) and retrying: "
                                "%s", len(records), ticks, exc)
                if not await self._pause(backoff.next_delay()):
                    return False
                continue
            metrics = self._metrics
            metrics.publish_latency.observe(time.perf_counter() - started)
            metrics.publish_batch.observe(len(records))
            metrics.ticks_published.inc(ticks)
            if outage_since is not None:
                log.info("bus back after %.1f s; published the %d held entries",
                         time.monotonic() - outage_since, len(records))
            return True

    async def _publish_once(self, records: list[Record]) -> bool:
        """False when the shutdown deadline cut the attempt short."""
        if self._finish_at is None:
            await self._transport.publish(records)
            return True
        deadline = asyncio.timeout_at(self._finish_at)
        try:
            async with deadline:
                await self._transport.publish(records)
        except TimeoutError:
            if deadline.expired():
                return False
            raise
        return True

    async def _pause(self, delay: float) -> bool:
        """Sleep before a retry; False when the shutdown deadline leaves no time for one."""
        if self._finish_at is None:
            await wait_or_stop(self._finishing, delay)
            return True
        remaining = self._finish_at - asyncio.get_running_loop().time()
        if remaining <= 0:
            return False
        await asyncio.sleep(min(delay, remaining))
        return True

    def _dropped(self, ticks: int) -> None:
        self._metrics.ticks_dropped.inc(ticks)
        self._dropped_unlogged += ticks
        now = time.monotonic()
        if now >= self._next_drop_log:
            log.warning("buffer full (%d frames; the bus is slow or down): dropped the oldest "
                        "frames, %d ticks since the last report",
                        self._buffer.maxlen, self._dropped_unlogged)
            self._dropped_unlogged = 0
            self._next_drop_log = now + DROP_LOG_INTERVAL_S

    def _give_up(self, in_hand: int) -> None:
        lost = in_hand + sum(len(frame) for frame in self._buffer)
        self._buffer.clear()
        self._metrics.ticks_dropped.inc(lost)
        log.error("shutdown deadline passed with the bus unavailable: %d ticks not published",
                  lost)
