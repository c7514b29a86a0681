from __future__ import annotations

import json
from typing import Any

import pytest

from common.schemas import FUNDING, LIQUIDATION, PRICE, Tick
from ingestor.parsing import Dedupe, FrameParser, MalformedFrame, is_combined


def mini(symbol: str, price: str, event_ms: int = 1_700_000_000_000,
         **extra: Any) -> dict[str, Any]:
    return {"e": "24hrMiniTicker", "E": event_ms, "s": symbol, "c": price, "o": "1.0",
            "h": "2.0", "l": "0.5", "v": "10", "q": "20", **extra}


def ticker(symbol: str, price: str, change: str, event_ms: int) -> dict[str, Any]:
    return {"e": "24hrTicker", "E": event_ms, "s": symbol, "p": change, "P": "1.5",
            "w": "9.9", "c": price, "Q": "3", "o": "9.0", "h": "11", "l": "8", "v": "1",
            "q": "10", "O": 0, "C": event_ms, "F": 1, "L": 2, "n": 2, "st": 1, "ps": symbol}


def mark(symbol: str, price: str, event_ms: int) -> dict[str, Any]:
    return {"e": "markPriceUpdate", "E": event_ms, "s": symbol, "p": price, "ap": price,
            "P": "99999", "i": "1.0", "r": "0.0001", "T": event_ms + 1000}


def wrap(stream: str, data: Any) -> str:
    return json.dumps({"stream": stream, "data": data})


RAW = FrameParser(combined=False)
COMBINED = FrameParser(combined=True)


@pytest.mark.parametrize(("url", "expected"), [
    ("wss://fstream.binance.com/market/stream?streams=!miniTicker@arr", True),
    ("wss://fstream.binance.com/market/stream?streams=a@trade/b@trade", True),
    ("wss://fstream.binance.com/market/ws/!miniTicker@arr", False),
    ("ws://127.0.0.1:9/market/ws/btcusdt@aggTrade", False),
    ("wss://fstream.binance.com/stream?streams=!miniTicker@arr", True),
    ("wss://fstream.binance.com/ws/!ticker@arr", False),
])
def test_the_url_decides_combined_or_raw(url: str, expected: bool) -> None:
    assert is_combined(url) is expected


def test_raw_mini_ticker_array() -> None:
    frame = json.dumps([mini("BTCUSDT", "64000.10", 1_700_000_000_123),
                        mini("ETHUSDT", "3000.5", 1_700_000_000_124)])
    parsed = RAW.parse(frame)
    assert parsed.ticks == [Tick("BTCUSDT", 64000.10, 1_700_000_000_123, "mini_ticker", 20.0),
                            Tick("ETHUSDT", 3000.5, 1_700_000_000_124, "mini_ticker", 20.0)]
    assert (parsed.filtered, parsed.bad_entries) == (0, 0)


def test_combined_mini_ticker_array_and_bytes_input() -> None:
    frame = wrap("!miniTicker@arr", [mini("BTCUSDT", "1.5", 7), mini("XRPUSDT", "0.51", 8)])
    for candidate in (frame, frame.encode()):
        parsed = COMBINED.parse(candidate)
        assert [(t.symbol, t.price, t.event_time_ms) for t in parsed.ticks] == [
            ("BTCUSDT", 1.5, 7), ("XRPUSDT", 0.51, 8)]


def test_ticker_uses_last_price_not_price_change() -> None:
    # In a 24hrTicker "p" is the 24 h price change; reading it as the price would be a bug.
    frame = wrap("!ticker@arr", [ticker("SOLUSDT", "150.25", "-3.75", 42)])
    assert COMBINED.parse(frame).ticks == [Tick("SOLUSDT", 150.25, 42, "ticker", 10.0)]


def test_the_24h_quote_volume_comes_from_tickers_only() -> None:
    frame = json.dumps([mini("A", "1.5", q="123456.75"), mini("B", "2", q="NaN"),
                        {k: v for k, v in mini("C", "3").items() if k != "q"}])
    assert [t.quote_volume for t in RAW.parse(frame).ticks] == [123456.75, None, None]
    trade = {"e": "trade", "E": 11, "s": "A", "p": "64000.0", "q": "0.5", "X": "MARKET"}
    [tick] = RAW.parse(json.dumps(trade)).ticks
    assert tick.quote_volume is None  # a trade's q is its quantity, not a volume


def agg(symbol: str, agg_id: int, price: str = "64000.5", trade_ms: int = 10,
        quantity: str = "3") -> dict[str, Any]:
    return {"e": "aggTrade", "E": trade_ms + 2, "a": agg_id, "s": symbol, "p": price,
            "q": quantity, "f": 1, "l": 2, "T": trade_ms, "m": True}


def force(symbol: str, trade_ms: int, side: str = "SELL", average: str = "9910",
          filled: str = "0.014") -> dict[str, Any]:
    return {"e": "forceOrder", "E": trade_ms + 3, "o": {
        "s": symbol, "S": side, "o": "LIMIT", "f": "IOC", "q": "0.014", "p": "9900",
        "ap": average, "X": "FILLED", "l": "0.014", "z": filled, "T": trade_ms}}


def test_a_mark_price_is_a_funding_tick_with_p_not_capital_p() -> None:
    # No price tick: a mark price is an index of the exchange's, not a trade.
    frame = json.dumps([mark("BTCUSDT", "64001.5", 99)])
    assert RAW.parse(frame).ticks == [
        Tick("BTCUSDT", 64001.5, 99, "mark_price", kind=FUNDING, funding_rate=0.0001,
             next_funding_ms=1099)]


def test_mark_price_array_on_the_combined_route() -> None:
    frame = wrap("!markPrice@arr@1s", [mark("BTCUSDT", "64001.5", 99),
                                       {**mark("ETHUSDT", "3000", 99), "r": "-0.00375"}])
    parsed = COMBINED.parse(frame)
    assert [(t.symbol, t.kind, t.funding_rate) for t in parsed.ticks] == [
        ("BTCUSDT", FUNDING, 0.0001), ("ETHUSDT", FUNDING, -0.00375)]


@pytest.mark.parametrize("spoil", [{"r": None}, {"r": "abc"}, {"r": "1.5"}, {"r": "NaN"},
                                   {"T": None}, {"T": -1}])
def test_a_mark_price_without_a_usable_rate_or_funding_time_is_bad(
        spoil: dict[str, Any]) -> None:
    entry = {k: v for k, v in {**mark("AUSDT", "1", 5), **spoil}.items() if v is not None}
    parsed = RAW.parse(json.dumps([mark("BUSDT", "2", 5), entry]))
    assert [t.symbol for t in parsed.ticks] == ["BUSDT"]
    assert parsed.bad_entries == 1


def test_per_symbol_trade_and_agg_trade_single_objects() -> None:
    trade = {"e": "trade", "E": 11, "T": 10, "s": "BTCUSDT", "t": 1, "p": "64000.0",
             "q": "0.1", "X": "MARKET", "m": False}
    assert RAW.parse(json.dumps(trade)).ticks == [
        Tick("BTCUSDT", 64000.0, 11, "trade", quantity=0.1)]
    # An aggregate trade is timed by its trade time T, not by the send time E.
    assert COMBINED.parse(wrap("btcusdt@aggTrade", agg("BTCUSDT", 5))).ticks == [
        Tick("BTCUSDT", 64000.5, 10, "agg_trade", kind=PRICE, quantity=3.0)]


@pytest.mark.parametrize(("spoil", "kind"), [
    ({"a": None}, "bad_field"), ({"a": "5"}, "bad_field"), ({"a": -1}, "bad_field"),
    ({"a": 1.5}, "bad_field"), ({"T": None}, "bad_event_time"), ({"T": "x"}, "bad_event_time"),
    ({"p": "0"}, "bad_price")])
def test_an_agg_trade_needs_its_id_and_trade_time(spoil: dict[str, Any], kind: str) -> None:
    entry = {k: v for k, v in {**agg("AUSDT", 5), **spoil}.items() if v is not None}
    parsed = RAW.parse(json.dumps([agg("BUSDT", 1), entry]))
    assert [t.symbol for t in parsed.ticks] == ["BUSDT"]
    assert parsed.bad == {kind: 1}


@pytest.mark.parametrize("quantity", ["0", "-1", "NaN", "1e16"])
def test_a_trade_quantity_out_of_bounds_is_unknown_and_the_price_kept(quantity: str) -> None:
    [tick] = RAW.parse(json.dumps(agg("AUSDT", 5, quantity=quantity))).ticks
    assert (tick.price, tick.quantity) == (64000.5, None)


def test_a_forced_order_is_a_liquidation_tick() -> None:
    frame = wrap("!forceOrder@arr", force("BTCUSDT", 1_568_014_460_893))
    assert COMBINED.parse(frame).ticks == [
        Tick("BTCUSDT", 9910.0, 1_568_014_460_893, "force_order", kind=LIQUIDATION,
             quantity=0.014, side="SELL")]
    [tick] = RAW.parse(json.dumps(force("ETHUSDT", 7, "BUY", "3000.5", "2.5"))).ticks
    assert (tick.side, tick.price, tick.quantity, tick.event_time_ms) == ("BUY", 3000.5, 2.5, 7)


@pytest.mark.parametrize(("spoil", "kind"), [
    ({"ap": "0"}, "bad_price"), ({"ap": "abc"}, "bad_price"), ({"z": "0"}, "bad_field"),
    ({"z": "NaN"}, "bad_field"), ({"S": "LONG"}, "bad_field"), ({"T": -5}, "bad_event_time"),
    ({"s": "A:B"}, "bad_symbol"), ({"s": ""}, "bad_symbol"), ({"T": None}, "bad_field"),
    ({"ap": None}, "bad_price")])
def test_a_forced_order_spoiled_in_one_field_is_that_entry_only(spoil: dict[str, Any],
                                                               kind: str) -> None:
    entry = force("AUSDT", 5)
    entry["o"] = {k: v for k, v in {**entry["o"], **spoil}.items() if v is not None}
    parsed = RAW.parse(json.dumps([force("BUSDT", 5), entry]))
    assert [t.symbol for t in parsed.ticks] == ["BUSDT"]
    assert parsed.bad == {kind: 1}


def test_a_forced_order_without_its_order_is_bad() -> None:
    parsed = RAW.parse(json.dumps([{"e": "forceOrder", "E": 5}, {"e": "forceOrder", "E": 5,
                                                                 "o": "x"}]))
    assert (parsed.ticks, parsed.bad) == ([], {"bad_field": 2})


def test_a_liquidation_ahead_of_the_clock_is_skipped() -> None:
    parsed = RAW.parse(json.dumps(force("AUSDT", 1_000_000_000)), received_ms=1000)
    assert (parsed.ticks, parsed.bad) == ([], {"event_time_ahead": 1})


def test_dedupe_drops_what_another_connection_delivered_first() -> None:
    dedupe = Dedupe()
    first, second = FrameParser(True, dedupe), FrameParser(True, dedupe)
    trades = [wrap("btcusdt@aggTrade", agg("BTCUSDT", a, trade_ms=100 + a)) for a in range(6)]
    got = [t.event_time_ms for f in trades[:4] for t in first.parse(f).ticks]
    # The second connection starts a little behind the first, then gets ahead of it.
    again = [second.parse(f) for f in trades[2:6]]
    assert [p.duplicates for p in again] == [1, 1, 0, 0]
    got += [t.event_time_ms for p in again for t in p.ticks]
    assert got == [100, 101, 102, 103, 104, 105]
    assert first.parse(trades[5]).duplicates == 1
    # Other symbols, kinds and same-millisecond trades are no duplicates.
    assert len(first.parse(wrap("ethusdt@aggTrade", agg("ETHUSDT", 1, trade_ms=1))).ticks) == 1
    assert len(first.parse(wrap("btcusdt@aggTrade", agg("BTCUSDT", 9, trade_ms=105))).ticks) == 1
    for parser, dup in ((first, 0), (second, 1)):
        for entry in (force("BTCUSDT", 50), [mark("BTCUSDT", "1", 60)]):
            assert parser.parse(wrap("s", entry)).duplicates == dup
    # A ticker seen twice is the same price at the same time: harmless, and kept.
    assert [first.parse(wrap("s", [mini("BTCUSDT", "1", 70)])).duplicates
            for _ in range(2)] == [0, 0]


def test_a_replayed_pass_with_later_times_is_no_duplicate() -> None:
    # binance-alerter replay moves E and T forward on each pass; the ids stay.
    parser = FrameParser(False, Dedupe())
    assert len(parser.parse(json.dumps(agg("AUSDT", 900, trade_ms=10))).ticks) == 1
    assert len(parser.parse(json.dumps(agg("AUSDT", 1, trade_ms=20))).ticks) == 1


def test_no_dedupe_without_one() -> None:
    frame = json.dumps(agg("AUSDT", 1))
    assert [len(RAW.parse(frame).ticks) for _ in range(2)] == [1, 1]


@pytest.mark.parametrize("reply", ['{"result":null,"id":1}', '{"result":["a@aggTrade"],"id":3}',
                                   '{"error":{"code":2,"msg":"Invalid request"},"id":4}'])
@pytest.mark.parametrize("parser", [RAW, COMBINED])
def test_replies_to_our_requests_are_neither_data_nor_malformed(parser: FrameParser,
                                                                reply: str) -> None:
    parsed = parser.parse(reply)
    assert parsed.ticks == []
    assert parsed.reply == json.loads(reply)


def test_insurance_fund_trades_are_filtered() -> None:
    trade = {"e": "trade", "E": 11, "s": "BTCUSDT", "p": "50000", "X": "INSURANCE_FUND"}
    parsed = RAW.parse(json.dumps(trade))
    assert (parsed.ticks, parsed.filtered, parsed.bad_entries) == ([], 1, 0)


def test_event_time_comes_from_capital_e() -> None:
    entry = {"e": "trade", "E": 1_700_000_000_555, "T": 1_600_000_000_000, "s": "A",
             "p": "1"}
    assert RAW.parse(json.dumps(entry)).ticks[0].event_time_ms == 1_700_000_000_555


def test_coin_m_entries_are_filtered_and_missing_st_kept() -> None:
    frame = wrap("!miniTicker@arr", [
        mini("BTCUSDT", "64000", st=1, ps="BTCUSDT"),
        mini("BTCUSD_PERP", "64010", st=2, ps="BTCUSD"),
        mini("ETHUSDT", "3000"),  # older recordings have no "st"
        mini("ETHUSD_PERP", "3001", st=2, ps="ETHUSD"),
    ])
    parsed = COMBINED.parse(frame)
    assert [t.symbol for t in parsed.ticks] == ["BTCUSDT", "ETHUSDT"]
    assert (parsed.filtered, parsed.bad_entries) == (2, 0)


def test_other_event_types_on_a_combined_connection_are_filtered() -> None:
    book = {"e": "bookTicker", "u": 1, "s": "SUSHIUSDT", "b": "7.6", "B": "2", "a": "7.7",
            "A": "3", "T": 1, "E": 2}
    parsed = COMBINED.parse(wrap("sushiusdt@bookTicker", book))
    assert (parsed.ticks, parsed.filtered, parsed.bad_entries) == ([], 1, 0)


@pytest.mark.parametrize("bad", ["abc", "nan", "NaN", "inf", "-1", "0", "0.0", "", "1e999"])
def test_a_bad_price_skips_only_that_entry(bad: str) -> None:
    frame = wrap("!miniTicker@arr", [mini("AUSDT", "1.25", 5), mini("BUSDT", bad, 5),
                                     mini("CUSDT", "2.5", 5)])
    parsed = COMBINED.parse(frame)
    assert [(t.symbol, t.price) for t in parsed.ticks] == [("AUSDT", 1.25), ("CUSDT", 2.5)]
    assert parsed.bad_entries == 1


@pytest.mark.parametrize("missing", ["c", "s", "E"])
def test_a_missing_field_skips_only_that_entry(missing: str) -> None:
    broken = mini("BUSDT", "3", 5)
    del broken[missing]
    frame = json.dumps([mini("AUSDT", "1", 5), broken, mini("CUSDT", "2", 5)])
    parsed = RAW.parse(frame)
    assert [t.symbol for t in parsed.ticks] == ["AUSDT", "CUSDT"]
    assert parsed.bad_entries == 1


def test_a_non_object_entry_is_a_bad_entry() -> None:
    parsed = RAW.parse(json.dumps([mini("AUSDT", "1", 5), 17, "x"]))
    assert [t.symbol for t in parsed.ticks] == ["AUSDT"]
    assert parsed.bad_entries == 2


def test_numeric_prices_are_accepted() -> None:
    entry = mini("AUSDT", "1", 5)
    entry["c"] = 1.75
    assert RAW.parse(json.dumps([entry])).ticks[0].price == 1.75


def test_prices_keep_their_decimal_value() -> None:
    parsed = RAW.parse(json.dumps([mini("AUSDT", "0.000012345", 5),
                                   mini("BUSDT", "123456.78901", 5)]))
    assert [t.price for t in parsed.ticks] == [0.000012345, 123456.78901]


@pytest.mark.parametrize(("parser", "frame", "kind"), [
    (RAW, "this is {not json", "not_json"),
    (COMBINED, "hello", "not_json"),
    (RAW, json.dumps([mini("AUSDT", "1")])[:40], "truncated"),
    (COMBINED, wrap("!miniTicker@arr", [mini("AUSDT", "1")])[:-3], "truncated"),
    (RAW, b"\x00\xff\x8bbinary-garbage\x00", "binary"),
    (RAW, '{"result":null}', "wrong_shape"),
    (COMBINED, '{"id":1}', "wrong_shape"),
    (RAW, '{"foo":1}', "wrong_shape"),
    (COMBINED, '{"stream":"!miniTicker@arr"}', "wrong_shape"),
    (COMBINED, json.dumps([mini("AUSDT", "1")]), "wrong_shape"),  # raw frame, combined URL
    (RAW, '"just a string"', "wrong_shape"),
    (RAW, "42", "wrong_shape"),
])
def test_malformed_frames_raise_with_a_kind(parser: FrameParser, frame: str | bytes,
                                            kind: str) -> None:
    with pytest.raises(MalformedFrame) as caught:
        parser.parse(frame)
    assert caught.value.kind == kind


def test_an_empty_array_is_a_valid_empty_frame() -> None:
    parsed = RAW.parse("[]")
    assert (parsed.ticks, parsed.filtered, parsed.bad_entries) == ([], 0, 0)
