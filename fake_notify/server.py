"""The one HTTP server every fake API is mounted on, and what it records.

Each API module (``fake_notify.telegram`` …) contributes Starlette routes and answers in
its API's format; this module gives them the common parts: every request is recorded
(arrival time, path, headers, body) before it is answered, scripted faults are taken in
order (an answer to give instead, or a delay before answering), and ``Windows`` tells
whether a request breaks a documented limit. A request over a limit is answered 429 as the
real API would and recorded in ``violations``, so a test asserts both "nothing was over
budget" and "every alert arrived".

In process: ``async with running_fake() as fake`` on a free port. As a process (for the
benchmarks): ``python -m fake_notify --port P``; ``GET /_fake/received`` lists what arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

Handler = Callable[["FakeApis", "Received"], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Received:
    """One request as it arrived. ``api``: the fake that took it (``telegram`` …); ``key``:
    what its limits count by (a chat, a webhook)."""

    api: str
    key: str
    arrived_at: float  # time.monotonic()
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0  # what the fake answered (set once answered)

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


@dataclass(slots=True)
class Fault:
    """Instead of the API's answer: ``response`` (None: answer normally) after ``delay_s``."""

    response: Response | None = None
    delay_s: float = 0.0


class Windows:
    """Sliding-window limits per key: ``allow(key, now)`` is False when one more request
    would exceed ``count`` in ``period_s`` for any of the limits."""

    def __init__(self, limits: Sequence[tuple[int, float]]) -> None:
        self._limits = list(limits)
        self._times: dict[str, deque[float]] = defaultdict(deque)

    def allow(self, key: str, now: float) -> bool:
        times = self._times[key]
        longest = max((period for _, period in self._limits), default=0.0)
        while times and now - times[0] >= longest:
            times.popleft()
        for count, period in self._limits:
            if sum(1 for t in times if now - t < period) >= count:
                return False
        times.append(now)
        return True

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until one more request fits."""
        times = self._times[key]
        waits = [0.0]
        for count, period in self._limits:
            inside = [t for t in times if now - t < period]
            if len(inside) >= count:
                waits.append(inside[-count] + period - now)
        return max(waits)

    def remaining(self, key: str, now: float) -> int:
        """How many more requests fit now (the tightest of the limits)."""
        times = self._times[key]
        return max(0, min((count - sum(1 for t in times if now - t < period)
                           for count, period in self._limits), default=0))

    def reset_after(self, key: str, now: float) -> float:
        """Seconds until no request made so far counts against any limit any more."""
        times = self._times[key]
        return max((t + period - now for t in times for _, period in self._limits
                    if now - t < period), default=0.0)


@dataclass
class FakeApis:
    """The fakes' shared state: what arrived, faults to play, limits broken."""

    received: list[Received] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    faults: dict[str, deque[Fault]] = field(default_factory=lambda: defaultdict(deque))
    # Each API's own settings and counters (known tokens, webhooks, its Windows), by API
    # name; the API module owns its entry and gives tests a typed accessor.
    state: dict[str, Any] = field(default_factory=dict)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def of(self, api: str) -> list[Received]:
        return [r for r in self.received if r.api == api]

    def script(self, api: str, *faults: Fault) -> None:
        """The next requests to ``api`` get these answers, in order, then normal ones."""
        self.faults[api].extend(faults)

    def fail(self, api: str, status: int, body: Any = None, *, times: int = 1,
             headers: dict[str, str] | None = None) -> None:
        for _ in range(times):
            response = (Response(status_code=status, headers=headers) if body is None
                        else JSONResponse(body, status_code=status, headers=headers))
            self.script(api, Fault(response))

    def slow(self, api: str, delay_s: float, *, times: int = 1) -> None:
        for _ in range(times):
            self.script(api, Fault(None, delay_s))

    async def take(self, api: str, key: str, request: Request, handler: Handler) -> Response:
        """Record ``request``, then play the next fault or call ``handler``."""
        received = Received(api, key, time.monotonic(), request.method, request.url.path,
                            dict(request.headers), await request.body())
        index = len(self.received)
        self.received.append(received)
        queued = self.faults.get(api)
        fault = queued.popleft() if queued else None
        if fault is not None and fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        response = (fault.response if fault is not None and fault.response is not None
                    else await handler(self, received))
        self.received[index] = _answered(received, response.status_code)
        return response

    def over_limit(self, what: str) -> None:
        self.violations.append(what)

    async def listing(self, request: Request) -> Response:
        rows = [{"api": r.api, "key": r.key, "at": r.arrived_at, "status": r.status,
                 "path": r.path, "bytes": len(r.body)} for r in self.received]
        return JSONResponse({"received": rows, "violations": self.violations})


def _answered(received: Received, status: int) -> Received:
    return Received(received.api, received.key, received.arrived_at, received.method,
                    received.path, received.headers, received.body, status)


def app(fakes: FakeApis, routes: Sequence[BaseRoute]) -> Starlette:
    return Starlette(routes=[*routes, Route("/_fake/received", fakes.listing)])


def all_routes(fakes: FakeApis) -> list[BaseRoute]:
    """Every API's routes; an API module joins by adding its ``routes`` here."""
    from fake_notify import registry

    return registry.routes(fakes)


class _Server(uvicorn.Server):
    """uvicorn without signal handlers: the caller's event loop is not ours to take over."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def running_fake(port: int = 0) -> AsyncIterator[FakeApis]:
    """Every fake API on one port of 127.0.0.1 (a free one by default)."""
    fakes = FakeApis()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    fakes.port = int(sock.getsockname()[1])
    server = _Server(uvicorn.Config(app(fakes, all_routes(fakes)), log_config=None,
                                    lifespan="off", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield fakes
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, 10)
        finally:
            sock.close()
