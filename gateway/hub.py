"""Fan-out of the ``alerts`` stream to every connected browser.

One reader per gateway process reads the stream (a broadcast reader: every gateway sees
every alert). The alerts of one read are encoded once, as one complete WebSocket frame
(``{"type":"alert",...}`` for one, ``{"type":"alerts","alerts":[...]}`` oldest first for
several), and the reader writes those same bytes to every subscriber's connection itself,
synchronously (``gateway.wire``): no task wakes up and no ASGI ``send`` runs per client. A
subscriber whose connection holds more than ``max_buffered_bytes`` unsent is dropped on
the spot: a slow browser must never delay the alert for the others, nor grow memory
without bound. One timer, not one per client, pings the clients that heard nothing for
``WS_HEARTBEAT_S``.

Everything that touches the ring and the subscriber set is synchronous, so on one event loop
"subscribe, write the history and register" is atomic with respect to "append and fan out":
an alert is either in a new subscriber's history or written after it, never both and never
neither, and never before the history.

Where this sits in a tick's path: docs/architecture.md#a-tick-from-socket-to-browser.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import msgspec

from common.backoff import Backoff
from common.bus import BusUnavailable, Delivery, Transport
from common.partitioning import ALERTS_STREAM
from common.schemas import alert_json_encoder, decode_alert
from gateway.metrics import Metrics
from gateway.wire import BEHIND, WRITTEN, text_frame

log = logging.getLogger(__name__)

READ_COUNT: Final = 256
UNBOUNDED: Final = 1 << 62
MIN_RING_SIZE: Final = 1000
# Reconnects are jittered by Backoff; the ceiling is short because a gateway that is down
# for a trader's whole move is useless, and one XREAD per attempt costs Redis nothing.
RETRY_MIN_S: Final = 0.1
RETRY_MAX_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class Entry:
    """One alert of the ring, its JSON encoded once for every message it goes into.

    ``seq`` is the order in which this gateway received it, which is what ``since`` and
    ``before`` cursors resolve to.
    """

    id: str
    json: str
    seq: int = -1


class UnknownAlert(LookupError):
    """A cursor names an alert this gateway no longer (or never) held in memory."""


@dataclass(frozen=True, slots=True)
class Drop:
    reason: str
    code: int
    message: str


TOO_SLOW: Final = Drop("too_slow", 1013, "too slow")
SERVER_FULL: Final = Drop("max_clients", 1013, "too many clients")
FLOOD: Final = Drop("flood", 1008, "too many messages")


class Sink(Protocol):
    """Where a subscriber's frames go (``gateway.wire.Wire`` on a real connection):
    ``offer`` returns ``WRITTEN``, ``BEHIND`` or ``GONE``."""

    def offer(self, frame: bytes, max_buffered: int) -> int: ...


class Subscriber:
    """One connected client: its connection, when it last heard from the hub (for the
    heartbeat), and why the hub dropped it, if it did."""

    __slots__ = ("drop", "dropped", "heard_at", "sink")

    def __init__(self, sink: Sink, now: float) -> None:
        self.sink = sink
        self.heard_at = now
        self.dropped = asyncio.Event()
        self.drop: Drop | None = None


def history_message(entries: Sequence[Entry], *, resumed: bool = False) -> str:
    alerts = ",".join(e.json for e in entries)
    flag = ',"resumed":true' if resumed else ""
    return '{"type":"history","alerts":[' + alerts + "]" + flag + "}"


def alerts_message(entries: Sequence[Entry]) -> str:
    """The live message for the alerts of one read: one ``alert``, or ``alerts``."""
    if len(entries) == 1:
        return f'{{"type":"alert","alert":{entries[0].json}}}'
    return '{"type":"alerts","alerts":[' + ",".join(e.json for e in entries) + "]}"


def ping_message(now_s: float) -> str:
    return f'{{"type":"ping","t":{int(now_s * 1000)}}}'


def alerts_document(entries: Sequence[Entry], next_cursor: str | None = None) -> str:
    cursor = "null" if next_cursor is None else f'"{next_cursor}"'
    return '{"alerts":[' + ",".join(e.json for e in entries) + '],"next":' + cursor + "}"


class Hub:
    def __init__(self, *, metrics: Metrics, history_size: int, max_buffered_bytes: int,
                 max_clients: int, read_block_ms: int, seen_limit: int = 10_000) -> None:
        self._metrics = metrics
        self._history_size = history_size
        self._ring_size = max(history_size, MIN_RING_SIZE)
        self._ring: deque[Entry] = deque(maxlen=self._ring_size)
        # Ordered dict used as a bounded FIFO set: ids stay known for longer than they stay
        # in the ring, as long as the bus could hand them back (its MAXLEN).
        self._seen: dict[str, int] = {}  # id → seq
        self._next_seq = 0
        self._seen_limit = max(seen_limit, self._ring_size)
        self._subscribers: set[Subscriber] = set()
        self._waiting = 0  # clients holding a place while the startup backlog loads
        self._max_buffered = max_buffered_bytes
        self._fanned_out_at = 0.0  # monotonic time of the last frame written to everybody
        self._max_clients = max_clients
        self._read_block_ms = read_block_ms
        self._reading = False
        self._running = False
        # Set once the startup backlog is in the ring: before that, a client would get an
        # empty history and then the backlog as "live" alerts, and a valid since would 4404.
        self.primed = asyncio.Event()

    @property
    def reading(self) -> bool:
        """True while the last bus operation of the reader succeeded."""
        return self._reading

    @property
    def running(self) -> bool:
        return self._running

    @property
    def client_count(self) -> int:
        """Clients subscribed, and those holding a place until the history is loaded."""
        return len(self._subscribers) + self._waiting

    # -- subscribers ------------------------------------------------------------------------

    def hold(self) -> bool:
        """Hold a place of ``MAX_CLIENTS`` for a client that waits for the startup backlog
        (``primed``), so that waiting clients cannot pile up beyond the limit. False when
        the gateway is full (counted as a drop). Give the place back with ``release``,
        before ``subscribe`` (which then takes it, with no await in between)."""
        if not self._has_room():
            return False
        self._waiting += 1
        self._count_clients()
        return True

    def release(self) -> None:
        self._waiting -= 1
        self._count_clients()

    def subscribe(self, sink: Sink, since: str | None = None,
                  then: Iterable[str] = ()) -> tuple[Subscriber, list[Entry]] | None:
        """Register a client, write it the history (the last ``HISTORY_SIZE`` alerts, or
        with ``since`` every alert received after that one) and the ``then`` messages,
        and return it with that history; every alert after it is written by the fan-out.

        ``None`` when the gateway already serves ``MAX_CLIENTS`` (counted as a drop);
        ``UnknownAlert`` when ``since`` is not in memory, so that the client is told to
        start over instead of silently missing what came in between.
        """
        history = self.recent(self._history_size) if since is None else self.after(since)
        if not self._has_room():
            return None
        subscriber = Subscriber(sink, time.monotonic())
        # The greeting is written whatever its size: the bound applies to what follows.
        for message in (history_message(history, resumed=since is not None), *then):
            sink.offer(text_frame(message.encode()), UNBOUNDED)
        self._subscribers.add(subscriber)
        self._count_clients()
        return subscriber, history

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        self._count_clients()

    def _has_room(self) -> bool:
        """A place under ``MAX_CLIENTS``; a client refused for want of one counts as a drop."""
        if self.client_count < self._max_clients:
            return True
        self._metrics.clients_dropped.labels(SERVER_FULL.reason).inc()
        return False

    def _count_clients(self) -> None:
        self._metrics.clients_connected.set(self.client_count)

    def drop(self, subscriber: Subscriber, why: Drop) -> None:
        """Stop feeding a client now; its connection handler closes it with ``why``."""
        if subscriber.drop is not None:
            return
        subscriber.drop = why
        self.unsubscribe(subscriber)
        self._metrics.clients_dropped.labels(why.reason).inc()
        subscriber.dropped.set()
        log.info("dropped a client: %s", why.message)

    def after(self, alert_id: str) -> list[Entry]:
        """Every alert in memory received after ``alert_id``, oldest first."""
        seq = self._seq_in_ring(alert_id)
        return [entry for entry in self._ring if entry.seq > seq]

    def page(self, limit: int, before: str | None = None) -> tuple[list[Entry], str | None]:
        """Up to ``limit`` alerts older than ``before`` (or the newest), newest first, and
        the cursor of the next page (``None`` when memory holds nothing older)."""
        newest_first = reversed(self._ring)
        if before is not None:
            seq = self._seq_in_ring(before)
            newest_first = (entry for entry in newest_first if entry.seq < seq)
        entries = list(itertools.islice(newest_first, limit + 1))
        more = len(entries) > limit
        entries = entries[:limit]
        return entries, entries[-1].id if more and entries else None

    def _seq_in_ring(self, alert_id: str) -> int:
        seq = self._seen.get(alert_id)
        if seq is None or not self._ring or seq < self._ring[0].seq:
            raise UnknownAlert(alert_id)
        return seq

    def recent(self, limit: int) -> list[Entry]:
        """The newest ``limit`` alerts, oldest first."""
        if limit <= 0:
            return []
        if limit >= len(self._ring):
            return list(self._ring)
        return list(self._ring)[-limit:]

    # -- ingest ------------------------------------------------------------------------------

    async def ingest(self, deliveries: Sequence[Delivery], *, live: bool = True) -> int:
        """Decode, deduplicate and fan out a batch; returns how many alerts were new.

        The new alerts of one read go out together, in one frame per client (oldest
        first): a crash that fires dozens of alerts costs one write per client, not
        dozens. The startup backlog (``live=False``) only fills the ring: those alerts are
        history, not news. An entry that is not an alert is counted and skipped, never
        moved to ``alerts.dead``: every gateway reads every entry, and each would bury it
        again (the notifier, in its group, buries it once).
        """
        fresh: list[Entry] = []
        event_times: list[int] = []
        for delivery in deliveries:
            try:
                alert = decode_alert(delivery.payload)
            except msgspec.MsgspecError as exc:
                self._metrics.bad_payloads.inc()
                log.warning("skipping undecodable entry %s of %s: %s",
                            delivery.position, delivery.stream, exc)
                continue
            if alert.id in self._seen:
                self._metrics.duplicates.inc()
                continue
            seq = self._next_seq
            self._next_seq += 1
            self._remember(alert.id, seq)
            entry = Entry(alert.id, alert_json_encoder.encode(alert).decode(), seq)
            self._ring.append(entry)
            fresh.append(entry)
            event_times.append(alert.event_time_ms)
        if live and fresh:
            self._metrics.alerts_received.inc(len(fresh))
            delivered = self._fan_out(alerts_message(fresh))
            self._metrics.deliveries.inc(delivered * len(fresh))
            # What a browser waited, from the exchange's event time to its connection
            # (clamped: a clock behind the exchange's reads negative).
            now = time.time()
            for event_time_ms in event_times:
                self._metrics.end_to_end.observe(max(0.0, now - event_time_ms / 1000))
        # One turn for the rest of the loop (handshakes, the API) between two reads.
        await asyncio.sleep(0)
        return len(fresh)

    def broadcast(self, message: str) -> None:
        """A non-alert message for every client (rule changes), through the same path."""
        self._fan_out(message)

    def _remember(self, alert_id: str, seq: int) -> None:
        self._seen[alert_id] = seq
        if len(self._seen) > self._seen_limit:
            del self._seen[next(iter(self._seen))]

    def _fan_out(self, message: str) -> int:
        """Write ``message`` to every subscriber; returns to how many it was written."""
        self._fanned_out_at = time.monotonic()
        return self._write(self._subscribers, text_frame(message.encode()))

    def _write(self, subscribers: Iterable[Subscriber], frame: bytes) -> int:
        written = 0
        limit = self._max_buffered
        for subscriber in list(subscribers):
            outcome = subscriber.sink.offer(frame, limit)
            if outcome == WRITTEN:
                written += 1
            elif outcome == BEHIND:
                self.drop(subscriber, TOO_SLOW)
            else:  # closing or gone: its handler is about to hear the disconnect
                self.unsubscribe(subscriber)
        return written

    async def heartbeat(self, heartbeat_s: float) -> None:
        """Until cancelled, ping every client that heard nothing for ``heartbeat_s``, so
        that a browser can tell a quiet market from a dead connection (it cannot see
        protocol pings). One timer for all clients, waking four times per period: a ping
        comes after 1 to 1.25 periods of silence."""
        while True:
            await asyncio.sleep(heartbeat_s / 4)
            now = time.monotonic()
            if now - self._fanned_out_at < heartbeat_s:
                continue
            idle = [s for s in self._subscribers if now - s.heard_at >= heartbeat_s]
            if idle:
                for subscriber in idle:
                    subscriber.heard_at = now
                self._write(idle, text_frame(ping_message(time.time()).encode()))

    # -- reader ------------------------------------------------------------------------------

    async def run(self, transport: Transport) -> None:
        """Read the alerts stream until cancelled; a bus outage is waited out, not fatal.

        Anything else that escapes is a bug (or a configuration error): it propagates, and
        the service stops (and its supervisor restarts it) instead of serving a page that
        will never update again (see ``gateway.service.serve``).
        """
        self._running = True
        try:
            await self._read_forever(transport)
        finally:
            self._running = False
            self._set_reading(False)

    async def _read_forever(self, transport: Transport) -> None:
        reader = transport.broadcast_reader(ALERTS_STREAM)
        backoff = Backoff(RETRY_MIN_S, RETRY_MAX_S)
        while True:
            live = self.primed.is_set()
            try:
                if live:
                    deliveries = await reader.read(READ_COUNT, self._read_block_ms)
                else:
                    deliveries = await reader.backlog(self._ring_size)
            except BusUnavailable as exc:
                self._metrics.bus_errors.inc()
                delay = backoff.next_delay()
                if backoff.attempts == 1:
                    log.warning("alerts stream unavailable, retrying: %s", exc)
                else:
                    log.debug("alerts stream still unavailable (attempt %d): %s",
                              backoff.attempts, exc)
                self._set_reading(False)
                await asyncio.sleep(delay)
                continue
            if not self._reading:
                log.info("reading the alerts stream")
            self._set_reading(True)
            backoff.reset()
            await self.ingest(deliveries, live=live)
            self.primed.set()

    def _set_reading(self, reading: bool) -> None:
        self._reading = reading
        self._metrics.reader_up.set(1 if reading else 0)
