"""The exchange connection: connect, read, hand ticks to the publisher, reconnect.

An open socket is not evidence of a working feed: the exchange's retired routes accept the
connection and then send nothing, so a watchdog reconnects after ``STALE_AFTER_S`` without a
data frame. The exchange also cuts every connection at 24 h, so the feed rotates before that
on its own schedule rather than losing a frame to the cut. Frames are processed
synchronously between awaits, so a cancelled read never leaves half a frame behind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from common.backoff import Backoff
from common.schemas import Tick
from common.settings import IngestorSettings
from ingestor.metrics import IngestorMetrics
from ingestor.parsing import MAX_AHEAD_MS, FrameParser, MalformedFrame, is_combined

log = logging.getLogger(__name__)

# The client pings on its own schedule too: a half-open TCP connection (no RST ever comes)
# is found within ping_interval + ping_timeout even on a stream that is quiet by nature.
PING_INTERVAL_S: Final = 20.0
PING_TIMEOUT_S: Final = 20.0
CLOSE_TIMEOUT_S: Final = 2.0
_SAMPLE_CHARS: Final = 200
_ENTRY_HINTS: Final = {
    "event_time_ahead": f" (event time over {MAX_AHEAD_MS // 60_000} min ahead of this host's "
                        "clock: if every entry is, this clock is behind, check NTP)",
}


class Feed:
    def __init__(self, settings: IngestorSettings, sink: Callable[[list[Tick]], None],
                 metrics: IngestorMetrics) -> None:
        self._url = settings.binance_ws_url
        self._settings = settings
        self._sink = sink
        self._metrics = metrics
        self._parser = FrameParser(is_combined(self._url))
        stale, rotate = settings.stale_after_s, settings.rotate_after_s
        self._check_every_s = min(1.0, max(0.05, min(stale, rotate) / 4))
        self._last_data = time.monotonic()
        self._logged_kinds: set[str] = set()
        self.stop_requested_at: float | None = None  # event-loop time

    async def run(self, stopping: asyncio.Event) -> None:
        """Read until ``stopping`` is set; a reconnect loop that only a bug can end."""
        connection_loop = asyncio.create_task(self._connect_forever(), name="ingestor-feed")
        stop = asyncio.create_task(stopping.wait())
        try:
            await asyncio.wait({connection_loop, stop}, return_when=asyncio.FIRST_COMPLETED)
            if stop.done():
                self.stop_requested_at = asyncio.get_running_loop().time()
        finally:
            stop.cancel()
            await _cancel(connection_loop)
        if not connection_loop.cancelled():
            connection_loop.result()  # re-raises what killed it
        log.info("stopped reading the exchange")

    async def _connect_forever(self) -> None:
        settings = self._settings
        backoff = Backoff(settings.reconnect_min_s, settings.reconnect_max_s)
        while True:
            reason = await self._session(backoff)
            self._metrics.reconnects.labels(reason).inc()
            delay = 0.0 if reason == "rotated" else backoff.next_delay()
            log.log(logging.INFO if reason == "rotated" else logging.WARNING,
                    "reconnecting to the exchange in %.2f s (reason: %s)", delay, reason)
            await asyncio.sleep(delay)

    async def _session(self, backoff: Backoff) -> str:
        """One connection, from connect to the reason it ended."""
        try:
            async with connect(self._url, max_size=self._settings.ws_max_frame_bytes,
                               ping_interval=PING_INTERVAL_S, ping_timeout=PING_TIMEOUT_S,
                               close_timeout=CLOSE_TIMEOUT_S,
                               # ~100 KB/s of JSON: inflating it would cost more CPU
                               # than the bandwidth it saves.
                               compression=None) as ws:
                log.info("connected to %s", self._url)
                self._metrics.connected.set(1)
                try:
                    return await self._watch(ws, backoff)
                finally:
                    self._metrics.connected.set(0)
        except (OSError, TimeoutError, WebSocketException) as exc:
            log.warning("exchange connection failed: %r", exc)
            return "error"

    async def _watch(self, ws: ClientConnection, backoff: Backoff) -> str:
        """Read in a task and watch it: for the end of the socket, for silence, for age."""
        settings = self._settings
        opened = self._last_data = time.monotonic()
        reader = asyncio.create_task(self._read(ws), name="ingestor-feed-reader")
        try:
            while True:
                done, _ = await asyncio.wait({reader}, timeout=self._check_every_s)
                if done:
                    error = reader.exception()
                    if error is not None and not isinstance(error, ConnectionClosed):
                        raise error
                    log.warning("exchange closed the connection: %s", error or "end of stream")
                    return "closed"
                now = time.monotonic()
                if now - self._last_data >= settings.stale_after_s:
                    log.warning("no data frame for %.1f s on an open socket%s",
                                now - self._last_data, self._stale_hint())
                    return "stale"
                if now - opened >= settings.rotate_after_s:
                    log.info("rotating the exchange connection after %.0f s", now - opened)
                    return "rotated"
        finally:
            await _cancel(reader)
            # Data still arriving HEALTHY_AFTER_S after the open: this was a working
            # connection, so the next failure starts the backoff again from the bottom.
            if self._last_data - opened >= settings.healthy_after_s:
                backoff.reset()

    async def _read(self, ws: ClientConnection) -> None:
        on_message = self.on_message
        async for message in ws:
            on_message(message)

    def on_message(self, message: str | bytes) -> None:
        """One websocket message: the hot path, synchronous on purpose."""
        arrival = time.time()
        metrics = self._metrics
        metrics.frames.inc()
        if isinstance(message, bytes):  # the exchange speaks text frames only
            self._malformed(MalformedFrame("binary", "binary websocket frame"), message)
            return
        try:
            parsed = self._parser.parse(message, int(arrival * 1000))
        except MalformedFrame as exc:
            self._malformed(exc, message)
            return
        self._last_data = time.monotonic()
        metrics.last_frame_at = arrival
        if parsed.filtered:
            metrics.ticks_filtered.inc(parsed.filtered)
        if parsed.bad:
            self._bad_entries(parsed.bad, message)
        ticks = parsed.ticks
        if ticks:
            metrics.ticks.inc(len(ticks))
            metrics.exchange_lag.observe(arrival - ticks[-1].event_time_ms / 1000)
            self._sink(ticks)

    def _malformed(self, exc: MalformedFrame, message: str | bytes) -> None:
        self._metrics.malformed.labels(exc.kind).inc()
        if self._first_time(exc.kind):
            log.warning("skipping a malformed frame (%s; further ones only counted): %s %r",
                        exc.kind, exc, message[:_SAMPLE_CHARS])

    def _bad_entries(self, bad: dict[str, int], message: str) -> None:
        metrics = self._metrics
        metrics.bad_entries.inc(sum(bad.values()))
        for kind, count in bad.items():
            metrics.malformed.labels(kind).inc(count)
            if self._first_time(kind):
                log.warning("skipped %d entries of a frame as %s%s, the rest kept; further "
                            "ones only counted: %r", count, kind, _ENTRY_HINTS.get(kind, ""),
                            message[:_SAMPLE_CHARS])

    def _first_time(self, kind: str) -> bool:
        """A broken feed repeats itself: the first of each kind tells enough."""
        if kind in self._logged_kinds:
            return False
        self._logged_kinds.add(kind)
        return True

    def _stale_hint(self) -> str:
        if "/market/" in self._url:
            return ""
        return ("; market data is only served on the /market/ws and /market/stream routes, "
                "check BINANCE_WS_URL")


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel and wait, without swallowing a cancellation aimed at the caller."""
    if task.done():
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
