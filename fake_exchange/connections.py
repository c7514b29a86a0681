"""Writing to a connection: its queue in order, one tick's messages in one socket write, and
the close that the exchange's message-rate limit calls for.

`websockets` writes each frame with its own `transport.write`, which is one `send()` system
call per frame when the socket keeps up: at 20,000 trades a second that call is most of the
fake's CPU. A tick's frames are therefore queued on the protocol and written joined.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from fake_exchange.subscriptions import MAX_MESSAGES_PER_S

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from websockets.asyncio.server import ServerConnection

    from fake_exchange.clients import Client

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


async def write_loop(client: Client, resumed: Callable[[], Awaitable[None]]) -> None:
    """Send a client's queue in order until the connection ends; `resumed` returns once the
    exchange is not stalled. A None item closes the connection (after what came before)."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            data, text = await client.queue.get()
            await resumed()
            if data is None:
                await client.ws.close(1008, "Too many messages")
                return
            if isinstance(data, list):
                await send_batch(client.ws, data)
                client.stats.messages_out += len(data)
            else:
                await client.ws.send(data, text=text)
                client.stats.messages_out += 1


async def close_for_rate(client: Client) -> None:
    """The exchange's answer to an 11th message within a second: what was answered before
    goes out, then the connection closes (1008)."""
    logger.warning("closing connection %d: over %d messages in a second",
                   client.stats.id, MAX_MESSAGES_PER_S)
    client.stats.closed_for = "too many messages"
    client.closing = True
    try:
        client.queue.put_nowait((None, False))  # the writer closes after the rest
    except asyncio.QueueFull:
        client.ws.transport.abort()
    assert client.writer is not None
    await asyncio.wait([client.writer], timeout=3)
