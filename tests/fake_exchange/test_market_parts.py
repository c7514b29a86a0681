"""The trade market's pure parts: listings, tapes, the forced-order throttle, cascades."""

from __future__ import annotations

import asyncio
import math

import pytest

from fake_exchange.liquidations import (
    CASCADE_SPACING_MS,
    THROTTLE_MS,
    ForceOrders,
    cascade_orders,
)
from fake_exchange.listings import Board, listing, synthetic_board
from fake_exchange.market import FUNDING_PERIOD_MS, TradeMarket, next_funding_ms
from fake_exchange.rest import symbol_entry
from fake_exchange.scenarios import drifting_market
from fake_exchange.trades import NOISE, TradeTapes

T0 = 1_700_000_000_000


def test_synthetic_board_matches_the_scenario_and_carries_the_extras() -> None:
    board = synthetic_board(5, seed=3)
    first = next(iter(drifting_market(5, seed=3, frames=1)))
    assert [(b.symbol, b.price) for b in board[:5]] == [(q.symbol, q.price) for q in first]
    extras = {b.symbol: (b.contract_type, b.status) for b in board[5:]}
    assert extras == {"BTCUSDT_261225": ("CURRENT_QUARTER", "TRADING"),
                      "NEWCOINUSDT": ("PERPETUAL", "PENDING_TRADING"),
                      "OLDCOINUSDT": ("PERPETUAL", "SETTLING")}
    assert [b.symbol for b in synthetic_board(2, extras=False)] == ["SYM000USDT", "SYM001USDT"]


def test_listing_rules_and_board_versions() -> None:
    for bad in ("btcusdt", "", "BTC-USDT", "BTCUSDT_2612"):
        with pytest.raises(ValueError, match="symbol"):
            listing(bad, 1.0)
    for price in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="price"):
            listing("XUSDT", price)
    board = Board([listing("AUSDT", 1.0)])
    with pytest.raises(ValueError, match="already listed"):
        board.add(listing("AUSDT", 2.0))
    board.set_status("AUSDT", "CLOSE")
    board.add(listing("AUSDT", 2.0))  # listed again
    assert board.version == 2
    assert [b.price for b in board.tradable()] == [2.0]
    with pytest.raises(ValueError, match="status"):
        board.set_status("AUSDT", "GONE")
    with pytest.raises(ValueError, match="listed twice"):
        Board([listing("AUSDT", 1.0), listing("AUSDT", 1.0)])


def test_symbol_entry_precisions_follow_the_price() -> None:
    btc = symbol_entry(listing("BTCUSDT", 61_800.0))
    doge = symbol_entry(listing("DOGEUSDT", 0.17))
    assert (btc["baseAsset"], btc["quantityPrecision"], doge["quantityPrecision"]) == (
        "BTC", 3, 0)
    assert btc["pricePrecision"] < doge["pricePrecision"]
    lot = next(f for f in doge["filters"] if f["filterType"] == "LOT_SIZE")
    assert lot["stepSize"] == "1"


def test_funding_times_are_on_the_eight_hour_grid() -> None:
    midnight = 1_796_256_000_000  # a 00:00 UTC
    assert midnight % 86_400_000 == 0
    assert next_funding_ms(midnight) == midnight + FUNDING_PERIOD_MS
    assert next_funding_ms(midnight - 1) == midnight
    assert next_funding_ms(midnight + 9 * 3_600_000) == midnight + 16 * 3_600_000


def test_tapes_spread_trades_round_robin_with_increasing_ids() -> None:
    board = synthetic_board(10, extras=False)
    tapes = TradeTapes(seed=1)
    tapes.sync(board)
    trades = [t for k in range(20) for t in tapes.tick(board, 1000.0, 0.01, T0 + 10 * k)]
    assert len(trades) == 200  # 1,000 a second for 0.2 s
    per_symbol: dict[str, list[int]] = {}
    for t in trades:
        per_symbol.setdefault(t[0], []).append(t[1])
    assert sorted(len(v) for v in per_symbol.values()) == [20] * 10
    for ids in per_symbol.values():
        assert ids == list(range(1, 21))
    for t in trades:
        start = next(b.price for b in board if b.symbol == t[0])
        assert abs(float(t[2]) / start - 1) <= NOISE * 1.01
        assert t[4] <= t[5]  # first and last trade ids
    assert tapes.generated == 200
    # A fractional rate carries over: 150/s for 10 ticks of 10 ms is 15 trades.
    assert sum(len(tapes.tick(board, 150.0, 0.01, T0)) for _ in range(10)) == 15


def test_following_a_scenario_keeps_a_jump_s_offset() -> None:
    board = [listing("AUSDT", 100.0)]
    tapes = TradeTapes()
    tapes.sync(board)
    tapes.follow("AUSDT", 110.0)
    assert float(tapes.tick(board, 100.0, 0.01, T0)[0][2]) == pytest.approx(110.0, rel=0.001)

    async def jump() -> None:
        j = tapes.jump("AUSDT", 10.0, 0, 1.0)
        tapes.tick(board, 0.0, 0.01, T0)
        assert (await j.done)["to_price"] == "121.00000"

    asyncio.run(jump())
    tapes.follow("AUSDT", 99.0)  # the scenario falls 10 %: the trades fall 10 % from 121
    assert float(tapes.tick(board, 100.0, 0.01, T0)[0][2]) == pytest.approx(108.9, rel=0.001)


def test_the_throttle_sends_the_latest_order_per_symbol_per_second() -> None:
    force = ForceOrders()
    force.schedule([("A", "SELL", "1", "10", T0), ("A", "SELL", "2", "10", T0 + 100),
                    ("B", "BUY", "1", "10", T0 + 100)])
    assert force.tick(T0 - 1) == []
    assert [o[2] for o in force.tick(T0)] == ["1"]
    assert [(o[0], o[2]) for o in force.tick(T0 + 150)] == [("B", "1")]  # A waits a second
    force.schedule([("A", "SELL", "3", "10", T0 + 500)])  # overtakes A's "2"
    assert force.tick(T0 + 999) == []
    assert [o[2] for o in force.tick(T0 + THROTTLE_MS)] == ["3"]
    assert (force.sent, force.superseded) == (3, 1)
    force.schedule([("A", "SELL", "4", "10", T0 + 5000)])
    force.drop("A")
    assert force.tick(T0 + 6000) == []
    assert force.dropped == 1


def test_cascade_orders_sum_at_least_the_notional_one_second_apart() -> None:
    orders = cascade_orders("A", "SELL", 1_000_000, 4, 25.0, 3, 1, T0)
    assert [o[4] - T0 for o in orders] == [k * CASCADE_SPACING_MS for k in range(4)]
    notional = sum(float(o[2]) * float(o[3]) for o in orders)
    assert 1_000_000 <= notional <= 1_000_000 * 1.001
    assert [float(o[3]) for o in orders] == [25.0, 24.975, 24.95, 24.925]
    buys = cascade_orders("A", "BUY", 1000, 2, 25.0, 3, 0, T0)
    assert float(buys[1][3]) > float(buys[0][3])
    for side, notional_, n in (("UP", 1.0, 1), ("SELL", 0.0, 1), ("SELL", 1.0, 0),
                               ("SELL", math.nan, 1)):
        with pytest.raises(ValueError, match=r"side|notional|orders"):
            cascade_orders("A", side, notional_, n, 25.0, 3, 0, T0)


def test_market_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="tick_s"):
        TradeMarket([], tick_s=0)
    with pytest.raises(ValueError, match="trades_per_s"):
        TradeMarket([], trades_per_s=-1)
    market = TradeMarket(synthetic_board(4))
    assert market.trades_per_s == 5  # one a second per tradable contract (the quarterly too)
