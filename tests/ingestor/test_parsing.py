from __future__ import annotations

import json
from typing import Any

import pytest

from common.schemas import Tick
from ingestor.parsing import FrameParser, MalformedFrame, is_combined


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


def test_mark_price_uses_p_not_capital_p() -> None:
    frame = json.dumps([mark("BTCUSDT", "64001.5", 99)])
    assert RAW.parse(frame).ticks == [Tick("BTCUSDT", 64001.5, 99, "mark_price")]


def test_per_symbol_trade_and_agg_trade_single_objects() -> None:
    trade = {"e": "trade", "E": 11, "T": 10, "s": "BTCUSDT", "t": 1, "p": "64000.0",
             "q": "0.1", "X": "MARKET", "m": False}
    agg = {"e": "aggTrade", "E": 12, "a": 5, "s": "BTCUSDT", "p": "64000.5", "q": "3",
           "f": 1, "l": 2, "T": 10, "m": True}
    assert RAW.parse(json.dumps(trade)).ticks == [Tick("BTCUSDT", 64000.0, 11, "trade")]
    assert COMBINED.parse(wrap("btcusdt@aggTrade", agg)).ticks == [
        Tick("BTCUSDT", 64000.5, 12, "agg_trade")]


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
    (RAW, '{"result":null,"id":1}', "wrong_shape"),
    (COMBINED, '{"result":null,"id":1}', "wrong_shape"),
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
