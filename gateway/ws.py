"""The ``/ws`` endpoint: one browser gets the recent history, then every live alert once.

Messages (JSON text frames, server to client only):

- ``{"type":"history","alerts":[<alert>, ...]}`` once on connect, oldest first;
- ``{"type":"alert","alert":<alert>}`` per live alert.

The client is not expected to say anything. What it does send is read (that is how a
disconnect is noticed) and thrown away, within a rate limit so that a chatty or hostile
client cannot keep a task busy; the size of one message is capped by the server
(``ws_max_size``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Final

from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.aio import race
from gateway.hub import FLOOD, SERVER_FULL, Drop, Entry, Hub, Subscriber, history_message
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

# A close frame that cannot be written within this time goes to a peer that stopped
# reading; waiting longer only keeps the handler alive (the kernel drops such a
# connection after the listening socket's TCP_USER_TIMEOUT, see gateway.service).
CLOSE_TIMEOUT_S: Final = 1.0
CLIENT_MESSAGES_PER_S: Final = 5.0
CLIENT_MESSAGES_BURST: Final = 20.0


async def serve_client(websocket: WebSocket, hub: Hub, metrics: Metrics) -> None:
    # Accept before refusing so that the browser sees a close code and a reason (an HTTP
    # 403 on the handshake reaches JavaScript as an anonymous 1006).
    await websocket.accept()
    subscription = hub.subscribe()
    if subscription is None:
        await _close(websocket, SERVER_FULL)
        return
    subscriber, history = subscription
    try:
        await race(
            _send(websocket, subscriber, history, metrics),
            _receive(websocket, hub, subscriber),
            subscriber.dropped.wait(),
        )
    finally:
        hub.unsubscribe(subscriber)
    if subscriber.drop is not None:
        await _close(websocket, subscriber.drop)


async def _send(websocket: WebSocket, subscriber: Subscriber, history: Sequence[Entry],
                metrics: Metrics) -> None:
    # The hub snapshots the history and registers the queue atomically, so no queued alert
    # can also be in the history; checking anyway keeps "exactly once" from depending on it.
    in_history = {entry.id for entry in history}
    try:
        await websocket.send_text(history_message(history))
        while True:
            entry = await subscriber.queue.get()
            if entry.id in in_history:
                continue
            await websocket.send_text(entry.message)
            metrics.deliveries.inc()
    except WebSocketDisconnect:
        return


async def _receive(websocket: WebSocket, hub: Hub, subscriber: Subscriber) -> None:
    """Return when the client goes away; drop it if it talks faster than the limit."""
    allowance = CLIENT_MESSAGES_BURST
    last = time.monotonic()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        now = time.monotonic()
        allowance = min(CLIENT_MESSAGES_BURST, allowance + (now - last) * CLIENT_MESSAGES_PER_S)
        last = now
        if allowance < 1:
            hub.drop(subscriber, FLOOD)
            return
        allowance -= 1


async def _close(websocket: WebSocket, why: Drop) -> None:
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await websocket.close(why.code, why.message)
    except TimeoutError:
        log.debug("close frame not taken within %.1fs; leaving the socket to the kernel",
                  CLOSE_TIMEOUT_S)
    except WebSocketDisconnect:
        pass
