"""The trade market over real sockets: REST exchangeInfo, aggTrade, forceOrder and markPrice
in the exchange's formats."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from fake_exchange import FakeExchange, drifting_market
from fake_exchange.listings import synthetic_board
from fake_exchange.market import FUNDING_PERIOD_MS, TradeMarket
from tests.support.exchange import ExchangeControl, collect, trade_exchange

AGG_KEYS = {"e", "E", "s", "a", "p", "q", "f", "l", "T", "m"}
MARK_KEYS = {"e", "E", "s", "p", "i", "P", "r", "T"}


def _streams(msgs: list[Any], stream: str) -> list[Any]:
    return [m["data"] for m in msgs if isinstance(m, dict) and m.get("stream") == stream]


async def test_exchange_info_lists_the_board_in_the_exchange_format() -> None:
    async with trade_exchange(30) as fx, ExchangeControl(fx.rest_url) as control:
        r = await control.exchange_info()
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        assert r.headers["x-mbx-used-weight-1m"] == "1"
        info = r.json()
        assert info["timezone"] == "UTC"
        assert abs(info["serverTime"] - time.time() * 1000) < 5000
        assert {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                "limit": 2400} in info["rateLimits"]
        assert info["exchangeFilters"] == []
        assert isinstance(info["assets"], list)
        symbols = {s["symbol"]: s for s in info["symbols"]}
        assert len(symbols) == 33
        btc = symbols["SYM000USDT"]
        for key, kind in (("symbol", str), ("pair", str), ("contractType", str),
                          ("status", str), ("baseAsset", str), ("quoteAsset", str),
                          ("marginAsset", str), ("pricePrecision", int),
                          ("quantityPrecision", int), ("onboardDate", int),
                          ("deliveryDate", int), ("filters", list)):
            assert isinstance(btc[key], kind), key
        assert (btc["pair"], btc["baseAsset"], btc["quoteAsset"]) == ("SYM000USDT", "SYM000",
                                                                     "USDT")
        tick = next(f for f in btc["filters"] if f["filterType"] == "PRICE_FILTER")["tickSize"]
        assert float(tick) == pytest.approx(10.0 ** -btc["pricePrecision"])
        quarterly = symbols["BTCUSDT_261225"]
        assert (quarterly["contractType"], quarterly["pair"]) == ("CURRENT_QUARTER", "BTCUSDT")
        assert symbols["NEWCOINUSDT"]["status"] == "PENDING_TRADING"
        assert symbols["OLDCOINUSDT"]["status"] == "SETTLING"
        tradable = [s for s, e in symbols.items()
                    if e["contractType"] == "PERPETUAL" and e["status"] == "TRADING"]
        assert tradable == [f"SYM{i:03d}USDT" for i in range(30)]
        assert r.headers["x-mbx-used-weight-1m"] == "1"
        r = await control.exchange_info()
        assert r.headers["x-mbx-used-weight-1m"] == "2"
        stats = await control.stats()
        assert stats.rest_requests == 2
        assert stats.rest_weight_1m == 2
        assert stats.listed == 33


async def test_rest_weight_over_the_limit_is_a_429_and_other_paths_404() -> None:
    async with (trade_exchange(3, weight_limit=2) as fx,
                httpx.AsyncClient(base_url=fx.rest_url) as http):
        assert (await http.get("/fapi/v1/ping")).json() == {}
        assert (await http.get("/fapi/v1/exchangeInfo")).status_code == 200
        r = await http.get("/fapi/v1/exchangeInfo")
        assert r.status_code == 429
        assert r.json()["code"] == -1003
        assert r.headers["x-mbx-used-weight-1m"] == "3"
        assert (await http.get("/fapi/v1/nothing")).status_code == 404
    async with FakeExchange([]) as fx, httpx.AsyncClient(base_url=fx.rest_url) as http:
        assert (await http.get("/fapi/v1/exchangeInfo")).status_code == 404  # no market


async def test_agg_trades_carry_the_exchange_fields_with_increasing_ids() -> None:
    async with trade_exchange(4, trades_per_s=400) as fx:
        streams = "sym000usdt@aggTrade/sym001usdt@aggTrade"
        async with connect(fx.url(streams)) as ws, \
                connect(fx.url("sym002usdt@aggTrade", combined=False)) as raw:
            msgs = await collect(ws, 1.0)
            raw_msgs = await collect(raw, 0.3)
    assert {m["stream"] for m in msgs} == {"sym000usdt@aggTrade", "sym001usdt@aggTrade"}
    assert len(msgs) > 80  # about 100 a second for each of these two of the 7 tradable
    for symbol in ("SYM000USDT", "SYM001USDT"):
        data = [m["data"] for m in msgs if m["data"]["s"] == symbol]
        assert all(set(d) == AGG_KEYS and d["e"] == "aggTrade" for d in data)
        ids = [d["a"] for d in data]
        assert ids == sorted(ids)
        assert len(set(ids)) == len(ids)
        for d in data:
            assert isinstance(d["p"], str)
            assert float(d["p"]) > 0
            assert isinstance(d["q"], str)
            assert float(d["q"]) > 0
            assert d["f"] <= d["l"]
            assert d["T"] <= d["E"]
            assert isinstance(d["m"], bool)
    assert raw_msgs
    assert all(m["e"] == "aggTrade" and m["s"] == "SYM002USDT" for m in raw_msgs)


async def test_one_trade_reaches_every_connection_with_the_same_id() -> None:
    async with (trade_exchange(5, trades_per_s=300) as fx,
                connect(fx.url("sym001usdt@aggTrade/sym002usdt@aggTrade")) as old):
        await collect(old, 0.3)
        async with connect(fx.url("sym002usdt@aggTrade/sym003usdt@aggTrade")) as new:
            await asyncio.sleep(0.05)
            got_old = await collect(old, 0.6)
            got_new = await collect(new, 0.05)
    def ids(msgs: list[Any]) -> dict[int, Any]:
        return {m["data"]["a"]: m["data"] for m in msgs if m["data"]["s"] == "SYM002USDT"}
    old_ids, new_ids = ids(got_old), ids(got_new)
    shared = set(old_ids) & set(new_ids)
    assert len(shared) > 10, (len(old_ids), len(new_ids))
    assert all(old_ids[a] == new_ids[a] for a in shared)  # the very same trade, E included


async def test_mark_prices_every_second_for_every_trading_symbol() -> None:
    async with trade_exchange(6) as fx, connect(fx.url("!markPrice@arr@1s")) as ws:
        msgs = await collect(ws, 3.0, until=lambda m: len(m) >= 2)
    assert len(msgs) >= 2
    frames = _streams(msgs, "!markPrice@arr@1s")
    for frame in frames:
        assert [e["s"] for e in frame] == [*(f"SYM{i:03d}USDT" for i in range(6)),
                                         "BTCUSDT_261225"]
        for e in frame:
            assert set(e) == MARK_KEYS
            assert e["e"] == "markPriceUpdate"
            assert e["E"] % 1000 == 0
            assert e["T"] % FUNDING_PERIOD_MS == 0
            assert 0 < e["T"] - e["E"] <= FUNDING_PERIOD_MS
            assert e["r"] == "0.00010000"
            assert float(e["i"]) == pytest.approx(float(e["p"]), rel=1e-3)
    assert frames[1][0]["E"] - frames[0][0]["E"] == 1000


async def test_force_orders_at_most_one_per_symbol_per_second() -> None:
    async with trade_exchange(3) as fx, connect(fx.url("!forceOrder@arr")) as ws:
        market = fx.market
        assert market is not None
        now = time.time_ns() // 1_000_000
        # Three orders of SYM000 within one second (only the last may go), one of SYM001.
        market.force.schedule([("SYM000USDT", "SELL", "1", "10", now + k) for k in range(3)]
                              + [("SYM001USDT", "BUY", "2", "20", now + 1)])
        msgs = await collect(ws, 1.5)
    orders = [m["data"] for m in msgs]
    assert {o["o"]["s"] for o in orders} == {"SYM000USDT", "SYM001USDT"}
    for o in orders:
        assert o["e"] == "forceOrder"
        assert set(o) == {"e", "E", "o"}
        assert set(o["o"]) == {"s", "S", "o", "f", "q", "p", "ap", "X", "l", "z", "T"}
        assert (o["o"]["o"], o["o"]["f"], o["o"]["X"]) == ("LIMIT", "IOC", "FILLED")
    sym0 = [o for o in orders if o["o"]["s"] == "SYM000USDT"]
    assert len(sym0) <= 2
    if len(sym0) == 2:
        assert sym0[1]["E"] - sym0[0]["E"] >= 1000
    assert sym0[-1]["o"]["T"] == now + 2  # the latest one always goes out
    assert market.force.superseded + len(sym0) == 3


async def test_scenario_prices_lead_the_trades_and_tickers_still_flow() -> None:
    board = drifting_market(5, seed=0, frames=50, max_drift_pct=0.5)
    market = TradeMarket(synthetic_board(5, seed=0, extras=False), trades_per_s=200)
    async with (FakeExchange(board, interval_s=0.05, market=market) as fx,
                connect(fx.url("!miniTicker@arr/sym001usdt@aggTrade")) as ws):
        msgs = await collect(ws, 1.0)
    minis = _streams(msgs, "!miniTicker@arr")
    trades = _streams(msgs, "sym001usdt@aggTrade")
    assert minis
    assert trades
    assert all("a" in t and t["e"] == "aggTrade" for t in trades)  # the market's, not frames'
    last_mini = next(e for f in reversed(minis) for e in f if e["s"] == "SYM001USDT")
    assert float(trades[-1]["p"]) == pytest.approx(float(last_mini["c"]), rel=0.01)
