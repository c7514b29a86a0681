"""The WebSocket client of the exchange connections, a part chosen by name (``WS_CLIENT``).

The feed needs little of a client: open a URL, send a text now and then (SUBSCRIBE…), have
every message handed to a callback synchronously, ping on its own, close with a handshake,
and say why a connection ended. ``ingestor.feed`` holds the watchdog, the backoff and the
rotation; a client holds only the socket. Two are registered:

- ``picows`` (the default): a Cython client whose frame parser and per-message overhead
  are a fraction of a microsecond, which is what a trade-level feed of tens of thousands
  of one-trade messages a second needs (``bench.trades``). A text message reaches the
  callback as the frame's bytes, undecoded: the parser decodes the JSON from them directly.
- ``websockets``: the pure-Python sans-I/O client, some 15 µs per message; kept as the
  reference and as a fallback. A text message reaches the callback as ``str``.

Both bound a message at ``Options.max_size`` (the connection is closed with 1009 past it),
answer the server's pings, ping themselves, and skip compression (inflating ~100 KB/s of
JSON would cost more CPU than the bandwidth it saves).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol

import picows
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as websockets_connect
from websockets.exceptions import ConnectionClosed as WebsocketsClosed
from websockets.exceptions import WebSocketException

log = logging.getLogger(__name__)

# A message as the client hands it on, and whether it came as a binary message (which the
# exchange never sends: the feed counts it as malformed).
OnMessage = Callable[[bytes | str, bool], None]


class ConnectFailed(Exception):
    """The connection could not be opened (refused, handshake failed, timed out)."""


class ConnectionClosed(Exception):
    """A send on a connection that is closing or closed."""


@dataclass(frozen=True)
class Options:
    max_size: int  # bytes of one message, fragments included
    ping_interval_s: float
    ping_timeout_s: float
    close_timeout_s: float
    open_timeout_s: float = 10.0


class Connection(Protocol):
    async def send(self, text: str) -> None:
        """Raises ``ConnectionClosed`` once the connection is closing."""

    async def close(self) -> None:
        """The close handshake, at most ``close_timeout_s``, then the socket is dropped.
        Never raises for the connection's state; safe to call twice."""

    async def closed(self) -> str:
        """Delivers messages to the callback until the connection ends (a client may
        deliver only while this is awaited) and returns why it ended; raises what the
        callback raised."""


Connect = Callable[[str, OnMessage, Options], Awaitable[Connection]]


class _WebsocketsConnection:
    def __init__(self, ws: ClientConnection, on_message: OnMessage) -> None:
        self._ws = ws
        self._on_message = on_message

    async def send(self, text: str) -> None:
        try:
            await self._ws.send(text)
        except WebsocketsClosed as exc:
            raise ConnectionClosed(str(exc)) from exc

    async def close(self) -> None:
        with contextlib.suppress(OSError, WebSocketException):
            await self._ws.close()

    async def closed(self) -> str:
        on_message = self._on_message
        try:
            async for message in self._ws:
                on_message(message, isinstance(message, bytes))
        except WebsocketsClosed as exc:
            return str(exc)
        error = self._ws.protocol.close_exc
        return "end of stream" if error is None else str(error)


async def _connect_websockets(url: str, on_message: OnMessage,
                              options: Options) -> Connection:
    try:
        ws = await websockets_connect(url, max_size=options.max_size,
                                      ping_interval=options.ping_interval_s,
                                      ping_timeout=options.ping_timeout_s,
                                      close_timeout=options.close_timeout_s,
                                      open_timeout=options.open_timeout_s,
                                      compression=None)
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise ConnectFailed(repr(exc)) from exc
    return _WebsocketsConnection(ws, on_message)


_TEXT: Final = picows.WSMsgType.TEXT
_BINARY: Final = picows.WSMsgType.BINARY
_CONTINUATION: Final = picows.WSMsgType.CONTINUATION
_CLOSE: Final = picows.WSMsgType.CLOSE


class _PicowsListener(picows.WSListener):
    """Frames → messages: a whole text frame (the exchange's every message) goes to the
    callback as is; fragments are joined, up to ``max_size``."""

    def __init__(self, on_message: OnMessage, max_size: int) -> None:
        super().__init__()
        self._on_message = on_message
        self._max_size = max_size
        self._fragments: list[bytes] = []
        self._fragmented_binary = False
        self._fragments_size = 0
        self.failure: str | None = None  # a close of ours for the peer's fault, why

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        msg_type = frame.msg_type
        # Once a close frame is sent (by us, or by picows on a protocol error such as a
        # frame over max_frame_size, which it still hands on), only the peer's close
        # frame is read.
        closing = transport.is_close_frame_sent
        if msg_type is _TEXT and frame.fin and not self._fragments and not closing:
            self._on_message(frame.get_payload_as_bytes(), False)
        elif msg_type is _CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif closing:
            return
        elif msg_type is _TEXT or msg_type is _BINARY or msg_type is _CONTINUATION:
            self._fragment(transport, frame, msg_type)
        # PING is answered by picows itself; a PONG needs nothing more.

    def _fragment(self, transport: picows.WSTransport, frame: picows.WSFrame,
                  msg_type: picows.WSMsgType) -> None:
        starts = msg_type is not _CONTINUATION
        if starts == bool(self._fragments):  # a new message inside one, or a stray tail
            self._fail(transport, picows.WSCloseCode.PROTOCOL_ERROR,
                       "continuation frame out of sequence")
            return
        if starts:
            self._fragmented_binary = msg_type is _BINARY
        self._fragments_size += frame.payload_size
        if self._fragments_size > self._max_size:
            self._fail(transport, picows.WSCloseCode.MESSAGE_TOO_BIG,
                       f"message over {self._max_size} bytes")
            return
        self._fragments.append(frame.get_payload_as_bytes())
        if frame.fin:
            message = b"".join(self._fragments)
            self._fragments.clear()
            self._fragments_size = 0
            self._on_message(message, self._fragmented_binary)

    def _fail(self, transport: picows.WSTransport, code: picows.WSCloseCode,
              reason: str) -> None:
        self.failure = f"sent {code.value} ({reason})"
        self._fragments.clear()
        self._fragments_size = 0
        transport.send_close(code, reason.encode())
        transport.disconnect()


class _PicowsConnection:
    def __init__(self, transport: picows.WSTransport, listener: _PicowsListener,
                 options: Options) -> None:
        self._transport = transport
        self._listener = listener
        self._close_timeout_s = options.close_timeout_s

    async def send(self, text: str) -> None:
        transport = self._transport
        if transport.is_close_frame_sent or transport.is_disconnected:
            raise ConnectionClosed("the connection is closing")
        transport.send(_TEXT, text.encode())

    async def close(self) -> None:
        transport = self._transport
        if not transport.is_disconnected:
            transport.send_close(picows.WSCloseCode.OK)
            # The server answers with its close frame and drops the TCP connection; the
            # listener drops it on its side when that frame comes.
            # (What ended the connection, a callback's exception included, is closed()'s
            # to report, not this.)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._close_timeout_s):
                    await transport.wait_disconnected()
            transport.disconnect(graceful=False)
        with contextlib.suppress(Exception):
            await transport.wait_disconnected()

    async def closed(self) -> str:
        transport = self._transport
        try:
            await transport.wait_disconnected()
        except picows.WSProtocolError as exc:  # the peer broke the protocol
            code, reason = exc.args
            return f"sent {code.value} ({reason})"
        if self._listener.failure is not None:
            return self._listener.failure
        handshake = transport.close_handshake
        if handshake is None or handshake.recv is None:
            return "no close frame received"
        received = handshake.recv
        return f"received {received.code.value} ({received.reason or 'no reason'})"


async def _connect_picows(url: str, on_message: OnMessage, options: Options) -> Connection:
    try:
        # A timeout in this task, not wait_for's task of its own: with that one, a
        # reconnected feed's task was seen to lose the cancellation of its stop (picows 2.3).
        async with asyncio.timeout(options.open_timeout_s):
            transport, listener = await picows.ws_connect(
                lambda: _PicowsListener(on_message, options.max_size), url,
                websocket_handshake_timeout=options.open_timeout_s,
                enable_auto_ping=True, auto_ping_idle_timeout=options.ping_interval_s,
                auto_ping_reply_timeout=options.ping_timeout_s,
                max_frame_size=options.max_size, logger_name="ingestor")
    except (OSError, TimeoutError, picows.WSError) as exc:
        raise ConnectFailed(repr(exc)) from exc
    assert isinstance(listener, _PicowsListener)
    return _PicowsConnection(transport, listener, options)


CLIENTS: Final[dict[str, Connect]] = {
    "picows": _connect_picows,
    "websockets": _connect_websockets,
}
