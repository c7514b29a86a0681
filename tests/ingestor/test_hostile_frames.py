"""Hostile exchange data: whatever a frame holds, the parser returns or raises
``MalformedFrame``, and every tick it returns is one the rest of the pipeline can trust."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ingestor.parsing as parsing
from common.schemas import decode_ticks, encode_ticks
from ingestor.metrics import MALFORMED_KINDS
from ingestor.parsing import FrameParser, MalformedFrame
from tests.support.frames import (
    COMBINED,
    NOW_MS,
    RAW,
    frame_of,
    json_values,
    mini,
    nested,
    parse_checked,
    symbols,
)
from tests.support.frames import entries as hostile_entries

DEEP = 100_000  # beyond the decoder's depth limit on every Python this runs on


@pytest.mark.parametrize("parser", [RAW, COMBINED])
@pytest.mark.parametrize("where", ["whole payload", "unknown field", "known field"])
def test_a_frame_nested_too_deep_is_malformed_not_a_crash(parser: FrameParser,
                                                          where: str) -> None:
    good = json.dumps(mini("AUSDT"))
    deep = nested(DEEP)
    payload = {"whole payload": deep,
               "unknown field": f'[{good}, {good[:-1]}, "x": {deep}}}]',
               "known field": f'[{good}, {good[:-1]}, "c": {deep}}}]'}[where]
    frame = f'{{"stream": "!miniTicker@arr", "data": {payload}}}' if parser.combined else payload
    with pytest.raises(MalformedFrame) as caught:
        parser.parse(frame)
    assert caught.value.kind == "too_deep"


@pytest.mark.parametrize(("parser", "frame"), [(RAW, "0:"), (RAW, '{"e": 1} x'),
                                                (COMBINED, '{"stream": 1} }')])
def test_text_that_fails_the_types_before_the_syntax_is_not_json(parser: FrameParser,
                                                                 frame: str) -> None:
    # The typed decode stops at the first wrong type, before it reaches the bad syntax.
    with pytest.raises(MalformedFrame) as caught:
        parser.parse(frame)
    assert caught.value.kind == "not_json"


def test_a_few_hundred_levels_of_nesting_in_an_unknown_field_is_harmless() -> None:
    entry = json.dumps(mini("BUSDT"))[:-1] + f', "x": {nested(300)}}}'
    assert symbols(RAW.parse(f"[{json.dumps(mini('AUSDT'))}, {entry}]")) == ["AUSDT", "BUSDT"]


@pytest.mark.parametrize("event_ms", [2**63 - 1, 2**63, 2**64, 10**30, -1, -(2**63) - 1,
                                      parsing.MAX_EVENT_TIME_MS + 1])
def test_an_event_time_out_of_range_skips_only_that_entry(event_ms: int) -> None:
    frame = frame_of(mini("AUSDT"), mini("BUSDT", event_ms=event_ms), mini("CUSDT"))
    for received_ms in (None, NOW_MS):
        parsed = RAW.parse(frame, received_ms)
        assert symbols(parsed) == ["AUSDT", "CUSDT"]
        assert parsed.bad == {"bad_event_time": 1}
        assert decode_ticks(encode_ticks(parsed.ticks)) == parsed.ticks  # int64 on the bus


def test_an_event_time_too_far_ahead_of_the_clock_skips_only_that_entry() -> None:
    # Accepted, it would mute BUSDT for a day: later ticks look older and are dropped.
    limit = NOW_MS + parsing.MAX_AHEAD_MS
    frame = frame_of(mini("AUSDT"), mini("BUSDT", event_ms=NOW_MS + 86_400_000),
                     mini("CUSDT", event_ms=limit), mini("DUSDT", event_ms=limit + 1))
    parsed = RAW.parse(frame, received_ms=NOW_MS)
    assert symbols(parsed) == ["AUSDT", "CUSDT"]
    assert parsed.bad == {"event_time_ahead": 2}


def test_old_event_times_are_kept_for_replays_of_old_recordings() -> None:
    frame = frame_of(mini("AUSDT", event_ms=1_565_000_000_000), mini("BUSDT", event_ms=0))
    assert symbols(RAW.parse(frame, received_ms=NOW_MS)) == ["AUSDT", "BUSDT"]


def test_without_a_clock_only_the_absolute_bounds_apply() -> None:
    # A backtest reads a recording long after it was made: "now" means nothing there.
    frame = frame_of(mini("AUSDT", event_ms=NOW_MS + 86_400_000),
                     mini("BUSDT", event_ms=parsing.MAX_EVENT_TIME_MS),
                     mini("CUSDT", event_ms=parsing.MAX_EVENT_TIME_MS + 1))
    parsed = RAW.parse(frame)
    assert symbols(parsed) == ["AUSDT", "BUSDT"]
    assert parsed.bad == {"bad_event_time": 1}


@pytest.mark.parametrize("price", ["1e-300", "5e-324", "1e-13", "-0.0", "1e13", "1e300",
                                   1e-300, 2**64])
def test_a_price_out_of_range_skips_only_that_entry(price: Any) -> None:
    parsed = RAW.parse(frame_of(mini("AUSDT"), mini("BUSDT", price), mini("CUSDT")))
    assert symbols(parsed) == ["AUSDT", "CUSDT"]
    assert parsed.bad == {"bad_price": 1}


@pytest.mark.parametrize("price", [10**400, "1e999", "abc", [], True])
def test_a_price_that_is_no_float_is_a_bad_price_too(price: Any) -> None:
    parsed = RAW.parse(frame_of(mini("AUSDT"), mini("BUSDT", price), mini("CUSDT")))
    assert symbols(parsed) == ["AUSDT", "CUSDT"]
    assert parsed.bad == {"bad_price": 1}


@pytest.mark.parametrize(("field", "value", "kind"), [
    ("E", "soon", "bad_event_time"), ("E", 1.5, "bad_event_time"), ("s", 7, "bad_symbol"),
    ("e", None, "bad_field"), ("q", "lots", "bad_field"), ("st", "one", "bad_field")])
def test_a_field_of_the_wrong_type_is_counted_under_its_kind(field: str, value: Any,
                                                             kind: str) -> None:
    parsed = RAW.parse(frame_of(mini("AUSDT"), {**mini("BUSDT"), field: value}))
    assert symbols(parsed) == ["AUSDT"]
    assert parsed.bad == {kind: 1}


@pytest.mark.parametrize("price", ["1e-12", "0.00000001", "0.000012345", "123456.78901",
                                   "1e12"])
def test_real_prices_at_either_end_are_kept(price: str) -> None:
    [tick] = RAW.parse(frame_of(mini("AUSDT", price))).ticks
    assert tick.price == float(price)


@pytest.mark.parametrize("volume", ["1e300", "-5", "NaN", "inf", "1e16"])
def test_an_out_of_range_volume_is_unknown_not_trusted(volume: str) -> None:
    [tick] = RAW.parse(frame_of(mini("AUSDT", q=volume))).ticks
    assert tick.quote_volume is None


@pytest.mark.parametrize("symbol", ["", "X" * (parsing.MAX_SYMBOL_CHARS + 1)])
def test_an_empty_or_huge_symbol_skips_only_that_entry(symbol: str) -> None:
    parsed = RAW.parse(frame_of(mini("AUSDT"), mini(symbol), mini("CUSDT")))
    assert symbols(parsed) == ["AUSDT", "CUSDT"]
    assert parsed.bad == {"bad_symbol": 1}


def test_each_bad_entry_is_counted_under_its_own_kind() -> None:
    frame = frame_of(mini("AUSDT"), mini("BUSDT", "1e-300"), mini("CUSDT", event_ms=2**64),
                     mini("DUSDT", event_ms=NOW_MS + 86_400_000), {"e": "trade"}, 17,
                     mini(""), mini("EUSDT"))
    parsed = COMBINED.parse(json.dumps({"stream": "!miniTicker@arr",
                                        "data": json.loads(frame)}), received_ms=NOW_MS)
    assert symbols(parsed) == ["AUSDT", "EUSDT"]
    assert parsed.bad == {"bad_price": 1, "bad_event_time": 1, "event_time_ahead": 1,
                          "bad_field": 2, "bad_symbol": 1}
    assert parsed.bad_entries == 6


def test_every_kind_has_a_metric_label_from_the_start() -> None:
    assert set(parsing.FRAME_KINDS) | set(parsing.ENTRY_KINDS) == set(MALFORMED_KINDS)


# --- properties ------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=json_values, received_ms=st.none() | st.just(NOW_MS), combined=st.booleans())
def test_no_json_document_makes_the_parser_raise_anything_else(
        document: Any, received_ms: int | None, combined: bool) -> None:
    parse_checked(FrameParser(combined), json.dumps(document), received_ms)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=st.lists(hostile_entries, max_size=6), received_ms=st.none() | st.just(NOW_MS),
       combined=st.booleans())
def test_every_entry_is_a_tick_filtered_or_counted_bad(
        entries: list[Any], received_ms: int | None, combined: bool) -> None:
    frame = json.dumps({"stream": "!miniTicker@arr", "data": entries} if combined else entries)
    parsed = parse_checked(FrameParser(combined), frame, received_ms)
    assert parsed is not None  # an array of anything is a frame; only its entries can be bad
    assert len(parsed.ticks) + parsed.filtered + parsed.bad_entries == len(entries)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=60) | st.binary(max_size=60), combined=st.booleans())
def test_no_text_or_bytes_make_the_parser_raise_anything_else(text: str | bytes,
                                                              combined: bool) -> None:
    parse_checked(FrameParser(combined), text, NOW_MS)
