"""The fake exchange's trade market for tests: started in process or as its own process on a
free port, scripted and read through its control API with typed answers.

- ``trade_exchange(...)``: an in-process ``FakeExchange`` with a ``TradeMarket`` of
  ``n_symbols`` synthetic perpetuals (and the quarterly and off-trading extras);
- ``ExchangeProcess``: ``python -m fake_exchange`` on a free port (``start``/``stop``, or
  ``with``), its ``rest_url`` (``BINANCE_REST_URL``) and ``ws_base_url``
  (``BINANCE_WS_BASE_URL``), ``call``/``stats`` from synchronous code;
- ``collect(ws, seconds)``: what a market connection receives, decoded;
- ``ExchangeControl``: ``stats()``, ``list_symbol``, ``delist``, ``jump``, ``cascade``,
  ``funding``, ``set_rate``, ``exchange_info`` and the faults ``drop``, ``stall``,
  ``resume``; answers decoded into the Structs below.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import msgspec
from websockets.asyncio.client import ClientConnection

from fake_exchange import FakeExchange
from fake_exchange.listings import synthetic_board
from fake_exchange.market import TradeMarket
from fake_exchange.scenarios import Quote
from fake_exchange.subscriptions import ConnectionStats
from tools.redis_server import free_port

REPO = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"fake exchange listening on (ws://[^\s]+) ")


class ExchangeStats(msgspec.Struct, frozen=True, kw_only=True):
    """`/control/stats` (every control answer carries it); market figures are 0 without a
    trade market."""

    connections_total: int
    active_connections: int
    frames_sent: int
    stalled: bool
    max_messages_per_s: int
    rate_violations: int
    subscribe_messages: int
    connections: list[ConnectionStats]
    rejected_handshakes: int = 0
    listed: int = 0
    tradable: int = 0
    board_version: int = 0
    trades_per_s: float = 0.0
    measured_trades_per_s: float = 0.0
    trades_generated: int = 0
    trade_messages: int = 0
    market_messages_sent: int = 0
    mark_price_frames: int = 0
    late_ticks: int = 0
    market_failed: bool = False
    force_orders_scheduled: int = 0
    force_orders_sent: int = 0
    force_orders_superseded: int = 0
    rest_requests: int = 0
    rest_rejected: int = 0
    rest_weight_1m: int = 0
    funding_overrides: dict[str, str] = msgspec.field(default_factory=dict)


class JumpResult(msgspec.Struct, frozen=True):
    """A scripted jump, answered once its last trade is made: `first_past_ms` is the trade
    time `T` of the first trade at the full move; `path` every trade of the burst as
    [T, price]."""

    symbol: str
    from_price: str
    to_price: str
    first_trade_ms: int
    first_past_ms: int
    trades: int
    path: list[tuple[int, str]]


class ScheduledOrder(msgspec.Struct, frozen=True):
    T: int
    q: str
    p: str


class CascadeResult(msgspec.Struct, frozen=True):
    """A scripted cascade: its orders go out one a second from `first_ms` to `last_ms`."""

    symbol: str
    side: str
    orders: int
    notional: float
    first_ms: int
    last_ms: int
    schedule: list[ScheduledOrder]


class FundingResult(msgspec.Struct, frozen=True):
    symbol: str
    rate: str
    next_funding_ms: int


class ControlError(AssertionError):
    """A control call that did not answer 200 (its status and the reason it gave)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


@dataclass
class ExchangeControl:
    """The control API of a fake exchange at `base_url` (``http://host:port``)."""

    base_url: str
    timeout_s: float = 15.0
    _http: httpx.AsyncClient | None = field(default=None, repr=False)

    async def __aenter__(self) -> ExchangeControl:
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout_s)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def call(self, action: str, **params: object) -> dict[str, Any]:
        """One control action; raises ControlError unless it answered 200."""
        assert self._http is not None, "use ExchangeControl in `async with`"
        r = await self._http.post(f"/control/{action}",
                                  params={k: str(v) for k, v in params.items()})
        body: dict[str, Any] = r.json()
        if r.status_code != 200:
            raise ControlError(r.status_code, str(body.get("error")))
        return body

    async def stats(self) -> ExchangeStats:
        return msgspec.convert(await self.call("stats"), ExchangeStats)

    async def list_symbol(self, symbol: str, price: float) -> ExchangeStats:
        return msgspec.convert(await self.call("list", symbol=symbol, price=price),
                               ExchangeStats)

    async def delist(self, symbol: str) -> ExchangeStats:
        return msgspec.convert(await self.call("delist", symbol=symbol), ExchangeStats)

    async def jump(self, symbol: str, pct: float, over_ms: int = 200,
                   qty_factor: float = 10.0) -> JumpResult:
        body = await self.call("jump", symbol=symbol, pct=pct, over_ms=over_ms,
                               qty_factor=qty_factor)
        return msgspec.convert(body["jump"], JumpResult)

    async def cascade(self, symbol: str, side: str, notional: float,
                      orders: int = 5) -> CascadeResult:
        body = await self.call("cascade", symbol=symbol, side=side, notional=notional,
                               orders=orders)
        return msgspec.convert(body["cascade"], CascadeResult)

    async def funding(self, symbol: str, rate: float) -> FundingResult:
        body = await self.call("funding", symbol=symbol, rate=rate)
        return msgspec.convert(body["funding"], FundingResult)

    async def set_rate(self, trades_per_s: float) -> ExchangeStats:
        return msgspec.convert(await self.call("rate", trades_per_s=trades_per_s),
                               ExchangeStats)

    async def drop(self) -> None:
        await self.call("drop")

    async def stall(self, seconds: float | None = None) -> None:
        await (self.call("stall") if seconds is None else self.call("stall", seconds=seconds))

    async def resume(self) -> None:
        await self.call("resume")

    async def exchange_info(self) -> httpx.Response:
        """`GET /fapi/v1/exchangeInfo` as a client sends it (the response, headers and all)."""
        assert self._http is not None, "use ExchangeControl in `async with`"
        return await self._http.get("/fapi/v1/exchangeInfo")


async def collect(ws: ClientConnection, seconds: float,
                  until: Callable[[list[Any]], bool] | None = None) -> list[Any]:
    """Every message of `ws` for `seconds` (or until `until` holds on them), decoded."""
    out: list[Any] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (until and until(out)):
        try:
            async with asyncio.timeout(deadline - time.monotonic()):
                out.append(json.loads(await ws.recv()))
        except TimeoutError:
            break
    return out


@contextlib.asynccontextmanager
async def trade_exchange(n_symbols: int = 650, *, trades_per_s: float | None = None,
                         extras: bool = True, scenario: list[list[Quote]] | None = None,
                         tick_s: float = 0.01, weight_limit: int = 2400,
                         **fx_kwargs: Any) -> AsyncIterator[FakeExchange]:
    """A started in-process fake exchange whose trade market lists `n_symbols` synthetic
    perpetuals (``SYM000USDT``…); `fx.market` scripts it directly, ``ExchangeControl(
    fx.rest_url)`` over HTTP."""
    market = TradeMarket(synthetic_board(n_symbols, extras=extras), trades_per_s=trades_per_s,
                         tick_s=tick_s, weight_limit=weight_limit)
    async with FakeExchange(scenario or [], market=market, **fx_kwargs) as fx:
        yield fx


@dataclass
class ExchangeProcess:
    """``python -m fake_exchange`` as a real process on a free port: a drifting board of
    `symbols` whose trade market lists them all (`args` adds any other option)."""

    symbols: int = 650
    trades_per_s: float | None = None
    args: tuple[str, ...] = ()
    log_path: Path | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[str] | None = None
    ws_url: str | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        argv = [sys.executable, "-m", "fake_exchange", "--port", str(self.port),
                "--scenario", "drift", "--symbols", str(self.symbols), "--wall-clock",
                *(("--trades-per-s", str(self.trades_per_s)) if self.trades_per_s is not None
                  else ()), *self.args]
        stderr = subprocess.DEVNULL if self.log_path is None else self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE,
                                            stderr=stderr, text=True, env={**os.environ})
        finally:
            if self.log_path is not None:
                assert not isinstance(stderr, int)
                stderr.close()
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        line = self.process.stdout.readline() if ready else ""  # printed once it listens
        m = _LISTENING.search(line)
        if m is None:
            self.stop()
            raise AssertionError(f"fake exchange did not start: {line!r}")
        self.ws_url = m.group(1)

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/market"

    def control(self) -> ExchangeControl:
        return ExchangeControl(self.rest_url)

    def call(self, action: str, **params: object) -> dict[str, Any]:
        """One control action from synchronous code (a POST without a body); raises
        ControlError unless it answered 200."""
        query = urllib.parse.urlencode({k: str(v) for k, v in params.items()})
        request = urllib.request.Request(f"{self.rest_url}/control/{action}?{query}",
                                         data=b"", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                body: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise ControlError(exc.code, str(json.loads(exc.read()).get("error"))) from None
        return body

    def stats(self) -> ExchangeStats:
        return msgspec.convert(self.call("stats"), ExchangeStats)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, then a kill if it does not exit in time; its exit code."""
        if self.process is None:
            return None
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        return process.returncode

    def __enter__(self) -> ExchangeProcess:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
