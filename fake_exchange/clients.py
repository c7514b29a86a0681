"""One client connection of the fake exchange: its route, its subscriptions, what it did
(`ConnectionStats`) and its send queue.

A queue item is one message, or (from the trade market) the list of messages of one tick of
its loop, written to the socket at once."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from websockets.asyncio.server import ServerConnection

from fake_exchange.frames import MINI_TICKER, StreamSpec
from fake_exchange.routes import Route
from fake_exchange.subscriptions import ConnectionStats

# (a message, one tick's messages, or None: close (the rate limit); sent as text?)
QueueItem = tuple[bytes | list[bytes] | None, bool]


@dataclass(eq=False)
class Client:
    ws: ServerConnection
    route: Route
    queue: asyncio.Queue[QueueItem]
    stats: ConnectionStats
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
