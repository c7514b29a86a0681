"""The ``/ws`` endpoint: one browser gets the recent history, then every live alert once.

Messages (JSON text frames, server to client only):

- ``{"type":"history","alerts":[<alert>, ...]}`` once on connect, oldest first; with
  ``?since=<alert id>`` it holds every alert after that one and ``"resumed":true``;
- ``{"type":"rules","rules":[<rule>, ...]}`` after the history and on every rule change;
- ``{"type":"health","health":{"level":...,"summary":...,"reasons":[...],...}}`` after the
  rules and whenever the pipeline's health changes (``gateway.health_monitor``);
- ``{"type":"alert","alert":<alert>}`` for a live alert, or
  ``{"type":"alerts","alerts":[<alert>, ...]}`` (oldest first) for several that arrived
  together;
- ``{"type":"ping","t":<ms>}`` after ``WS_HEARTBEAT_S`` of silence (at most a quarter
  more), so that a browser can tell a quiet market from a dead connection (it cannot see
  protocol pings);
- ``{"type":"error","code":...,"message":...}`` before closing with 4400 (malformed
  ``since``) or 4404 (``since`` no longer in memory: reconnect without it).

Everything after the handshake is written by the hub, straight to the connection
(``gateway.wire``); this handler only admits the client, listens to it and closes it.

The client is not expected to say anything. What it does send is read (that is how a
disconnect is noticed) and thrown away, within a rate limit so that a chatty or hostile
client cannot keep a task busy; the size of one message is capped by the server
(``ws_max_size``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import msgspec
from starlette.websockets import WebSocket, WebSocketDisconnect

from common.aio import race
from common.schemas import is_alert_id
from gateway.hub import (
    FLOOD,
    SERVER_FULL,
    Drop,
    Hub,
    Subscriber,
    UnknownAlert,
)
from gateway.metrics import Metrics
from gateway.origins import OriginPolicy
from gateway.rules import RulesFollower
from gateway.wire import wire_of

log = logging.getLogger(__name__)

# A close frame that cannot be written within this time goes to a peer that stopped
# reading; waiting longer only keeps the handler alive (the kernel drops such a
# connection after the listening socket's TCP_USER_TIMEOUT, see gateway.service).
CLOSE_TIMEOUT_S: Final = 1.0
CLIENT_MESSAGES_PER_S: Final = 5.0
CLIENT_MESSAGES_BURST: Final = 20.0
BAD_SINCE: Final = Drop("bad_since", 4400, "malformed since")
UNKNOWN_SINCE: Final = Drop("unknown_since", 4404, "unknown since")
NO_WIRE: Final = Drop("no_wire", 1011, "server misconfigured")
_json: Final = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class SocketPolicy:
    origins: OriginPolicy


def origin_allowed(websocket: WebSocket, origins: OriginPolicy) -> bool:
    """Cross-site WebSocket hijacking defence (``gateway.origins``): only the page's own
    origins and the configured ones may open the feed; never merely ``Origin == Host``."""
    server = websocket.scope.get("server")
    return origins.allows(websocket.headers.get("origin"),
                          (str(server[0]), int(server[1])) if server else None)


async def serve_client(websocket: WebSocket, hub: Hub, metrics: Metrics, rules: RulesFollower,
                       policy: SocketPolicy, health: Callable[[], str]) -> None:
    if not origin_allowed(websocket, policy.origins):
        metrics.clients_dropped.labels("origin").inc()
        log.info("refused a WebSocket from origin %r", websocket.headers.get("origin"))
        await websocket.close(1008)  # before accept: the handshake gets HTTP 403
        return
    # Accept before refusing so that the browser sees a close code and a reason (an HTTP
    # 403 on the handshake reaches JavaScript as an anonymous 1006).
    await websocket.accept()
    wire = wire_of(websocket)
    if wire is None:
        log.error("the server does not run gateway.wire.FanoutProtocol: no live alerts")
        await _close(websocket, NO_WIRE)
        return
    since = websocket.query_params.get("since")
    if since is not None and not is_alert_id(since):
        await _refuse(websocket, metrics, BAD_SINCE, "since must be an alert id "
                      "(SYMBOL:WINDOW_S:EVENT_TIME_MS)")
        return
    if not hub.primed.is_set() and not await _wait_for_history(websocket, hub, metrics):
        return
    try:
        subscription = hub.subscribe(wire, since, then=(rules.message(), health()))
    except UnknownAlert:
        await _refuse(websocket, metrics, UNKNOWN_SINCE, "this gateway no longer holds that "
                      "alert; reconnect without since to receive the recent history")
        return
    if subscription is None:
        await _close(websocket, SERVER_FULL)
        return
    subscriber, _ = subscription
    try:
        await race(_receive(websocket, hub, subscriber), subscriber.dropped.wait())
    finally:
        hub.unsubscribe(subscriber)
    if subscriber.drop is not None:
        await _close(websocket, subscriber.drop)


async def _wait_for_history(websocket: WebSocket, hub: Hub, metrics: Metrics) -> bool:
    """Wait until the startup backlog is loaded (before that a client would get an empty
    history, then the backlog as live alerts), holding a place of ``MAX_CLIENTS`` and
    listening, so that a client that leaves meanwhile gives its place back at once.

    False when the client was refused, left or flooded: its handler is done.
    """
    if not hub.hold():
        await _close(websocket, SERVER_FULL)
        return False
    heard: list[Drop | None] = []

    async def listen() -> None:
        heard.append(await _listen(websocket))

    try:
        await race(hub.primed.wait(), listen())
    finally:
        hub.release()
    if not heard:
        return True
    if heard[0] is not None:
        metrics.clients_dropped.labels(heard[0].reason).inc()
        await _close(websocket, heard[0])
    return False


async def _receive(websocket: WebSocket, hub: Hub, subscriber: Subscriber) -> None:
    """Return when the client goes away; drop it if it talks faster than the limit."""
    why = await _listen(websocket)
    if why is not None:
        hub.drop(subscriber, why)


async def _listen(websocket: WebSocket) -> Drop | None:
    """Read and discard what the client sends until it goes away (``None``), or until it
    talks faster than the limit (``FLOOD``)."""
    allowance = CLIENT_MESSAGES_BURST
    last = time.monotonic()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return None
        now = time.monotonic()
        allowance = min(CLIENT_MESSAGES_BURST, allowance + (now - last) * CLIENT_MESSAGES_PER_S)
        last = now
        if allowance < 1:
            return FLOOD
        allowance -= 1


async def _refuse(websocket: WebSocket, metrics: Metrics, why: Drop, explanation: str) -> None:
    metrics.clients_dropped.labels(why.reason).inc()
    error = {"type": "error", "code": why.reason, "message": explanation}
    try:
        await websocket.send_text(_json.encode(error).decode())
    except WebSocketDisconnect:
        return
    await _close(websocket, why)


async def _close(websocket: WebSocket, why: Drop) -> None:
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await websocket.close(why.code, why.message)
    except TimeoutError:
        log.debug("close frame not taken within %.1fs; leaving the socket to the kernel",
                  CLOSE_TIMEOUT_S)
    except WebSocketDisconnect:
        pass
