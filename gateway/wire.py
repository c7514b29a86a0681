"""WebSocket connections the hub writes to directly: uvicorn's protocol with a side door.

Through ASGI, every message to every client costs a task wake-up and an ``await send``
(starlette, then uvicorn's protocol, which frames the text again for each client). For a
fan-out that is the whole cost. ``FanoutProtocol`` is uvicorn's own WebSocket protocol
(the sans-I/O one, on the ``websockets`` library) that also hands the app, in the scope's
extensions, a ``Wire``: a synchronous "write this complete frame now, unless this connection is
already too far behind". The hub encodes a message once, as a server frame, and writes
the same bytes to every client's transport from its reader (the pattern of
``websockets.broadcast``); the ASGI path stays for the handshake and the close.

Interleaving is safe: the sans-I/O protocol keeps no state about the data frames it sends
(they are never fragmented), and each frame goes to the transport in one ``write``. A wire
refuses to write once a close frame is queued or the connection is going, so a client that
leaves mid-fan-out costs a few attribute checks, never an exception in the reader.
"""

from __future__ import annotations

import logging
import struct
from typing import Any, Final

from starlette.websockets import WebSocket
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

log = logging.getLogger(__name__)

FANOUT_EXTENSION: Final = "binance_alerter.fanout"
_TEXT_FIN: Final = 0x81


def text_frame(payload: bytes) -> bytes:
    """A complete, final, unmasked text frame (RFC 6455 §5.2), as a server sends it."""
    size = len(payload)
    if size < 126:
        return bytes((_TEXT_FIN, size)) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", _TEXT_FIN, 126, size) + payload
    return struct.pack("!BBQ", _TEXT_FIN, 127, size) + payload


# What ``Wire.offer`` did with a frame.
WRITTEN: Final = 0
BEHIND: Final = 1  # not written: more than the limit is still unsent
GONE: Final = 2  # not written: the connection is closing or closed


class Wire:
    """The write side of one client connection, for frames encoded once for everybody."""

    __slots__ = ("_protocol", "_transport")

    def __init__(self, protocol: WebSocketsSansIOProtocol) -> None:
        self._protocol = protocol
        self._transport = protocol.transport

    def offer(self, frame: bytes, max_buffered: int) -> int:
        """Queue ``frame`` on the connection now, unless the connection is going
        (``GONE``) or already holds more than ``max_buffered`` bytes unsent (``BEHIND``).

        One call per client per fan-out, so the checks are plain attributes: every way a
        close frame gets queued (the app's close, a keepalive timeout, a parse error, the
        peer's close, the server's shutdown) sets ``close_sent`` or closes the transport.
        """
        protocol = self._protocol
        transport = self._transport
        if protocol.close_sent or protocol.disconnected or transport.is_closing():
            return GONE
        if transport.get_write_buffer_size() > max_buffered:
            return BEHIND
        try:
            transport.write(frame)
        except (OSError, RuntimeError) as exc:  # a transport torn down under us
            log.debug("write to a closing connection: %r", exc)
            return GONE
        return WRITTEN


class FanoutProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, plus a ``Wire`` in the scope's extensions
    (``server_config`` passes it to uvicorn as ``ws=``)."""

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if self.handshake_complete:  # refused by the handshake: no app, no scope
            return
        extensions: dict[str, Any] = self.scope.setdefault("extensions", {}) or {}
        extensions[FANOUT_EXTENSION] = {"wire": Wire(self)}


def wire_of(websocket: WebSocket) -> Wire | None:
    """The connection's wire, or ``None`` under a server without ``FanoutProtocol``."""
    extension = (websocket.scope.get("extensions") or {}).get(FANOUT_EXTENSION)
    wire = extension.get("wire") if isinstance(extension, dict) else None
    return wire if isinstance(wire, Wire) else None
