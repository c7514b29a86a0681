"""Scripting the trade market over its control API: listings, jumps, cascades, funding and
the trade rate, each checked on what a client of the market routes receives."""

from __future__ import annotations

import asyncio
import time
from itertools import pairwise

import pytest
from websockets.asyncio.client import connect

from fake_exchange import FakeExchange
from fake_exchange.market import FUNDING_PERIOD_MS
from tests.support.exchange import ControlError, ExchangeControl, collect, trade_exchange


async def _symbols(control: ExchangeControl) -> dict[str, str]:
    info = (await control.exchange_info()).json()
    return {s["symbol"]: s["status"] for s in info["symbols"]}


async def test_a_listing_and_a_delisting_change_exchange_info_and_the_streams() -> None:
    async with (trade_exchange(3, trades_per_s=300) as fx,
                ExchangeControl(fx.rest_url) as control):
        stats = await control.list_symbol("FRESHUSDT", 1.25)
        assert (stats.listed, stats.tradable, stats.board_version) == (7, 5, 1)
        symbols = await _symbols(control)
        assert symbols["FRESHUSDT"] == "TRADING"
        streams = "freshusdt@aggTrade/sym001usdt@aggTrade"
        async with connect(fx.url(streams)) as ws:
            before = await collect(ws, 0.5)
            assert {m["data"]["s"] for m in before} == {"FRESHUSDT", "SYM001USDT"}
            fresh = [m["data"] for m in before if m["data"]["s"] == "FRESHUSDT"]
            ids = [t["a"] for t in fresh]
            assert ids == list(range(ids[0], ids[0] + len(ids)))  # a listener misses none
            assert float(fresh[0]["p"]) == pytest.approx(1.25, rel=0.001)
            await control.delist("SYM001USDT")
            await collect(ws, 0.1)  # what was in flight
            after = await collect(ws, 0.5)
        assert after
        assert {m["data"]["s"] for m in after} == {"FRESHUSDT"}
        assert (await _symbols(control))["SYM001USDT"] == "CLOSE"
        async with connect(fx.url("!markPrice@arr@1s")) as ws:
            frame = (await collect(ws, 2.0, until=lambda m: len(m) >= 1))[0]["data"]
        assert "SYM001USDT" not in {e["s"] for e in frame}
        assert "FRESHUSDT" in {e["s"] for e in frame}
        # Listed again, it trades again and its ids go on from where they were.
        last_a = max(m["data"]["a"] for m in before if m["data"]["s"] == "SYM001USDT")
        await control.list_symbol("SYM001USDT", 5.0)
        async with connect(fx.url("sym001usdt@aggTrade")) as ws:
            again = await collect(ws, 0.5)
        assert again
        assert min(m["data"]["a"] for m in again) > last_a
        for bad in ({"symbol": "FRESHUSDT", "price": "2"}, {"symbol": "fresh", "price": "2"},
                    {"symbol": "XUSDT", "price": "-1"}, {"symbol": "XUSDT"}):
            with pytest.raises(ControlError) as err:
                await control.call("list", **bad)
            assert err.value.status == 400
        with pytest.raises(ControlError, match="not a trading symbol"):
            await control.delist("NOPEUSDT")


async def test_a_contract_pending_trading_starts_trading_on_a_status_change() -> None:
    async with (trade_exchange(2, trades_per_s=200) as fx,
                ExchangeControl(fx.rest_url) as control,
                connect(fx.url("newcoinusdt@aggTrade")) as ws):
        assert not await collect(ws, 0.3)
        body = await control.call("status", symbol="NEWCOINUSDT", status="TRADING")
        assert body["status"] == {"symbol": "NEWCOINUSDT", "status": "TRADING"}
        assert (await _symbols(control))["NEWCOINUSDT"] == "TRADING"
        assert await collect(ws, 0.5)
        for bad in ({"symbol": "NEWCOINUSDT", "status": "LIVE"},
                    {"symbol": "NOPEUSDT", "status": "TRADING"}, {"symbol": "NEWCOINUSDT"}):
            with pytest.raises(ControlError) as err:
                await control.call("status", **bad)
            assert err.value.status == 400


async def test_a_jump_walks_the_price_and_returns_the_trade_that_completes_it() -> None:
    async with (trade_exchange(4, trades_per_s=100) as fx,
                ExchangeControl(fx.rest_url) as control,
                connect(fx.url("sym002usdt@aggTrade")) as ws):
        await collect(ws, 0.2)
        started = time.time_ns() // 1_000_000
        jump = await control.jump("SYM002USDT", 5.0, over_ms=200)
        got = [m["data"] for m in await collect(ws, 0.5)]
    assert jump.symbol == "SYM002USDT"
    assert float(jump.to_price) == pytest.approx(float(jump.from_price) * 1.05, rel=1e-6)
    assert 190 <= jump.first_past_ms - jump.first_trade_ms < 1000  # ticks run late on a busy host
    assert started <= jump.first_trade_ms
    assert jump.trades == len(jump.path) >= 10
    prices = [float(p) for _, p in jump.path]
    assert prices == sorted(prices)  # a walk, not a step
    assert jump.path[-1] == (jump.first_past_ms, jump.to_price)
    completing = [t for t in got if t["T"] == jump.first_past_ms and t["p"] == jump.to_price]
    assert len(completing) == 1
    burst = {(t["T"], t["p"]) for t in got}
    assert all(tuple(step) in burst for step in jump.path)  # every trade of it went out
    heavy = [t for t in got if (t["T"], t["p"]) in burst and float(t["q"]) * float(t["p"]) > 40_000]
    assert len(heavy) >= len(jump.path)  # a jump's trades are heavy (qty_factor 10)
    after = [float(t["p"]) for t in got if t["T"] > jump.first_past_ms]
    assert all(p == pytest.approx(float(jump.to_price), rel=0.001) for p in after)


async def test_a_cascade_sends_one_forced_order_a_second_summing_the_notional() -> None:
    async with (trade_exchange(3) as fx, ExchangeControl(fx.rest_url) as control,
                connect(fx.url("!forceOrder@arr")) as ws):
        for bad in ({"side": "UP", "notional": "1e6"}, {"side": "BUY", "notional": "0"},
                    {"side": "BUY", "notional": "1e6", "orders": "0"},
                    {"side": "BUY", "notional": "1e6", "orders": "2.5"}):
            with pytest.raises(ControlError) as err:
                await control.call("cascade", symbol="SYM001USDT", **bad)
            assert err.value.status == 400
        cascade = await control.cascade("SYM001USDT", "SELL", 2_000_000, orders=3)
        got = [m["data"] for m in await collect(ws, 3.5, until=lambda m: len(m) >= 3)]
        stats = await control.stats()
    assert (cascade.symbol, cascade.side, cascade.orders) == ("SYM001USDT", "SELL", 3)
    assert cascade.notional >= 2_000_000
    assert cascade.last_ms - cascade.first_ms >= 2000
    assert len(got) == 3
    assert all(o["o"]["s"] == "SYM001USDT" and o["o"]["S"] == "SELL" for o in got)
    assert sum(float(o["o"]["q"]) * float(o["o"]["p"]) for o in got) >= 2_000_000
    assert [o["o"]["T"] for o in got] == [s.T for s in cascade.schedule]
    events = [o["E"] for o in got]
    assert all(b - a >= 1000 for a, b in pairwise(events))
    prices = [float(o["o"]["p"]) for o in got]
    assert prices == sorted(prices, reverse=True)  # longs liquidated lower and lower
    assert (stats.force_orders_sent, stats.force_orders_superseded) == (3, 0)



async def test_a_funding_extreme_shows_in_that_symbol_s_mark_prices_only() -> None:
    async with (trade_exchange(3) as fx, ExchangeControl(fx.rest_url) as control):
        result = await control.funding("SYM000USDT", -0.002)
        assert result.rate == "-0.00200000"
        assert result.next_funding_ms % FUNDING_PERIOD_MS == 0
        async with connect(fx.url("!markPrice@arr@1s")) as ws:
            frame = (await collect(ws, 2.0, until=lambda m: len(m) >= 1))[0]["data"]
        rates = {e["s"]: e["r"] for e in frame}
        assert rates["SYM000USDT"] == "-0.00200000"
        assert rates["SYM001USDT"] == "0.00010000"
        assert all(e["T"] == result.next_funding_ms for e in frame)
        assert (await control.stats()).funding_overrides == {"SYM000USDT": "-0.00200000"}
        for bad in ({"symbol": "SYM000USDT", "rate": "abc"},
                    {"symbol": "SYM000USDT", "rate": "0.9"}, {"symbol": "SYM000USDT"},
                    {"symbol": "NEWCOINUSDT", "rate": "0.01"}):  # not trading
            with pytest.raises(ControlError) as err:
                await control.call("funding", **bad)
            assert err.value.status == 400


async def test_rate_mode_spreads_the_asked_rate_over_the_board() -> None:
    names = [f"sym{i:03d}usdt@aggTrade" for i in range(650)]
    async with (trade_exchange(650, trades_per_s=0, extras=False) as fx,
                ExchangeControl(fx.rest_url) as control):
        urls = [fx.url("/".join(names[k::4])) for k in range(4)]
        async with (connect(urls[0], max_size=None) as a, connect(urls[1], max_size=None) as b,
                    connect(urls[2], max_size=None) as c, connect(urls[3], max_size=None) as d):
            assert not await collect(a, 0.3)  # rate 0: nothing trades
            await control.set_rate(4000)
            await asyncio.sleep(0.5)
            got = await asyncio.gather(*(collect(ws, 2.0) for ws in (a, b, c, d)))
            stats = await control.stats()
    total = sum(len(g) for g in got)
    assert 0.6 * 4000 * 2.0 <= total <= 1.25 * 4000 * 2.5, total
    assert all(0.2 * total <= len(g) <= 0.3 * total for g in got)  # spread evenly
    seen = {m["data"]["s"] for g in got for m in g}
    assert len(seen) >= 640  # over the whole board
    assert stats.measured_trades_per_s == pytest.approx(4000, rel=0.2)
    assert stats.trades_per_s == 4000
    assert not stats.market_failed


async def test_bad_scripts_are_400_and_a_fake_without_a_market_is_409() -> None:
    async with trade_exchange(2) as fx, ExchangeControl(fx.rest_url) as control:
        for action, params in (("jump", {"symbol": "SYM000USDT"}),
                               ("jump", {"symbol": "SYM000USDT", "pct": "0"}),
                               ("jump", {"symbol": "SYM000USDT", "pct": "5", "over_ms": "-1"}),
                               ("jump", {"symbol": "SYM000USDT", "pct": "5",
                                         "over_ms": "999999"}),
                               ("jump", {"pct": "5"}),
                               ("rate", {"trades_per_s": "-5"}), ("rate", {})):
            with pytest.raises(ControlError) as err:
                await control.call(action, **params)
            assert err.value.status == 400, (action, params)
            assert err.value.reason
    async with FakeExchange([]) as fx, ExchangeControl(fx.rest_url) as control:
        with pytest.raises(ControlError) as err:
            await control.jump("SYM000USDT", 5)
        assert err.value.status == 409
