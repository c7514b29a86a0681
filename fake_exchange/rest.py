"""The REST side of the fake: `GET /fapi/v1/exchangeInfo` (and `ping`, `time`) on the
WebSocket port, with the exchange's request-weight accounting.

Every answer carries `X-MBX-USED-WEIGHT-1M`, the weight used in the current minute; past the
limit the answer is a 429 with the exchange's -1003 error, so a client that polls too often
is caught by its tests rather than by an IP ban.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Final

import msgspec

from fake_exchange.listings import PERPETUAL, Board, Listing

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection
    from websockets.http11 import Response

logger = logging.getLogger(__name__)

WEIGHT_LIMIT_1M: Final = 2400
WEIGHTS: Final = {"/fapi/v1/exchangeInfo": 1, "/fapi/v1/ping": 1, "/fapi/v1/time": 1}


def _rate_limits(weight_limit: int) -> list[dict[str, Any]]:
    return [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
         "limit": weight_limit},
        {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
    ]


def _step(decimals: int) -> str:
    return "1" if decimals <= 0 else f"{10.0 ** -decimals:.{decimals}f}"


def symbol_entry(item: Listing) -> dict[str, Any]:
    """One `symbols[]` entry with the exchange's fields (the ones a client reads and the
    ones it must ignore)."""
    pp, qp = item.price_precision, item.quantity_precision
    tick, step = _step(pp), _step(qp)
    perpetual = item.contract_type == PERPETUAL
    return {
        "symbol": item.symbol, "pair": item.pair, "contractType": item.contract_type,
        "deliveryDate": item.delivery_ms, "onboardDate": item.onboard_ms,
        "status": item.status, "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000", "baseAsset": item.base_asset,
        "quoteAsset": item.quote_asset, "marginAsset": item.quote_asset,
        "pricePrecision": pp, "quantityPrecision": qp, "baseAssetPrecision": 8,
        "quotePrecision": 8, "underlyingType": "COIN", "underlyingSubType": [],
        "settlePlan": 0, "triggerProtect": "0.0500", "liquidationFee": "0.012500",
        "marketTakeBound": "0.05", "maxMoveOrderLimit": 10000,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000",
             "tickSize": tick},
            {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "1000000", "stepSize": step},
            {"filterType": "MARKET_LOT_SIZE", "minQty": step, "maxQty": "100000",
             "stepSize": step},
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "MIN_NOTIONAL", "notional": "5" if perpetual else "1"},
            {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500",
             "multiplierDown": "0.9500", "multiplierDecimal": "4"},
        ],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT",
                       "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
    }


class Rest:
    """Renders exchangeInfo once per board version and keeps the weight of the minute."""

    def __init__(self, board: Board, *, weight_limit: int = WEIGHT_LIMIT_1M) -> None:
        if weight_limit < 1:
            raise ValueError("weight_limit >= 1 required")
        self._board = board
        self.weight_limit = weight_limit
        self.requests = 0
        self.rejected = 0
        self.by_path: dict[str, int] = {}
        self._minute = -1
        self._used = 0
        self._cached: tuple[int, bytes] | None = None

    def used_weight(self, now_ms: int | None = None) -> int:
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        return self._used if now // 60_000 == self._minute else 0

    def stats(self) -> dict[str, Any]:
        return {"rest_requests": self.requests, "rest_rejected": self.rejected,
                "rest_weight_1m": self.used_weight(), "rest_by_path": dict(self.by_path)}

    def exchange_info(self, now_ms: int) -> bytes:
        if self._cached is None or self._cached[0] != self._board.version:
            symbols = msgspec.json.encode([symbol_entry(item) for item in self._board])
            self._cached = (self._board.version, symbols)
        head = msgspec.json.encode({
            "timezone": "UTC", "serverTime": now_ms,
            "rateLimits": _rate_limits(self.weight_limit), "exchangeFilters": [], "assets": [
                {"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
        })
        return head[:-1] + b',"symbols":' + self._cached[1] + b"}"

    def handle(self, conn: ServerConnection, path: str, method: str) -> Response:
        now_ms = time.time_ns() // 1_000_000
        weight = WEIGHTS.get(path)
        if weight is None:
            return _answer(conn, 404, b'{"code":-5000,"msg":"Path not found"}', None)
        self.requests += 1
        self.by_path[path] = self.by_path.get(path, 0) + 1
        if now_ms // 60_000 != self._minute:
            self._minute, self._used = now_ms // 60_000, 0
        self._used += weight
        if self._used > self.weight_limit:
            self.rejected += 1
            logger.warning("REST weight %d over the limit %d", self._used, self.weight_limit)
            body = msgspec.json.encode({"code": -1003, "msg": (
                f"Too many requests; current limit of IP request weight per 1 MINUTE is "
                f"{self.weight_limit}. Please use WebSocket Streams for live updates to avoid "
                f"polling the API.")})
            return _answer(conn, 429, body, self._used)
        if method != "GET":
            return _answer(conn, 405, b'{"code":-1000,"msg":"Request method not supported"}',
                           self._used)
        if path == "/fapi/v1/exchangeInfo":
            body = self.exchange_info(now_ms)
        elif path == "/fapi/v1/time":
            body = msgspec.json.encode({"serverTime": now_ms})
        else:
            body = b"{}"
        return _answer(conn, 200, body, self._used)


def _answer(conn: ServerConnection, status: int, body: bytes, used: int | None) -> Response:
    response = conn.respond(status, "")
    response.body = body
    del response.headers["Content-Type"]
    del response.headers["Content-Length"]
    response.headers["Content-Type"] = "application/json"
    response.headers["Content-Length"] = str(len(body))
    if used is not None:
        response.headers["X-MBX-USED-WEIGHT-1M"] = str(used)
    return response
