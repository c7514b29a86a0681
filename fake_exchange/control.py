"""Plain-HTTP fault injection for a fake exchange running in another process.

It lives in the WebSocket server's `process_request` hook, so a test or benchmark driving a
subprocess needs nothing but an HTTP GET on the same port.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs

import msgspec

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection
    from websockets.http11 import Response

logger = logging.getLogger(__name__)

ACTIONS = ("stats", "drop", "stall", "resume", "malformed", "ping")


class Controllable(Protocol):
    """The faults an exchange takes on command (``FakeExchange`` is one)."""

    async def drop(self) -> None: ...
    def stall(self, seconds: float | None = None) -> None: ...
    def resume(self) -> None: ...
    async def send_malformed(self, kind: str) -> None: ...
    async def ping(self, wait_s: float = 5.0) -> None: ...
    def stats(self) -> dict[str, Any]: ...


class BadRequest(ValueError):
    """A control parameter is missing or invalid (HTTP 400)."""


def _json(conn: ServerConnection, status: int, body: dict[str, Any]) -> Response:
    response = conn.respond(status, msgspec.json.encode(body).decode() + "\n")
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response


def _seconds(params: dict[str, list[str]]) -> float | None:
    raw = params.get("seconds", [None])[0]
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        raise BadRequest(f"seconds must be a number, got {raw!r}") from None
    if not (seconds >= 0 and math.isfinite(seconds)):
        raise BadRequest(f"seconds must be a finite number >= 0, got {raw!r}")
    return seconds


async def handle(fx: Controllable, conn: ServerConnection, path: str, query: str) -> Response:
    """Answer one `/control/<action>` request; the body always carries the stats after it."""
    action = path.removeprefix("/control/").rstrip("/")
    params = parse_qs(query)
    if action not in ACTIONS:
        return _json(conn, 404, {"error": f"unknown control {action!r}", "known": list(ACTIONS)})
    try:
        if action == "drop":
            await fx.drop()
        elif action == "stall":
            fx.stall(_seconds(params))
        elif action == "resume":
            fx.resume()
        elif action == "malformed":
            kind = params.get("kind", [""])[0]
            if not kind:
                raise BadRequest("missing parameter kind")
            await fx.send_malformed(kind)
        elif action == "ping":
            await fx.ping()
    except ValueError as exc:
        return _json(conn, 400, {"error": str(exc)})
    logger.info("control %s %s", action, query)
    return _json(conn, 200, {"ok": True, "action": action, **fx.stats()})
