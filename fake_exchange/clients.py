"""One client connection of the fake exchange: its route, its subscriptions, its send queue,
and the live-subscription protocol (SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS) answered as
the exchange answers it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import msgspec
from websockets.asyncio.server import ServerConnection

from fake_exchange.frames import MINI_TICKER, StreamSpec, parse_stream
from fake_exchange.routes import Route


@dataclass(eq=False)
class Client:
    ws: ServerConnection
    route: Route
    queue: asyncio.Queue[tuple[bytes, bool]]
    subs: dict[str, StreamSpec | None] = field(default_factory=dict)
    closing: bool = False
    writer: asyncio.Task[None] | None = None

    @property
    def streaming(self) -> bool:
        return self.route.market and not self.closing and any(self.subs.values())

    def data_stream(self) -> tuple[str, StreamSpec]:
        """The stream a fault imitates: the client's first data stream, else the board's."""
        return next(((s, spec) for s, spec in self.subs.items() if spec is not None),
                    ("!miniTicker@arr", StreamSpec(MINI_TICKER)))


def subscription_reply(client: Client, message: str | bytes) -> bytes:
    """Apply one client request to its subscriptions and return the exchange's answer."""
    try:
        req = msgspec.json.decode(message)
        method, params, rid = req["method"], req.get("params", []), req.get("id")
    except (msgspec.DecodeError, KeyError, TypeError, AttributeError):
        reply: dict[str, Any] = {"error": {"code": 3, "msg": "Invalid JSON"}, "id": None}
    else:
        if method == "SUBSCRIBE" and isinstance(params, list):
            client.subs.update({str(s): parse_stream(str(s)) for s in params})
            reply = {"result": None, "id": rid}
        elif method == "UNSUBSCRIBE" and isinstance(params, list):
            for s in params:
                client.subs.pop(str(s), None)
            reply = {"result": None, "id": rid}
        elif method == "LIST_SUBSCRIPTIONS":
            reply = {"result": list(client.subs), "id": rid}
        else:
            reply = {"error": {"code": 2, "msg": "Invalid request"}, "id": rid}
    return msgspec.json.encode(reply)
