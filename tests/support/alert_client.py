"""A browser stand-in for the end-to-end tests: a /ws client that keeps reconnecting."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.client import connect

from tests.support.gateway import live_alerts


@dataclass
class AlertClient:
    """A browser stand-in: keeps reconnecting, records every alert message it gets."""

    url: str
    live: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while True:
            try:
                async with connect(self.url, open_timeout=2) as ws:
                    self.connections += 1
                    async for raw in ws:
                        message = json.loads(raw)
                        if message["type"] == "history":
                            self.history.extend(message["alerts"])
                            self.connected.set()
                        else:
                            now_ms = time.time() * 1000
                            self.live.extend((now_ms, a) for a in live_alerts(message))
            except (OSError, websockets.WebSocketException, TimeoutError):
                self.connected.clear()
                await asyncio.sleep(0.2)

    def ids(self) -> set[str]:
        return {a["id"] for a in self.history} | {a["id"] for _, a in self.live}

    def live_ids(self) -> list[str]:
        return [a["id"] for _, a in self.live]


@contextlib.asynccontextmanager
async def alert_client(url: str) -> AsyncIterator[AlertClient]:
    client = AlertClient(url)
    task = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(client.connected.wait(), 15)
        yield client
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
