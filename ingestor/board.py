"""``FEED=agg_trade``: the whole board's trades, liquidations and mark prices, over as many
exchange connections as it takes, all under one ``asyncio.TaskGroup``.

The symbols come from ``ingestor.discovery`` at start and every ``SYMBOLS_REFRESH_S``;
``ingestor.sharding.Plan`` decides which stream goes on which connection, each ``Feed``
brings its socket to its streams (paced) and keeps it alive. A failed refresh keeps the
board in force and is retried with backoff (at least the exchange's ``Retry-After``), so
the exchange's REST being down never stops the feed, and never the service. With no list
at all yet, connection 0 carries the board streams (liquidations, mark prices) meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

import httpx

from common.backoff import Backoff
from common.runner import wait_or_stop
from common.schemas import Tick
from common.settings import IngestorSettings
from ingestor.discovery import Discovery, DiscoveryFailed
from ingestor.feed import Feed
from ingestor.metrics import IngestorMetrics
from ingestor.parsing import Dedupe
from ingestor.sharding import Changes, Plan, describe

log = logging.getLogger(__name__)

# Retries of a failed refresh: from this, doubling up to SYMBOLS_REFRESH_S.
REFRESH_RETRY_MIN_S: Final = 1.0


class Board:
    def __init__(self, settings: IngestorSettings, sink: Callable[[list[Tick]], None],
                 metrics: IngestorMetrics, dedupe: Dedupe, *,
                 http_transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._settings = settings
        self._http_transport = http_transport  # tests: the exchange's answers, scripted
        self._sink = sink
        self._metrics = metrics
        self._dedupe = dedupe
        self.plan = Plan(settings.streams_per_connection)
        self.feeds: dict[int, Feed] = {}
        self._stops: dict[int, asyncio.Event] = {}
        self.listed = False  # a refresh succeeded at least once
        self.stop_requested_at: float | None = None  # event-loop time

    async def run(self, stopping: asyncio.Event) -> None:
        """Read the board until ``stopping`` is set."""
        async with httpx.AsyncClient(transport=self._http_transport) as client, \
                asyncio.TaskGroup() as tasks:
            discovery = Discovery(client, self._settings.binance_rest_url, self._metrics)
            try:
                await self._refresh_forever(discovery, tasks, stopping)
            finally:
                if stopping.is_set():
                    self.stop_requested_at = asyncio.get_running_loop().time()
                for stop in self._stops.values():
                    stop.set()
        log.info("stopped reading the board")

    async def _refresh_forever(self, discovery: Discovery, tasks: asyncio.TaskGroup,
                               stopping: asyncio.Event) -> None:
        settings = self._settings
        backoff = Backoff(min(REFRESH_RETRY_MIN_S, settings.symbols_refresh_s),
                          settings.symbols_refresh_s)
        while not stopping.is_set():
            listing = asyncio.ensure_future(discovery.symbols())
            stop = asyncio.ensure_future(stopping.wait())
            try:
                await asyncio.wait({listing, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
                listing.cancel()  # a request in flight at shutdown is not waited for
            if stopping.is_set():
                return
            try:
                symbols = listing.result()
            except DiscoveryFailed as exc:
                self._metrics.rest_failures.labels(exc.reason).inc()
                delay = max(backoff.next_delay(), exc.retry_after_s or 0.0)
                log.warning("cannot list the perpetuals (%s); %s, retrying in %.1f s", exc,
                            "keeping the board in force" if self.listed else
                            "reading liquidations and mark prices meanwhile", delay)
                if not self.plan.connections:
                    self._apply(self.plan.update(()), tasks)
            else:
                backoff.reset()
                self.listed = True
                self._metrics.symbol_refreshes.inc()
                changes = self.plan.update(symbols)
                self._apply(changes, tasks)
                delay = settings.symbols_refresh_s
            if await wait_or_stop(stopping, delay):
                return

    def _apply(self, changes: Changes, tasks: asyncio.TaskGroup) -> None:
        plan, metrics = self.plan, self._metrics
        for connection in changes.closed:
            self._stops.pop(connection).set()
            self.feeds.pop(connection)
        for connection in {*changes.subscribe, *changes.unsubscribe}:
            self.feeds[connection].set_streams(plan.streams(connection))
        for connection, streams in changes.opened.items():
            feed = Feed(self._settings, self._sink, metrics, streams=streams,
                        name=str(connection), dedupe=self._dedupe)
            stop = asyncio.Event()
            self.feeds[connection], self._stops[connection] = feed, stop
            tasks.create_task(self._run_feed(feed, stop), name=f"ingestor-board-{connection}")
        metrics.wanted_connections = len(plan.connections)
        metrics.symbols_listed.set(len(plan.symbols))
        if changes.listed or changes.delisted or changes.opened or changes.closed:
            log.info("board: %s", describe(changes, plan))

    async def _run_feed(self, feed: Feed, stop: asyncio.Event) -> None:
        try:
            await feed.run(stop)
        finally:
            if feed.name not in {str(c) for c in self.feeds}:  # closed, not stopped
                self._metrics.connection_streams.remove(feed.name)
