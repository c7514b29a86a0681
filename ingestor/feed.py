"""One exchange connection: connect, read, hand ticks on, keep its streams, reconnect.

An open socket is not evidence of a working feed: the exchange's retired routes accept the
connection and then send nothing, so a watchdog reconnects after ``STALE_AFTER_S`` without a
data frame. The exchange also cuts every connection at 24 h, so the feed rotates before that
(``ROTATE_AFTER_S``), make-before-break: the successor is opened with the same streams and
the old socket is closed only once the successor delivers data (or after
``ROTATION_OVERLAP_S``). Meanwhile both deliver; the parser's shared ``Dedupe`` drops what
the other one delivered first, so the switch loses nothing and doubles nothing. Frames are
processed synchronously between awaits, so a cancelled read never leaves half a frame.

A ``Feed`` reads either one fixed URL (``FEED=mini_ticker``: ``BINANCE_WS_URL``), or a set
of streams on ``BINANCE_WS_BASE_URL`` that its owner (``ingestor.board``) may change at any
time: the open socket is then brought to the set with SUBSCRIBE and UNSUBSCRIBE messages,
paced by ``ingestor.sharding.Pacer``, and a new socket names the set in its URL.

The socket itself is ``ingestor.ws_client``'s, the client chosen by ``WS_CLIENT``: it hands
each message to ``on_message`` synchronously, from the event loop's read callback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from common.backoff import Backoff
from common.schemas import Tick
from common.settings import IngestorSettings
from ingestor.metrics import IngestorMetrics
from ingestor.parsing import MAX_AHEAD_MS, Dedupe, FrameParser, MalformedFrame, is_combined
from ingestor.sharding import Pacer, stream_url, subscription_messages
from ingestor.ws_client import CLIENTS, ConnectFailed, Connection, ConnectionClosed, Options

log = logging.getLogger(__name__)

# The client pings on its own schedule too: a half-open TCP connection (no RST ever comes)
# is found within ping_interval + ping_timeout even on a stream that is quiet by nature.
PING_INTERVAL_S: Final = 20.0
PING_TIMEOUT_S: Final = 20.0
CLOSE_TIMEOUT_S: Final = 2.0
# The longest a rotation keeps the old socket open waiting for the successor's first data.
ROTATION_OVERLAP_S: Final = 10.0
# A trade-level feed is tens of thousands of frames a second: the per-frame counts go to
# Prometheus (a lock per call) at most this often, and the lag histogram takes one frame per
# this interval, instead of each frame costing three locked calls.
METRICS_EVERY_S: Final = 0.1
_SAMPLE_CHARS: Final = 200
_ENTRY_HINTS: Final = {
    "event_time_ahead": f" (event time over {MAX_AHEAD_MS // 60_000} min ahead of this host's "
                        "clock: if every entry is, this clock is behind, check NTP)",
}


class _Session:
    """One socket of a feed, with what it is subscribed to and when it last had data."""

    def __init__(self, streams: set[str], on_message: Callable[[bytes | str, bool], bool]
                 ) -> None:
        self.opened = self.last_data = time.monotonic()
        self.streams = streams  # as the exchange has them: the URL's, then our requests'
        self.pacer = Pacer()
        self.delivered = asyncio.Event()
        self._has_delivered = False
        self._on_message = on_message
        self.ws: Connection | None = None  # once connected
        self.reader: asyncio.Task[str] | None = None  # ends with the connection: why

    def deliver(self, message: bytes | str, binary: bool) -> None:
        """The client's callback: every message of this socket, on the hot path."""
        if self._on_message(message, binary):
            self.last_data = time.monotonic()
            if not self._has_delivered:  # a plain flag: Event.is_set() is a Python call
                self._has_delivered = True
                self.delivered.set()


class Feed:
    def __init__(self, settings: IngestorSettings, sink: Callable[[list[Tick]], None],
                 metrics: IngestorMetrics, *, streams: Iterable[str] | None = None,
                 name: str = "0", dedupe: Dedupe | None = None) -> None:
        self._settings = settings
        self._sink = sink
        self._metrics = metrics
        self.name = name
        self._managed = streams is not None
        self.streams: frozenset[str] = frozenset(streams or ())
        self._url = settings.binance_ws_url
        self._connect = CLIENTS[settings.ws_client]
        self._options = Options(max_size=settings.ws_max_frame_bytes,
                                ping_interval_s=PING_INTERVAL_S, ping_timeout_s=PING_TIMEOUT_S,
                                close_timeout_s=CLOSE_TIMEOUT_S)
        if self._managed:
            metrics.connection_streams.labels(name).set(len(self.streams))
        self._parser = FrameParser(self._managed or is_combined(self._url), dedupe)
        stale, rotate = settings.stale_after_s, settings.rotate_after_s
        self._check_every_s = min(1.0, max(0.05, min(stale, rotate) / 4))
        # frames, ticks, duplicates, filtered entries not yet added to their counters
        self._counted = [0, 0, 0, 0]
        self._counted_at = 0.0  # time.time() of the last flush of the counts
        self._changed = asyncio.Event()
        self._next_id = 1
        self._logged_kinds: set[str] = set()
        self.stop_requested_at: float | None = None  # event-loop time

    @property
    def url(self) -> str:
        """Where the next socket goes (the streams beyond the URL's room are subscribed)."""
        if not self._managed:
            return self._url
        return stream_url(self._settings.binance_ws_base_url, self.streams)[0]

    def set_streams(self, streams: Iterable[str]) -> None:
        """The streams to read from now on; the open socket follows within a few messages."""
        self.streams = frozenset(streams)
        self._metrics.connection_streams.labels(self.name).set(len(self.streams))
        self._changed.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Read until ``stopping`` is set; a reconnect loop that only a bug can end."""
        connection_loop = asyncio.create_task(self._connect_forever(),
                                              name=f"ingestor-feed-{self.name}")
        stop = asyncio.create_task(stopping.wait())
        try:
            await asyncio.wait({connection_loop, stop}, return_when=asyncio.FIRST_COMPLETED)
            if stop.done():
                self.stop_requested_at = asyncio.get_running_loop().time()
        finally:
            stop.cancel()
            await _cancel(connection_loop)
            self._metrics.open_connections.discard(self.name)
            self.flush_counts()
        if not connection_loop.cancelled():
            connection_loop.result()  # re-raises what killed it
        log.info("stopped reading the exchange (connection %s)", self.name)

    async def _connect_forever(self) -> None:
        settings = self._settings
        backoff = Backoff(settings.reconnect_min_s, settings.reconnect_max_s)
        session: _Session | None = None
        try:
            while True:
                if session is None:
                    session = await self._open()
                    if session is None:
                        await self._retry("error", backoff)
                        continue
                reason = await self._watch(session)
                if reason == "rotated":
                    successor = await self._successor()
                    await self._close(session, backoff)
                    self._metrics.reconnects.labels("rotated").inc()
                    session = successor  # None: the successor failed, reconnect at once
                    if session is None:
                        self._metrics.open_connections.discard(self.name)
                    continue
                await self._close(session, backoff)
                session = None
                self._metrics.open_connections.discard(self.name)
                await self._retry(reason, backoff)
        finally:
            if session is not None:
                await self._close(session, backoff)

    async def _retry(self, reason: str, backoff: Backoff) -> None:
        self._metrics.reconnects.labels(reason).inc()
        delay = backoff.next_delay()
        log.warning("reconnecting to the exchange in %.2f s (reason: %s, connection %s)", delay,
                    reason, self.name)
        await asyncio.sleep(delay)

    async def _open(self) -> _Session | None:
        """A connected socket with its reader running, or None (logged) when it failed."""
        url, rest = (stream_url(self._settings.binance_ws_base_url, self.streams)
                     if self._managed else (self._url, []))
        session = _Session(set(self.streams) - set(rest), self.on_message)
        try:
            session.ws = await self._connect(url, session.deliver, self._options)
        except ConnectFailed as exc:
            log.warning("exchange connection %s failed: %s", self.name, exc)
            return None
        session.reader = asyncio.create_task(session.ws.closed(),
                                             name=f"ingestor-feed-reader-{self.name}")
        log.info("connected to %s", url if len(url) <= 300 else
                 f"{url[:200]}… ({len(self.streams)} streams)")
        self._metrics.open_connections.add(self.name)
        return session

    async def _close(self, session: _Session, backoff: Backoff | None) -> None:
        # The close handshake first: it must happen even while this task is being
        # cancelled, which _cancel passes on.
        if session.ws is not None:
            await session.ws.close()
        if session.reader is not None:
            await _cancel(session.reader)
        # Data still arriving HEALTHY_AFTER_S after the open: this was a working connection,
        # so the next failure starts the backoff again from the bottom.
        if (backoff is not None
                and session.last_data - session.opened >= self._settings.healthy_after_s):
            backoff.reset()

    async def _watch(self, session: _Session) -> str:
        """Watch the socket: for its end, for silence, for age; keep its streams meanwhile."""
        settings = self._settings
        reader = session.reader
        assert reader is not None
        keeper = (asyncio.create_task(self._keep_streams(session),
                                      name=f"ingestor-feed-streams-{self.name}")
                  if self._managed else None)
        try:
            while True:
                watched = {reader} if keeper is None else {reader, keeper}
                await asyncio.wait(watched, timeout=self._check_every_s,
                                   return_when=asyncio.FIRST_COMPLETED)
                self.flush_counts()
                if keeper is not None and keeper.done():
                    error = keeper.exception()
                    if not isinstance(error, ConnectionClosed):
                        raise error or RuntimeError("the stream keeper returned")
                    keeper = None  # the socket is closing: the reader ends next
                if reader.done():
                    log.warning("exchange closed connection %s: %s", self.name,
                                reader.result())  # (re-raises what the reader raised)
                    return "closed"
                now = time.monotonic()
                if now - session.last_data >= settings.stale_after_s:
                    log.warning("no data frame for %.1f s on open connection %s%s",
                                now - session.last_data, self.name, self._stale_hint())
                    return "stale"
                if now - session.opened >= settings.rotate_after_s:
                    log.info("rotating exchange connection %s after %.0f s", self.name,
                             now - session.opened)
                    return "rotated"
        finally:
            if keeper is not None:
                await _cancel(keeper)

    async def _successor(self) -> _Session | None:
        """The socket that takes over, open and delivering (or given up on)."""
        successor = await self._open()
        if successor is None:
            log.warning("no successor for the rotation: closing the old socket anyway")
            return None
        reader = successor.reader
        assert reader is not None
        delivered = asyncio.create_task(successor.delivered.wait())
        try:
            await asyncio.wait({delivered, reader}, timeout=ROTATION_OVERLAP_S,
                               return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # stopped meanwhile: the successor is no one's to close
            await self._close(successor, None)
            raise
        finally:
            delivered.cancel()
        if reader.done():
            log.warning("the rotation's successor closed before it delivered")
            await self._close(successor, None)
            return None
        log.info("rotated: the successor %s after %.2f s of overlap",
                 "delivers" if successor.delivered.is_set() else "is still silent",
                 time.monotonic() - successor.opened)
        return successor

    async def _keep_streams(self, session: _Session) -> None:
        """Bring the socket's subscriptions to ``self.streams``, paced, for as long as it
        is the feed's socket; ``set_streams`` wakes it."""
        loop = asyncio.get_running_loop()
        ws = session.ws
        assert ws is not None
        while True:
            self._changed.clear()
            for method, streams in (("UNSUBSCRIBE", session.streams - self.streams),
                                    ("SUBSCRIBE", self.streams - session.streams)):
                if not streams:
                    continue
                for message in subscription_messages(method, streams, self._next_id):
                    self._next_id += 1
                    await asyncio.sleep(session.pacer.delay(loop.time()))
                    session.pacer.sent(loop.time())
                    await ws.send(json.dumps(message))
                    self._metrics.subscription_messages.labels(method).inc()
                    params = set(message["params"])
                    if method == "SUBSCRIBE":
                        session.streams |= params
                    else:
                        session.streams -= params
                    log.info("%s %d streams on connection %s", method.lower(), len(params),
                             self.name)
            if session.streams == self.streams:
                await self._changed.wait()

    def on_message(self, message: bytes | str, binary: bool = False) -> bool:
        """One websocket message: the hot path, synchronous on purpose. True when it was
        a data frame (not a reply, not malformed)."""
        arrival = time.time()
        metrics = self._metrics
        counted = self._counted
        counted[0] += 1
        sample = arrival - self._counted_at >= METRICS_EVERY_S
        if sample:
            self.flush_counts(arrival)
        if binary:  # the exchange speaks text frames only
            self._malformed(MalformedFrame("binary", "binary websocket frame"), message)
            return False
        try:
            parsed = self._parser.parse(message, int(arrival * 1000))
        except MalformedFrame as exc:
            self._malformed(exc, message)
            return False
        if parsed.reply is not None:
            self._reply(parsed.reply)
            return False
        metrics.last_frame_at = arrival
        if parsed.duplicates:  # every trade for a while, in a rotation's overlap
            counted[2] += parsed.duplicates
        if parsed.filtered:
            counted[3] += parsed.filtered
        if parsed.bad:
            self._bad_entries(parsed.bad, message)
        ticks = parsed.ticks
        if ticks:
            counted[1] += len(ticks)
            if sample:
                metrics.exchange_lag.observe(arrival - ticks[-1].event_time_ms / 1000)
            self._sink(ticks)
        return True

    def flush_counts(self, now: float | None = None) -> None:
        """Add what was counted since the last flush to its counters."""
        self._counted_at = time.time() if now is None else now
        metrics = self._metrics
        for counter, count in zip((metrics.frames, metrics.ticks, metrics.duplicates,
                                   metrics.ticks_filtered), self._counted, strict=True):
            if count:
                counter.inc(count)
        self._counted[:] = (0, 0, 0, 0)

    def _reply(self, reply: Any) -> None:
        if reply.get("error") is not None:
            self._metrics.subscription_errors.inc()
            log.warning("the exchange refused request %s on connection %s: %s",
                        reply.get("id"), self.name, str(reply["error"])[:_SAMPLE_CHARS])

    def _malformed(self, exc: MalformedFrame, message: str | bytes) -> None:
        self._metrics.malformed.labels(exc.kind).inc()
        if self._first_time(exc.kind):
            log.warning("skipping a malformed frame (%s; further ones only counted): %s %r",
                        exc.kind, exc, message[:_SAMPLE_CHARS])

    def _bad_entries(self, bad: dict[str, int], message: bytes | str) -> None:
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
        url = self.url
        if "/market/" in url:
            return ""
        variable = "BINANCE_WS_BASE_URL" if self._managed else "BINANCE_WS_URL"
        return ("; market data is only served on the /market/ws and /market/stream routes, "
                f"check {variable}")


async def _cancel(task: asyncio.Task[Any]) -> None:
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
