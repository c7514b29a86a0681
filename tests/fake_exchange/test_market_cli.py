"""`python -m fake_exchange` runs the trade market too, and the demo scripts its events."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from websockets.asyncio.client import connect

from fake_exchange import FakeExchange
from fake_exchange.demo_board import DEMO_BOARD
from fake_exchange.demo_events import CASCADE_NOTIONAL, EXTREME_FUNDING, demo_events
from fake_exchange.listings import listing
from fake_exchange.market import TradeMarket
from tests.support.exchange import ControlError, ExchangeProcess, collect


async def test_the_process_serves_rest_streams_and_scripts() -> None:
    with ExchangeProcess(symbols=20, trades_per_s=200) as fx:
        async with fx.control() as control:
            info = (await control.exchange_info()).json()
            assert len(info["symbols"]) == 23  # 20 perpetuals and the 3 extras
            async with connect(f"{fx.ws_base_url}/stream?streams=sym005usdt@aggTrade") as ws:
                await collect(ws, 0.2)
                jump = await control.jump("SYM005USDT", -4.0, over_ms=100)
                got = [m["data"] for m in await collect(ws, 0.5)]
            assert any(t["T"] == jump.first_past_ms and t["p"] == jump.to_price for t in got)
            stats = await control.stats()
            assert stats.rest_requests == 1
            assert stats.listed == 23
            assert stats.max_messages_per_s == 0
        sync = fx.stats()  # the same from synchronous code
        assert sync.connections_total == 1
        assert sync.connections[0].messages_out >= len(got)  # what it sent, counted
        with pytest.raises(ControlError) as err:
            fx.call("jump", symbol="NOPEUSDT", pct=1)
        assert err.value.status == 400
        assert fx.stop() == 0


async def test_the_demo_lists_its_board_and_a_recording_runs_no_market() -> None:
    with ExchangeProcess(symbols=48, args=("--demo", "--no-demo-events")) as fx:
        async with fx.control() as control:
            symbols = [s["symbol"] for s in (await control.exchange_info()).json()["symbols"]]
    assert symbols == [name for name, _ in DEMO_BOARD]


async def test_demo_events_cascade_and_turn_funding_extreme() -> None:
    market = TradeMarket([listing(name, price) for name, price in DEMO_BOARD[:3]])
    async with (FakeExchange([], market=market) as fx,
                connect(fx.url("!forceOrder@arr/!markPrice@arr@1s")) as ws):
        events = asyncio.create_task(demo_events(market, cascade_every_s=60,
                                                 funding_every_s=60, first_after_s=0,
                                                 first_funding_after_s=0))
        try:
            msgs = await collect(ws, 3.0)
        finally:
            events.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await events
    orders = [m["data"]["o"] for m in msgs if m["stream"] == "!forceOrder@arr"]
    assert len(orders) >= 2
    assert len({o["s"] for o in orders}) == 1
    per_order = CASCADE_NOTIONAL / 5
    assert all(float(o["q"]) * float(o["p"]) >= per_order for o in orders)
    marks = [m["data"] for m in msgs if m["stream"] == "!markPrice@arr@1s"]
    extreme = {e["s"] for e in marks[-1] if abs(float(e["r"])) == EXTREME_FUNDING}
    assert len(extreme) == 1
