"""Wiring: one writer task and one reader task, under the common runner.

The reader is one ``Feed`` (``FEED=mini_ticker``: one connection) or a ``Board``
(``FEED=agg_trade``: the connections of the whole board), sharing one ``Dedupe`` so that
what two connections both deliver counts once. Both tasks live in one ``TaskGroup`` so
that neither can die alone: a writer that fails takes the feed (and the process) down with
it, which a supervisor notices and restarts, instead of a feed that keeps reading into a
buffer nobody drains.
"""

from __future__ import annotations

import asyncio
import logging

from common.bus import Retention, Transport
from common.runner import Runtime, Service
from common.settings import IngestorSettings
from ingestor.board import Board
from ingestor.feed import Feed
from ingestor.metrics import IngestorMetrics
from ingestor.parsing import Dedupe
from ingestor.publisher import Publisher

log = logging.getLogger(__name__)

# Share of SHUTDOWN_TIMEOUT_S the final flush may use, so that closing the transport still
# fits before the runner's own deadline cancels everything.
FLUSH_SHARE = 0.8


class Ingestor:
    def __init__(self, settings: IngestorSettings, transport: Transport,
                 metrics: IngestorMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._flush_s = settings.shutdown_timeout_s * FLUSH_SHARE
        self.publisher = Publisher(
            transport, metrics,
            partitions=settings.tick_partitions,
            buffer_frames=settings.ingest_buffer_frames,
            retention=Retention(max_age_s=settings.ticks_retention_s),
            flush_timeout_s=self._flush_s,
            flush_ms=settings.flush_ms,
        )
        dedupe = Dedupe()
        self.feed: Feed | Board = (
            Board(settings, self.publisher.submit, metrics, dedupe)
            if settings.feed == "agg_trade" else
            Feed(settings, self.publisher.submit, metrics, dedupe=dedupe))
        self._writer: asyncio.Task[None] | None = None

    def healthy(self) -> bool:
        """Alive while the writer is: a feed without a writer only fills a buffer."""
        return self._writer is not None and not self._writer.done()

    async def run(self, stopping: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tasks:
            self._writer = tasks.create_task(self.publisher.run(), name="ingestor-writer")
            tasks.create_task(self._read(stopping), name="ingestor-reader")

    async def _read(self, stopping: asyncio.Event) -> None:
        try:
            await self.feed.run(stopping)
        finally:
            # The flush budget counts from the signal, not from the end of the websocket's
            # close handshake, so that the runner's own deadline is not overrun.
            stopped_at = self.feed.stop_requested_at
            self.publisher.finish(None if stopped_at is None else stopped_at + self._flush_s)
            log.info("flushing %d buffered frames", self.publisher.buffered_frames)


async def main(settings: IngestorSettings, stopping: asyncio.Event, runtime: Runtime) -> None:
    ingestor = Ingestor(settings, runtime.transport, IngestorMetrics(runtime.registry))
    runtime.healthy = ingestor.healthy
    await ingestor.run(stopping)


SERVICE = Service("ingestor", IngestorSettings, main,
                  metrics_port="ingestor_metrics_port")
