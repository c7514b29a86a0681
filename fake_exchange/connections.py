"""Writing to a market connection: one message, or one tick's messages in one socket write.

`websockets` writes each frame with its own `transport.write`, which is one `send()` system
call per frame when the socket keeps up: at 20,000 trades a second that call is most of the
fake's CPU. A tick's frames are therefore queued on the protocol and written joined.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from websockets.protocol import State

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

logger = logging.getLogger(__name__)


async def send_batch(ws: ServerConnection, batch: list[bytes]) -> None:
    """Send every message of `batch` as its own text frame, in one write; raises
    ConnectionClosed like `send` when the connection is not open."""
    if not batch:
        return
    if ws.protocol.state is not State.OPEN:
        await ws.send(batch[0], text=True)  # raises the connection's ConnectionClosed
        return
    for message in batch:
        ws.protocol.send_text(message)
    chunks = ws.protocol.data_to_send()
    data = b"".join(chunks)
    if data:
        ws.transport.write(data)
    if any(not chunk for chunk in chunks) and ws.transport.can_write_eof():
        ws.transport.write_eof()  # the protocol asked to half-close (it is closing)
    await ws.drain()
