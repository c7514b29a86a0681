"""Bounds on one HTTP request, enforced in uvicorn's protocol before the app sees anything.

uvicorn puts no limit on a request head: its httptools parser appends every chunk of an
endless header to the one before, on the event loop, so one 64 MB header held the loop for
seconds (every browser's next alert with it) and grew the process by tens of MB; and a
WebSocket upgrade whose line is too long for the handshake parser behind it got no answer
at all and kept its connection, uncounted by ``MAX_CLIENTS``.

``LimitedHttpProtocol`` scans the raw bytes of each head before the parser gets them, and
refuses at the first byte past a limit, so the parser never holds more than the limits:

- a request line over ``MAX_REQUEST_LINE_BYTES``: 414;
- a header line over that same length, a head over ``MAX_HEADER_BYTES``, or more than
  ``MAX_HEADER_COUNT`` headers: 431;
- a body over ``MAX_BODY_BYTES``, by its ``Content-Length`` before the app starts, or while
  a chunked body streams: 413;
- a request (or a new connection's first one) not received in full within
  ``REQUEST_READ_TIMEOUT_S``: 408 (slowloris); an idle new connection is just closed.

A refusal is a short plain-text answer with ``Connection: close``, counted in
``gateway_requests_refused_total{reason}``. The connection is then closed the way nginx
does ("lingering close"): our side is shut for writing, and what the client still sends is
read and thrown away (for up to ``LINGER_S`` and ``LINGER_BYTES``), so that a client still
uploading its 64 MB reads the answer instead of a reset that would discard it.

Pipelined requests (several in one read) are scanned from the first byte of a read after
the previous one completed: the parser may see at most one read (256 KiB) of a following
head unscanned. Browsers do not pipeline.
"""

from __future__ import annotations

import asyncio
import logging
from asyncio import TimerHandle
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from prometheus_client import Counter
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from common.settings import GatewaySettings

log = logging.getLogger(__name__)

# Below the WebSocket handshake parser's own 128, which it enforces without an answer.
MAX_HEADER_COUNT: Final = 100
# How long, and how much, a refused client may keep sending (its answer is on its way)
# before its connection is reset: enough for a client to read the answer, too little to
# keep the event loop reading at line speed for someone who never stops.
LINGER_S: Final = 2.0
LINGER_BYTES: Final = 1024 * 1024
REFUSAL_REASONS: Final = ("request_line", "headers", "body", "timeout")
_CR: Final = 13


@dataclass(frozen=True, slots=True)
class RequestLimits:
    line_bytes: int
    header_bytes: int
    body_bytes: int
    read_timeout_s: float
    header_count: int = MAX_HEADER_COUNT


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    reason: str  # the metric's label
    text: str

    def response(self, default_headers: list[tuple[bytes, bytes]]) -> bytes:
        body = self.text.encode() + b"\n"
        head = [STATUS_LINE[self.status]]
        head += [name + b": " + value + b"\r\n" for name, value in default_headers]
        head += [b"content-type: text/plain; charset=utf-8\r\n",
                 b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n"]
        return b"".join(head) + body


class HeadScan:
    """Where the raw bytes of one request head stand against the limits: bytes so far,
    bytes of the line in progress, lines done, and whether the blank line ended it."""

    __slots__ = ("done", "first", "head", "limits", "line", "lines")

    def __init__(self, limits: RequestLimits) -> None:
        self.limits = limits
        self.head = 0
        self.line = 0
        self.first = 0  # first byte of the line in progress (a lone CR is a blank line)
        self.lines = 0  # complete lines: the request line, then the headers
        self.done = False

    def feed(self, data: bytes, start: int = 0) -> tuple[Refusal | None, int]:
        """Account for ``data[start:]``, the next bytes of the connection: a refusal as soon
        as a limit is passed (before the parser is given any of them), and where the bytes
        of this head end in ``data`` (``len(data)`` while it goes on)."""
        limits = self.limits
        size = len(data)
        while not self.done and start < size:
            newline = data.find(b"\n", start)
            end = size if newline < 0 else newline + 1
            if self.line == 0:
                self.first = data[start]
            self.line += end - start
            self.head += end - start
            if self.line > limits.line_bytes:
                return (Refusal(414, "request_line", "request line too long") if self.lines == 0
                        else Refusal(431, "headers", "header line too long")), end
            if self.head > limits.header_bytes:
                return Refusal(431, "headers", "request headers too large"), end
            if newline >= 0:
                blank = self.line == 1 or (self.line == 2 and self.first == _CR)
                self.line = 0
                if blank and self.lines:
                    self.done = True
                elif not blank:
                    self.lines += 1
                    if self.lines - 1 > limits.header_count:
                        return Refusal(431, "headers", "too many request headers"), end
            start = end
        return None, start


BODY_TOO_LARGE: Final = Refusal(413, "body", "request body too large")
TIMED_OUT: Final = Refusal(408, "timeout", "request not received in time")
MALFORMED: Final = Refusal(400, "headers", "malformed request head")


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the module's limits (bound by ``limited_http``)."""

    limits: ClassVar[RequestLimits]
    refused: ClassVar[Counter]

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._scan: HeadScan | None = HeadScan(self.limits)  # None: past the head
        self._body_bytes = 0
        self._current: RequestResponseCycle | None = None  # this request's, once started
        self._refusal: Refusal | None = None
        self._deadline: TimerHandle | None = None
        self._linger: TimerHandle | None = None
        self._received = False  # any byte at all on this connection
        self._upgraded = False  # handed to the WebSocket protocol
        self._discarded = 0  # bytes read and thrown away since a refusal

    # --- connection -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:  # lingering: read and thrown away, up to a budget
            self._discarded += len(data)
            if self._discarded > LINGER_BYTES:
                self.transport.close()
            return
        self._received = True
        start = 0
        # Each head is scanned before the parser gets it; when one ends inside this read,
        # the parser gets it alone, and what follows is scanned again if it is the next
        # head (pipelined requests without a body). A body is the parser's to bound.
        while self._refusal is None and not self._upgraded and start < len(data):
            if self._scan is None:
                super().data_received(data[start:] if start else data)
                return
            refusal, end = self._scan.feed(data, start)
            if refusal is not None:
                self._refuse(refusal)
                return
            super().data_received(data[start:end] if start or end < len(data) else data)
            if self.transport.is_closing():
                return
            if self._scan is not None and self._scan.done:
                # The blank line came but the parser saw no end of the head: never feed
                # it more than the scan has bounded.
                self._refuse(MALFORMED)
                return
            start = end

    def handle_websocket_upgrade(self) -> None:
        if self._refusal is not None:
            return
        self._upgraded = True
        self._cancel_deadline()
        super().handle_websocket_upgrade()

    # --- parser callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._refusal is not None:
            return
        super().on_message_begin()
        self._body_bytes = 0
        self._current = None
        self._arm_deadline()

    def on_headers_complete(self) -> None:
        if self._refusal is not None:
            return
        self._scan = None
        length = next((value for name, value in self.headers if name == b"content-length"),
                      b"")
        if length.isdigit() and int(length) > self.limits.body_bytes:
            self._refuse(BODY_TOO_LARGE)
            return
        if self.parser.should_upgrade() and self._handshake_too_long():
            self._refuse(Refusal(431, "headers", "header line too long"))
            return
        super().on_headers_complete()
        self._current = self.cycle

    def on_body(self, body: bytes) -> None:
        if self._refusal is not None:
            return
        self._body_bytes += len(body)
        if self._body_bytes > self.limits.body_bytes:
            self._refuse(BODY_TOO_LARGE)
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refusal is not None:
            return
        self._cancel_deadline()
        self._scan = HeadScan(self.limits)  # the next request's head
        self._current = None
        super().on_message_complete()

    # --- refusing -------------------------------------------------------------------------

    def _handshake_too_long(self) -> bool:
        """An upgrade's head is handed on rebuilt as ``name: value`` lines, which can be a
        byte longer than the client's own; each must still fit the handshake parser."""
        limit = self.limits.line_bytes
        return any(len(name) + len(value) + 4 > limit for name, value in self.headers)

    def _refuse(self, refusal: Refusal) -> None:
        self._refusal = refusal
        self._scan = None
        self._cancel_deadline()
        self._unset_keepalive_if_required()
        self.refused.labels(refusal.reason).inc()
        log.info("refused a request from %s: %d %s", _peer(self.client), refusal.status,
                 refusal.text)
        # This request's own response may have begun (the app answered before reading the
        # body); an earlier pipelined one may still be on its way (responses go in order,
        # so that client only loses the connection). Otherwise the refusal is the answer.
        current, latest = self._current, self._latest()
        if current is not None:
            answer = not current.response_started
        else:
            answer = latest is None or latest.response_complete
        if answer:
            self.transport.write(refusal.response(self.server_state.default_headers))
        if latest is not None and not latest.response_complete:
            latest.disconnected = True  # the app's further sends go nowhere
            latest.keep_alive = False
            latest.message_event.set()
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._linger = self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()

    def _latest(self) -> RequestResponseCycle | None:
        """The connection's last request cycle (uvicorn types it as always set)."""
        cycle: RequestResponseCycle | None = self.cycle
        return cycle

    def _arm_deadline(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.limits.read_timeout_s, self._timed_out)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self._refusal is not None or self.transport.is_closing():
            return
        if not self._received:
            self.refused.labels(TIMED_OUT.reason).inc()
            self.transport.close()  # a connection that never said anything: no answer
            return
        self._refuse(TIMED_OUT)


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"


def limited_http(settings: GatewaySettings, refused: Counter) -> type[LimitedHttpProtocol]:
    """The protocol class for ``uvicorn.Config(http=…)``, bound to the settings' limits and
    to this counter (uvicorn builds one instance per connection from the class alone)."""

    class Bound(LimitedHttpProtocol):
        pass

    Bound.limits = RequestLimits(line_bytes=settings.max_request_line_bytes,
                                 header_bytes=settings.max_header_bytes,
                                 body_bytes=settings.max_body_bytes,
                                 read_timeout_s=settings.request_read_timeout_s)
    Bound.refused = refused
    return Bound
