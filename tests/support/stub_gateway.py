"""A scripted stand-in for the gateway: serves ``frontend/`` and speaks the ``/ws`` protocol.

The page's protocol corners (an unknown or malformed ``since``, a connection that goes
silent, a rules update) are hard to provoke on cue in the real gateway; this server does
exactly what a test tells it, and records what the page asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.page import PageFiles

FRONTEND_DIR: Final = Path(__file__).resolve().parents[2] / "frontend"
ID_PATTERN: Final = re.compile(r"^[A-Z0-9_]+:\d+:\d+$")
DEFAULT_RULES: Final = [{"window_s": 60, "threshold_up_pct": 2.0, "threshold_down_pct": 2.0,
                         "cooldown_s": 60}]

SinceMode = Literal["resume", "unknown", "bad"]


@dataclass
class StubGateway:
    port: int = 0
    # Replaced in index.html before it is served: e.g. a 1.5 s heartbeat deadline.
    table_attributes: dict[str, str] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=lambda: list(DEFAULT_RULES))
    history_size: int = 50
    since_mode: SinceMode = "resume"
    # True: accept connections and then send nothing at all (a dead peer behind a proxy).
    silent: bool = False
    urls: list[str] = field(default_factory=list)
    sockets: set[WebSocket] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def index(self) -> str:
        html = (FRONTEND_DIR / "index.html").read_text()
        for name, value in self.table_attributes.items():
            html, count = re.subn(rf'{name}="[^"]*"', f'{name}="{value}"', html)
            assert count == 1, f"index.html has no single {name} attribute"
        return html

    async def push(self, alert: dict[str, Any]) -> None:
        """A live alert: kept for later histories and sent to every open connection."""
        self.alerts.append(alert)
        await self.broadcast({"type": "alert", "alert": alert})

    async def set_rules(self, rules: list[dict[str, Any]]) -> None:
        self.rules = rules
        await self.broadcast({"type": "rules", "rules": rules})

    async def ping(self) -> None:
        await self.broadcast({"type": "ping", "t": 0})

    async def broadcast(self, message: dict[str, Any]) -> None:
        text = json.dumps(message)
        for ws in list(self.sockets):
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await ws.send_text(text)

    async def close_all(self, code: int = 1012, reason: str = "") -> None:
        for ws in list(self.sockets):
            self.sockets.discard(ws)
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await ws.close(code, reason)

    # -- the endpoints -------------------------------------------------------------------------

    async def _page(self, _: Request) -> Response:
        return HTMLResponse(self.index())

    async def _rules(self, _: Request) -> Response:
        return JSONResponse({"rules": self.rules})

    async def _ws(self, ws: WebSocket) -> None:
        await ws.accept()
        self.urls.append(str(ws.url))
        since = ws.query_params.get("since")
        history: list[dict[str, Any]]
        resumed = since is not None
        if since is None:
            history = self.alerts[-self.history_size:] if self.history_size else []
        elif self.since_mode == "bad" or not ID_PATTERN.match(since):
            await self._refuse(ws, "bad_since", 4400)
            return
        else:
            known = [a["id"] for a in self.alerts]
            if self.since_mode == "unknown" or since not in known:
                await self._refuse(ws, "unknown_since", 4404)
                return
            history = self.alerts[known.index(since) + 1:]
        self.sockets.add(ws)
        try:
            if not self.silent:
                message: dict[str, Any] = {"type": "history", "alerts": history}
                if resumed:
                    message["resumed"] = True
                await ws.send_text(json.dumps(message))
                await ws.send_text(json.dumps({"type": "rules", "rules": self.rules}))
            while True:
                received = await ws.receive()
                if received["type"] == "websocket.disconnect":
                    return
        except WebSocketDisconnect:
            return
        finally:
            self.sockets.discard(ws)

    async def _refuse(self, ws: WebSocket, code: str, close_code: int) -> None:
        await ws.send_text(json.dumps({"type": "error", "code": code,
                                       "message": f"stub refuses this since ({code})"}))
        await ws.close(close_code, code)

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/", self._page),
            Route("/index.html", self._page),
            Route("/api/rules", self._rules),
            WebSocketRoute("/ws", self._ws),
            Mount("/", PageFiles(directory=FRONTEND_DIR)),
        ])


class _Server(uvicorn.Server):
    """uvicorn without signal handlers: the test's event loop is not ours to take over."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def running_stub(**options: Any) -> AsyncIterator[StubGateway]:
    stub = StubGateway(**options)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    stub.port = int(sock.getsockname()[1])
    server = _Server(uvicorn.Config(stub.app(), log_config=None, lifespan="off",
                                           ws_per_message_deflate=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield stub
    finally:
        server.should_exit = True
        await stub.close_all(1001)
        try:
            await asyncio.wait_for(task, 10)
        finally:
            sock.close()
