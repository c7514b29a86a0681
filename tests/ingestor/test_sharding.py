"""The board's plan (which stream on which connection) and the pacing of what we send."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingestor.sharding import (
    BOARD_STREAMS,
    MAX_PARAMS_PER_MESSAGE,
    MAX_URL_CHARS,
    SUBSCRIPTION_MESSAGES_PER_S,
    Pacer,
    Plan,
    describe,
    stream_url,
    subscription_messages,
    tradable_perpetuals,
    trade_stream,
)
from tests.support.fuzzing import budget

SYMBOLS = [f"S{i:03d}USDT" for i in range(650)]


def assignment(plan: Plan) -> dict[str, int]:
    return {stream: c for c, streams in plan.connections.items() for stream in streams}


def test_650_symbols_and_the_board_streams_make_4_connections() -> None:
    plan = Plan(200)
    changes = plan.update(SYMBOLS)
    assert sorted(changes.opened) == [0, 1, 2, 3]
    assert [len(changes.opened[c]) for c in range(4)] == [200, 200, 200, 52]
    assert set(BOARD_STREAMS) <= set(changes.opened[0])
    every = [s for c in range(4) for s in changes.opened[c]]
    assert sorted(every) == sorted([*BOARD_STREAMS, *map(trade_stream, SYMBOLS)])
    assert (changes.subscribe, changes.unsubscribe, changes.closed) == ({}, {}, ())
    assert changes.listed == tuple(SYMBOLS)
    assert "650 symbols on 4 connections" in describe(changes, plan)


def test_an_unchanged_board_changes_nothing() -> None:
    plan = Plan(200)
    plan.update(SYMBOLS)
    before = assignment(plan)
    changes = plan.update(reversed(SYMBOLS))
    assert (changes.subscribe, changes.unsubscribe, changes.opened, changes.closed,
            changes.listed, changes.delisted) == ({}, {}, {}, (), (), ())
    assert assignment(plan) == before


def test_a_listing_fills_a_connection_with_room_and_then_opens_one() -> None:
    plan = Plan(200)
    plan.update(SYMBOLS)
    changes = plan.update([*SYMBOLS, "NEWUSDT"])
    assert changes.subscribe == {3: ("newusdt@aggTrade",)}
    assert changes.opened == {}
    assert changes.listed == ("NEWUSDT",)
    more = [f"N{i:03d}USDT" for i in range(200)]
    changes = plan.update([*SYMBOLS, "NEWUSDT", *more])
    assert len(changes.subscribe[3]) == 200 - 53
    assert list(changes.opened) == [4]
    assert len(changes.opened[4]) == 53
    assert all(len(s) <= 200 for s in plan.connections.values())


def test_a_delisting_is_unsubscribed_where_it_was_and_its_room_reused() -> None:
    plan = Plan(200)
    plan.update(SYMBOLS)
    where = assignment(plan)[trade_stream(SYMBOLS[300])]
    changes = plan.update([s for s in SYMBOLS if s != SYMBOLS[300]])
    assert changes.unsubscribe == {where: (trade_stream(SYMBOLS[300]),)}
    assert changes.delisted == (SYMBOLS[300],)
    changes = plan.update([s for s in SYMBOLS if s != SYMBOLS[300]] + ["NEWUSDT"])
    assert changes.subscribe == {where: ("newusdt@aggTrade",)}


def test_a_connection_left_empty_is_closed() -> None:
    plan = Plan(200)
    plan.update(SYMBOLS)
    last = set(plan.connections[3])
    changes = plan.update([s for s in SYMBOLS if trade_stream(s) not in last])
    assert changes.closed == (3,)
    assert 3 not in changes.unsubscribe
    assert sorted(plan.connections) == [0, 1, 2]
    # Ids are not reused: a new connection is never mistaken for the one closed.
    assert plan.update([*SYMBOLS, *(f"X{i}" for i in range(300))]).opened.keys() == {4, 5}


def test_no_symbol_at_all_still_watches_the_board_streams() -> None:
    changes = Plan(200).update([])
    assert changes.opened == {0: BOARD_STREAMS}


def test_a_connection_must_hold_the_board_streams() -> None:
    with pytest.raises(ValueError, match="board streams"):
        Plan(1)


@budget(100)
@given(boards=st.lists(st.sets(st.sampled_from(SYMBOLS[:80])), min_size=1, max_size=6),
       capacity=st.integers(2, 30))
def test_any_sequence_of_boards_keeps_the_plan_exact_bounded_and_stable(
        boards: list[set[str]], capacity: int) -> None:
    plan = Plan(capacity)
    for board in boards:
        before = assignment(plan)
        changes = plan.update(board)
        after = assignment(plan)
        assert set(after) == set(BOARD_STREAMS) | {trade_stream(s) for s in board}
        assert all(0 < len(s) <= capacity for s in plan.connections.values())
        # Nothing that stayed moved, and the changes say exactly what happened.
        assert all(after[s] == c for s, c in before.items() if s in after)
        added = {(c, s) for c, streams in changes.subscribe.items() for s in streams}
        added |= {(c, s) for c, streams in changes.opened.items() for s in streams}
        assert added == {(c, s) for s, c in after.items() if s not in before}
        removed = {(c, s) for c, streams in changes.unsubscribe.items() for s in streams}
        assert removed | {(c, s) for s, c in before.items() if c in changes.closed} == {
            (c, s) for s, c in before.items() if s not in after}


def test_the_exchange_info_filter_keeps_trading_perpetuals() -> None:
    info: dict[str, Any] = {"symbols": [
        {"symbol": "BTCUSDT", "contractType": "PERPETUAL", "status": "TRADING"},
        {"symbol": "BTCUSDT_250328", "contractType": "CURRENT_QUARTER", "status": "TRADING"},
        {"symbol": "OLDUSDT", "contractType": "PERPETUAL", "status": "SETTLING"},
        {"symbol": "ETHUSDT", "contractType": "PERPETUAL", "status": "TRADING"},
        {"symbol": "", "contractType": "PERPETUAL", "status": "TRADING"},
        {"contractType": "PERPETUAL", "status": "TRADING"}, "junk"]}
    assert tradable_perpetuals(info) == ["BTCUSDT", "ETHUSDT"]
    bad: Any
    for bad in ({}, [], {"symbols": "x"}, None):
        with pytest.raises(ValueError, match="symbols"):
            tradable_perpetuals(bad)


def test_urls_name_the_streams_and_leave_the_rest_past_the_limit() -> None:
    url, rest = stream_url("ws://h/market", ["b@aggTrade", "!forceOrder@arr", "a@aggTrade"])
    assert url == "ws://h/market/stream?streams=!forceOrder@arr/a@aggTrade/b@aggTrade"
    assert rest == []
    many = [trade_stream(f"{'X' * 40}{i:04d}") for i in range(200)]
    url, rest = stream_url("ws://h/market", many)
    assert len(url) <= MAX_URL_CHARS
    assert rest
    assert len(url.split("=", 1)[1].split("/")) + len(rest) == 200
    unicode_url, _ = stream_url("ws://h/market", ["币安人生usdt@aggTrade"])
    assert unicode_url.isascii()


def test_subscription_messages_are_batched_with_increasing_ids() -> None:
    streams = [f"s{i:04d}@aggTrade" for i in range(450)]
    messages = subscription_messages("SUBSCRIBE", streams, 7)
    assert [m["id"] for m in messages] == [7, 8, 9]
    assert [len(m["params"]) for m in messages] == [MAX_PARAMS_PER_MESSAGE, 200, 50]
    assert [s for m in messages for s in m["params"]] == sorted(streams)
    assert {m["method"] for m in messages} == {"SUBSCRIBE"}


def simulate(requests: list[float]) -> list[float]:
    """When a pacer lets each of these requests go out (each as soon as allowed)."""
    pacer, now, sent = Pacer(), 0.0, []
    for at in sorted(requests):
        now = max(now, at)
        now += pacer.delay(now)
        pacer.sent(now)
        sent.append(now)
    return sent


@budget(200)
@given(requests=st.lists(st.floats(0, 20, allow_nan=False), max_size=60),
       offset=st.floats(0, 1))
def test_no_second_carries_more_than_5_messages_from_us(requests: list[float],
                                                         offset: float) -> None:
    sent = simulate(requests)
    assert len(sent) == len(requests)
    # Our (un)subscriptions: at most 3 in any rolling second...
    for i in range(len(sent) - SUBSCRIPTION_MESSAGES_PER_S):
        assert sent[i + SUBSCRIPTION_MESSAGES_PER_S] - sent[i] >= 1.0 - 1e-9
    # ...plus the client's ping (every 20 s) and a pong (the exchange pings every 3 min):
    control = [offset + 20 * k for k in range(3)] + [offset + 0.5]
    everything = sorted(sent + control)
    for start in everything:
        assert sum(1 for t in everything if start <= t < start + 1.0 - 1e-9) <= 5


def test_the_pacer_waits_only_when_the_window_is_full() -> None:
    pacer = Pacer(limit=3)
    for now in (0.0, 0.1, 0.2):
        assert pacer.delay(now) == 0.0
        pacer.sent(now)
    assert pacer.delay(0.3) == pytest.approx(0.7)
    assert pacer.delay(1.5) == 0.0
