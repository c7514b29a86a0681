"""Plain-HTTP fault injection and market scripting for a fake exchange in another process.

It lives in the WebSocket server's `process_request` hook, so a test or benchmark driving a
subprocess needs nothing but an HTTP GET (or a POST without a body) on the same port.
Faults: `stats`, `drop`, `stall?seconds=`, `resume`, `malformed?kind=`, `ping`. The trade
market (`fake_exchange.market`): `list?symbol=&price=`, `delist?symbol=`,
`status?symbol=&status=` (any exchangeInfo status, e.g. PENDING_TRADING then TRADING),
`jump?symbol=&pct=&over_ms=[&qty_factor=]`, `cascade?symbol=&side=&notional=&orders=`,
`funding?symbol=&rate=`, `rate?trades_per_s=`. A bad parameter is a 400 with the reason.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs

import msgspec

from fake_exchange.market import MAX_TRADES_PER_S

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection
    from websockets.http11 import Response

    from fake_exchange.market import TradeMarket

logger = logging.getLogger(__name__)

FAULTS = ("stats", "drop", "stall", "resume", "malformed", "ping")
SCRIPTS = ("list", "delist", "status", "jump", "cascade", "funding", "rate")
ACTIONS = FAULTS + SCRIPTS
MAX_JUMP_MS = 5000  # the answer waits for the jump, inside the HTTP handshake's timeout


class Controllable(Protocol):
    """The faults an exchange takes on command (``FakeExchange`` is one)."""

    @property
    def market(self) -> TradeMarket | None: ...
    async def drop(self) -> None: ...
    def stall(self, seconds: float | None = None) -> None: ...
    def resume(self) -> None: ...
    async def send_malformed(self, kind: str) -> None: ...
    async def ping(self, wait_s: float = 5.0) -> None: ...
    def stats(self) -> dict[str, Any]: ...


class BadRequest(ValueError):
    """A control parameter is missing or invalid (HTTP 400)."""


class NoMarket(Exception):
    """A market script sent to a fake that runs no trade market (HTTP 409)."""


def _json(conn: ServerConnection, status: int, body: dict[str, Any]) -> Response:
    response = conn.respond(status, msgspec.json.encode(body).decode() + "\n")
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response


def _number(params: dict[str, list[str]], name: str, *, default: float | None = None,
            lo: float = -math.inf, hi: float = math.inf) -> float:
    raw = params.get(name, [None])[0]
    if raw is None:
        if default is None:
            raise BadRequest(f"missing parameter {name}")
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a number, got {raw!r}") from None
    if not (math.isfinite(value) and lo <= value <= hi):
        raise BadRequest(f"{name} must be a finite number in [{lo:g}, {hi:g}], got {raw!r}")
    return value


def _integer(params: dict[str, list[str]], name: str, *, default: int | None = None,
             lo: int, hi: int) -> int:
    value = _number(params, name, default=None if default is None else float(default),
                    lo=lo, hi=hi)
    if value != int(value):
        raise BadRequest(f"{name} must be a whole number, got {value!r}")
    return int(value)


def _text(params: dict[str, list[str]], name: str) -> str:
    value = params.get(name, [""])[0]
    if not value:
        raise BadRequest(f"missing parameter {name}")
    return value


def _seconds(params: dict[str, list[str]]) -> float | None:
    if "seconds" not in params:
        return None
    return _number(params, "seconds", lo=0)


async def _script(market: TradeMarket, action: str, params: dict[str, list[str]]) -> Any:
    if action == "rate":
        market.set_rate(_number(params, "trades_per_s", lo=0, hi=MAX_TRADES_PER_S))
        return {"trades_per_s": market.trades_per_s}
    symbol = _text(params, "symbol")
    if action == "list":
        item = market.list_symbol(symbol, _number(params, "price", lo=1e-12, hi=1e9))
        return {"symbol": item.symbol, "price": item.price, "status": item.status}
    if action == "delist":
        item = market.delist(symbol)
        return {"symbol": item.symbol, "status": item.status}
    if action == "status":
        item = market.set_status(symbol, _text(params, "status"))
        return {"symbol": item.symbol, "status": item.status}
    if action == "jump":
        return await market.jump(
            symbol, _number(params, "pct", lo=-90, hi=1000),
            _integer(params, "over_ms", default=200, lo=0, hi=MAX_JUMP_MS),
            _number(params, "qty_factor", default=10.0, lo=1e-3, hi=10_000))
    if action == "cascade":
        return market.cascade(
            symbol, _text(params, "side").upper(), _number(params, "notional", lo=1, hi=1e12),
            _integer(params, "orders", default=5, lo=1, hi=600))
    assert action == "funding"
    return market.set_funding(symbol, _number(params, "rate", lo=-0.5, hi=0.5))


async def _fault(fx: Controllable, action: str, params: dict[str, list[str]]) -> None:
    if action == "drop":
        await fx.drop()
    elif action == "stall":
        fx.stall(_seconds(params))
    elif action == "resume":
        fx.resume()
    elif action == "malformed":
        await fx.send_malformed(_text(params, "kind"))
    elif action == "ping":
        await fx.ping()


async def handle(fx: Controllable, conn: ServerConnection, path: str, query: str) -> Response:
    """Answer one `/control/<action>` request; the body always carries the stats after it,
    and a market script's result under the action's name."""
    action = path.removeprefix("/control/").rstrip("/")
    params = parse_qs(query)
    if action not in ACTIONS:
        return _json(conn, 404, {"error": f"unknown control {action!r}", "known": list(ACTIONS)})
    result: dict[str, Any] = {}
    try:
        if action in SCRIPTS:
            if fx.market is None:
                raise NoMarket
            result[action] = await _script(fx.market, action, params)
        else:
            await _fault(fx, action, params)
    except ValueError as exc:
        return _json(conn, 400, {"error": str(exc)})
    except NoMarket:
        return _json(conn, 409, {"error": "this fake exchange runs no trade market"})
    logger.info("control %s %s", action, query)
    return _json(conn, 200, {"ok": True, "action": action, **result, **fx.stats()})
