"""The frame parser under property-based fuzzing, with an oracle: entries shaped like the
exchange's, each valid or spoiled in one field (a string, number, null, NaN, infinity, huge,
negative or zero price, a wrong type, a missing key, a symbol of any script), with extra
keys, deep nesting and huge arrays around them; arbitrary bytes and arbitrary JSON; and
valid frames mutated byte by byte.

Properties: the parser returns or raises ``MalformedFrame`` (nothing else); every tick it
returns passes ``check_ticks`` (finite price within the bounds, a symbol an alert id can
carry, an event time within the bounds and the clock); an entry spoiled in one field is
counted under its kind and never becomes a tick; and every valid entry beside it comes out,
in order, with exactly its values. Budgets: ``tests.support.fuzzing`` (short here,
``HYPOTHESIS_PROFILE=fuzz`` for the long run).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import ingestor.parsing as parsing
from common.schemas import FUNDING, LIQUIDATION, PRICE, SYMBOL_CHARS, Side, Tick
from ingestor.parsing import FrameParser, MalformedFrame
from tests.support.frames import NOW_MS, json_values, mini, parse_checked
from tests.support.fuzzing import budget, timeout

pytestmark = timeout()

# Event type → (Tick.source, the field its price is read from, the other price field).
EVENTS: Final = {"24hrMiniTicker": ("mini_ticker", "c", "p"),
                 "24hrTicker": ("ticker", "c", "p"),
                 "markPriceUpdate": ("mark_price", "p", "c"),
                 "trade": ("trade", "p", "c"), "aggTrade": ("agg_trade", "p", "c"),
                 "forceOrder": ("force_order", "ap", "c")}
KNOWN_FIELDS: Final = frozenset({"e", "E", "s", "c", "p", "q", "st", "X", "T", "a", "r", "o"})
# Numbers the JSON encoder cannot write: a sentinel string, replaced in the text.
HUGE: Final = "\x00huge\x00"
MINUS_HUGE: Final = "\x00-huge\x00"
_RAW_NUMBERS: Final = {json.dumps(HUGE): "1e999", json.dumps(MINUS_HUGE): "-1e999"}


def to_text(document: Any) -> str:
    text = json.dumps(document)
    for sentinel, number in _RAW_NUMBERS.items():
        text = text.replace(sentinel, number)
    return text


@dataclass(frozen=True)
class Case:
    """One entry and what the parser must make of it: a tick, "filtered", or a bad kind."""

    entry: Any
    outcome: Tick | str


# --- valid entries -------------------------------------------------------------------------

_symbol_shape: Final = re.compile(SYMBOL_CHARS)
good_symbols = (st.sampled_from(["BTCUSDT", "1000PEPEUSDT", "BTCUSDT_240329", "币安人生USDT",
                                 "A", "X" * parsing.MAX_SYMBOL_CHARS])
                | st.from_regex(_symbol_shape, fullmatch=True))
good_prices = st.floats(min_value=parsing.MIN_PRICE, max_value=parsing.MAX_PRICE)
good_event_times = (st.integers(min_value=0, max_value=NOW_MS + parsing.MAX_AHEAD_MS)
                    | st.sampled_from([0, NOW_MS, NOW_MS + parsing.MAX_AHEAD_MS]))
# Valid 24 h volumes and what they become: out of range (or NaN, inf) is "unknown".
volumes = (st.floats(allow_nan=True, allow_infinity=True)
           | st.sampled_from([0.0, parsing.MAX_QUOTE_VOLUME, -5.0, 1e16, 123456.75]))
extra_keys = st.text(max_size=6).filter(lambda key: key not in KNOWN_FIELDS)
order_extra_keys = st.text(max_size=6).filter(lambda key: key not in {"s", "S", "ap", "z", "T"})


def _volume(value: float) -> float | None:
    return value if 0.0 <= value <= parsing.MAX_QUOTE_VOLUME else None


@st.composite
def number_text(draw: st.DrawFn, value: float) -> Any:
    """``value`` as the exchange writes it (a decimal string) or as a JSON number."""
    return draw(st.sampled_from([repr(value), value] + ([int(value)] if value.is_integer()
                                                        and abs(value) < 2**53 else [])))


good_rates = st.floats(min_value=-parsing.MAX_FUNDING_RATE, max_value=parsing.MAX_FUNDING_RATE)
good_quantities = st.floats(min_value=1e-12, max_value=parsing.MAX_QUANTITY)
any_times = st.integers(min_value=0, max_value=parsing.MAX_EVENT_TIME_MS)


def _quantity(value: float) -> float | None:
    return value if 0.0 < value <= parsing.MAX_QUANTITY else None


@st.composite
def valid_cases(draw: st.DrawFn) -> Case:
    event = draw(st.sampled_from(sorted(EVENTS)))
    source, price_field, other_field = EVENTS[event]
    symbol, price, event_ms = draw(good_symbols), draw(good_prices), draw(good_event_times)
    if event == "forceOrder":
        side: Side = draw(st.sampled_from(["BUY", "SELL"]))
        filled = draw(good_quantities)
        order = {"s": symbol, "S": side, "ap": draw(number_text(price)),
                 "z": draw(number_text(filled)), "T": event_ms, "o": "LIMIT", "X": "FILLED"}
        order.update(draw(st.dictionaries(order_extra_keys, json_values, max_size=2)))
        entry: dict[str, Any] = {"e": event, "E": draw(any_times), "o": order}
        entry.update(draw(st.dictionaries(extra_keys, json_values, max_size=2)))
        return Case(entry, Tick(symbol, price, event_ms, source, kind=LIQUIDATION,
                                quantity=filled, side=side))
    entry = {"e": event, "E": event_ms, "s": symbol, price_field: draw(number_text(price))}
    if draw(st.booleans()):  # e.g. a ticker's price change, a mark price's index price
        entry[other_field] = draw(number_text(draw(st.floats(allow_nan=False,
                                                             allow_infinity=False))))
    volume = quantity = None
    if draw(st.booleans()):
        value = draw(volumes)
        entry["q"] = draw(st.sampled_from([repr(value), value] if math.isfinite(value)
                                          else [repr(value)]))
        if price_field == "c":
            volume = _volume(value)
        elif event in ("trade", "aggTrade"):
            quantity = _quantity(value)
    if draw(st.booleans()):
        entry["st"] = parsing.USDM_CONTRACT
    if source == "trade" and draw(st.booleans()):
        entry["X"] = "MARKET"
    entry.update(draw(st.dictionaries(extra_keys, json_values, max_size=3)))
    if event == "aggTrade":  # timed by the trade time T; E is only the send time
        entry["E"], entry["T"] = draw(any_times), event_ms
        entry["a"] = draw(st.integers(0, 2**63 - 1))
    if event == "markPriceUpdate":
        rate, next_funding = draw(good_rates), draw(any_times)
        entry["r"], entry["T"] = draw(number_text(rate)), next_funding
        return Case(entry, Tick(symbol, price, event_ms, source, kind=FUNDING,
                                funding_rate=rate, next_funding_ms=next_funding))
    return Case(entry, Tick(symbol, price, event_ms, source, volume, PRICE, quantity))


# --- one field spoiled ---------------------------------------------------------------------

_MISSING: Final = object()
_wrong_types = st.sampled_from([None, True, False, [], {}, [1.5], {"v": "1.5"}])
bad_prices = (st.sampled_from(["NaN", "nan", "inf", "-inf", "Infinity", "0", "0.0", "-0.0",
                               "-1.5", "1e-13", "1e-300", "5e-324", "1e13", "1e999", "abc",
                               "", "1,5", " 1.5", HUGE, MINUS_HUGE, 0, 0.0, -1, 10**400])
              | st.floats(max_value=0.0, allow_nan=False, allow_infinity=False)
              | st.floats(min_value=parsing.MAX_PRICE, exclude_min=True,
                          allow_infinity=False)
              | st.floats(min_value=0.0, max_value=parsing.MIN_PRICE, exclude_max=True)
              | _wrong_types | st.just(_MISSING))
bad_event_times = (st.sampled_from([-1, 2**63 - 1, 2**63, 2**64, 10**30, -(2**63) - 1,
                                    parsing.MAX_EVENT_TIME_MS + 1, 1.5, "soon", "", HUGE,
                                    MINUS_HUGE])
                   | st.integers(max_value=-1)
                   | st.integers(min_value=parsing.MAX_EVENT_TIME_MS + 1)
                   | _wrong_types)
bad_symbols = (st.sampled_from(["", "X" * (parsing.MAX_SYMBOL_CHARS + 1), "BTC:USDT", "BTC USDT",
                                "<b>BTC</b>", "BTCUSDT\n", "\x00", "a/b", 7, 1.5])
               | st.text(min_size=1, max_size=parsing.MAX_SYMBOL_CHARS).filter(
                   lambda s: _symbol_shape.fullmatch(s) is None)
               | _wrong_types.filter(lambda v: v is not None) | st.just(None))
_non_objects = st.sampled_from([17, "x", None, True, [], [mini("AUSDT")], 1.5])


# Where an event keeps the fields a spoiled case spoils: a forced order in its order "o".
_TIME_FIELD: Final = {"aggTrade": "T", "forceOrder": "T"}


@st.composite
def spoiled_cases(draw: st.DrawFn) -> Case:
    """A valid entry with one field made invalid, and the kind it is counted under."""
    case = draw(valid_cases())
    entry = dict(case.entry)
    event = entry["e"]
    _, price_field, other_field = EVENTS[event]
    # A forced order's symbol, price and time are in its order.
    target = entry
    if event == "forceOrder":
        target = entry["o"] = dict(entry["o"])
    whats = ["price", "other price", "E", "E ahead", "s", "e", "missing", "q", "st", "X",
             "not an object"]
    whats += {"aggTrade": ["a", "T"], "markPriceUpdate": ["r", "T"],
              "forceOrder": ["z", "S", "T", "o"]}.get(event, [])
    what = draw(st.sampled_from(whats))
    value: Any
    if what == "price":
        value, kind = draw(bad_prices), "bad_price"
        where, field = target, price_field
    elif what == "other price":  # not read, but not of its type either
        # (1e999 is infinite, a float like any other where the price is not read)
        value, kind = draw(st.sampled_from(["abc", "", "1,5", True, [], {}])), "bad_price"
        where, field = entry, other_field
    elif what == "E":
        value, kind, where, field = draw(bad_event_times), "bad_event_time", entry, "E"
    elif what == "E ahead":  # only when the parser is given the clock: see the test
        value = draw(st.integers(NOW_MS + parsing.MAX_AHEAD_MS + 1, parsing.MAX_EVENT_TIME_MS))
        kind, where, field = "event_time_ahead", target, _TIME_FIELD.get(event, "E")
    elif what == "s":
        value, kind, where, field = draw(bad_symbols), "bad_symbol", target, "s"
    elif what == "e":
        value, kind = draw(st.sampled_from([None, 7, [], {}, True])), "bad_field"
        where, field = entry, "e"
    elif what == "missing":
        value, kind = _MISSING, "bad_field"
        field = draw(st.sampled_from(["e", "E", "s"]))
        where = target if field == "s" else entry
    elif what == "q":
        value, kind = draw(st.sampled_from(["lots", "", True, [], {}])), "bad_field"
        where, field = entry, "q"
    elif what == "st":
        value, kind = draw(st.sampled_from(["one", 1.5, True, [], {}])), "bad_field"
        where, field = entry, "st"
    elif what == "X":
        value, kind = draw(st.sampled_from([7, True, [], {}])), "bad_field"
        where, field = entry, "X"
    elif what == "a":
        value = draw(st.sampled_from([_MISSING, None, "5", -1, 1.5, True, 2**63, 2**64, 10**30]))
        kind, where, field = "bad_field", entry, "a"
    elif what == "T":
        value = draw(bad_event_times | st.just(_MISSING))
        kind, where, field = "bad_event_time", target, "T"
        if event == "forceOrder" and value is _MISSING:
            kind = "bad_field"  # the order lacks a required field
    elif what == "r":
        value = draw(st.sampled_from([_MISSING, None, "abc", "NaN", "inf", HUGE, 1.5, -1.01])
                     | st.floats(min_value=parsing.MAX_FUNDING_RATE, exclude_min=True,
                                 allow_infinity=False))
        kind, where, field = "bad_field", entry, "r"
    elif what == "z":
        value = draw(st.sampled_from([_MISSING, None, "abc", "NaN", "0", "-2", 0, 1e16, HUGE]))
        kind, where, field = "bad_field", target, "z"
    elif what == "S":
        value = draw(st.sampled_from([_MISSING, None, "LONG", "buy", "", 1, []]))
        kind, where, field = "bad_field", target, "S"
    elif what == "o":
        value = draw(st.sampled_from([_MISSING, None, 7, "x", [], {}]))
        kind, where, field = "bad_field", entry, "o"
    else:
        return Case(draw(_non_objects), "bad_field")
    if value is _MISSING:
        where.pop(field, None)
        if field == price_field:
            kind = "bad_price"  # a missing price reads as none: a bad price
    else:
        where[field] = value
    return Case(entry, kind)


@st.composite
def filtered_cases(draw: st.DrawFn) -> Case:
    """Valid entries that are not a USDⓈ-M market price: counted as filtered, not bad."""
    entry = dict(draw(valid_cases()).entry)
    how = draw(st.sampled_from(["coin-m", "event", "trade type"]))
    if how == "coin-m":
        entry["st"] = draw(st.sampled_from([0, 2, 3, -1]))
    elif how == "event":
        entry["e"] = draw(st.sampled_from(["bookTicker", "depthUpdate", "kline", ""])
                          | st.text(max_size=12).filter(lambda e: e not in EVENTS))
    else:
        entry["e"] = "trade"
        entry["p"] = "1.5"
        entry.setdefault("s", "AUSDT")  # a forced order's is in its order
        entry["X"] = draw(st.sampled_from(["INSURANCE_FUND", "ADL", "NA", ""]))
    return Case(entry, "filtered")


any_cases = st.one_of(valid_cases(), spoiled_cases(), filtered_cases())


def _expected(cases: list[Case]) -> tuple[list[Tick], int, dict[str, int]]:
    ticks: list[Tick] = []
    filtered = 0
    bad: dict[str, int] = {}
    for case in cases:
        outcome = case.outcome
        if isinstance(outcome, Tick):
            ticks.append(outcome)
        elif outcome == "filtered":
            filtered += 1
        else:
            bad[outcome] = bad.get(outcome, 0) + 1
    return ticks, filtered, bad


def _frame(cases: list[Case], combined: bool, stream: str, single: bool) -> str:
    data: Any = [case.entry for case in cases]
    if single:
        data = data[0]
    return to_text({"stream": stream, "data": data} if combined else data)


def _single_ok(cases: list[Case]) -> bool:
    """One entry may be sent bare (a trade stream): only an object with an event type reads
    as one, anything else is the wrong shape of frame."""
    return len(cases) == 1 and isinstance(cases[0].entry, dict) and "e" in cases[0].entry


streams = st.sampled_from(["!miniTicker@arr", "!ticker@arr", "btcusdt@aggTrade",
                           "!forceOrder@arr", "!markPrice@arr@1s", ""]) | st.text(
    max_size=20)


# --- the properties ------------------------------------------------------------------------

@budget(150)
@given(cases=st.lists(any_cases, max_size=12), clock=st.booleans(), combined=st.booleans(),
       stream=streams, single=st.booleans())
@example(cases=[Case(mini("AUSDT", "1.5", q="20"), Tick("AUSDT", 1.5, NOW_MS, "mini_ticker",
                                                          20.0)),
                Case(mini("BUSDT", HUGE), "bad_price")], clock=False, combined=False,
         stream="", single=False).via("a price beyond a float lost the whole frame")
@example(cases=[Case(mini("AUSDT", "1.5", q=None), Tick("AUSDT", 1.5, NOW_MS, "mini_ticker")),
                Case(mini("BUSDT", "abc", v=HUGE), "bad_price")], clock=False, combined=True,
         stream="!miniTicker@arr", single=False).via("1e999 beside a bad entry lost the frame")
@example(cases=[Case(mini("A:B"), "bad_symbol"), Case(mini("A B"), "bad_symbol"),
                Case(mini("币安人生USDT", q=None), Tick("币安人生USDT", 1.5, NOW_MS,
                                                      "mini_ticker"))],
         clock=True, combined=False, stream="", single=False).via(
             "a symbol no alert id can carry became a tick")
def test_valid_entries_come_out_exactly_and_spoiled_ones_never(
        cases: list[Case], clock: bool, combined: bool, stream: str, single: bool) -> None:
    if not clock:  # without the clock an entry far ahead is a valid tick (a recording)
        cases = [c for c in cases if c.outcome != "event_time_ahead"]
    single = single and _single_ok(cases)
    frame = _frame(cases, combined, stream, single)
    parsed = parse_checked(FrameParser(combined), frame, NOW_MS if clock else None)
    assert parsed is not None, frame
    ticks, filtered, bad = _expected(cases)
    assert parsed.ticks == ticks
    assert (parsed.filtered, parsed.bad) == (filtered, bad)


@budget(10)
@given(good=valid_cases(), spoiled=st.lists(spoiled_cases(), min_size=1, max_size=3),
       size=st.integers(1000, 5000), at=st.lists(st.integers(0, 5000), min_size=3, max_size=3))
def test_a_huge_array_keeps_every_valid_entry(good: Case, spoiled: list[Case], size: int,
                                              at: list[int]) -> None:
    cases = [good] * size
    for case, index in zip(spoiled, at, strict=False):
        cases.insert(index % (len(cases) + 1), case)
    parsed = parse_checked(FrameParser(True), _frame(cases, True, "!miniTicker@arr", False),
                           NOW_MS)
    assert parsed is not None
    assert parsed.ticks == [good.outcome] * size
    assert parsed.bad_entries == len(spoiled)


@budget(30)
@given(case=valid_cases(), depth=st.integers(0, 3000), brackets=st.sampled_from(["[]", "{}"]),
       combined=st.booleans())
def test_deep_nesting_in_an_entry_is_that_entry_or_a_too_deep_frame(
        case: Case, depth: int, brackets: str, combined: bool) -> None:
    opening, closing = ('{"k":', "}") if brackets == "{}" else ("[", "]")
    value = opening * depth + "0" + closing * depth
    entry = json.dumps(case.entry)[:-1] + f', "deep": {value}}}'
    frame = f'{{"stream": "s", "data": [{entry}]}}' if combined else f"[{entry}]"
    if depth <= 200:  # a few hundred levels are well within the decoder's reach
        assert FrameParser(combined).parse(frame, NOW_MS).ticks == [case.outcome]
        return
    try:
        parsed = FrameParser(combined).parse(frame, NOW_MS)
    except MalformedFrame as exc:
        kind = exc.kind
    else:
        assert parsed.ticks == [case.outcome]
        return
    assert kind == "too_deep"


@budget(150)
@given(document=st.recursive(
    st.none() | st.booleans() | st.text(max_size=8) | st.integers()
    | st.floats() | st.sampled_from([HUGE, MINUS_HUGE]),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
        st.sampled_from(sorted(KNOWN_FIELDS | {"stream", "data", "result", "id"}))
        | st.text(max_size=4), inner, max_size=6), max_leaves=30),
    clock=st.booleans(), combined=st.booleans())
def test_any_json_document_is_ticks_or_malformed(document: Any, clock: bool,
                                                 combined: bool) -> None:
    # NaN and infinities are written as the bare words NaN and Infinity: not JSON at all.
    parse_checked(FrameParser(combined), to_text(document), NOW_MS if clock else None)


@budget(200)
@given(data=st.binary(max_size=2048) | st.text(max_size=512), combined=st.booleans())
def test_any_bytes_are_ticks_or_malformed(data: bytes | str, combined: bool) -> None:
    parse_checked(FrameParser(combined), data, NOW_MS)


@st.composite
def mutated(draw: st.DrawFn, frame: bytes) -> bytes:
    """``frame`` with a few byte-level mutations, as a coverage-guided fuzzer makes them."""
    data = bytearray(frame)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["flip", "delete", "insert", "copy", "token"]))
        if how == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif how == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif how == "copy" and data:
            start = draw(st.integers(0, len(data) - 1))
            data[at:at] = data[start:start + draw(st.integers(1, 64))]
        else:
            data[at:at] = draw(st.sampled_from([b"1e999", b"-", b"null", b"NaN", b'"', b",",
                                                b"[", b"}", b"\\ud800", b"\xff", b"0" * 30]))
    return bytes(data)


@budget(150)
@given(data=st.data(), cases=st.lists(st.one_of(valid_cases(), filtered_cases()),
                                      min_size=1, max_size=3),
       combined=st.booleans())
def test_mutated_bytes_of_a_valid_frame_are_ticks_or_malformed(
        data: st.DataObject, cases: list[Case], combined: bool) -> None:
    frame = _frame(cases, combined, "!miniTicker@arr", False).encode()
    parse_checked(FrameParser(combined), data.draw(mutated(frame)), NOW_MS)


@pytest.mark.parametrize("combined", [False, True])
def test_a_lone_surrogate_escape_is_a_malformed_frame(combined: bool) -> None:
    # msgspec refuses a lone UTF-16 surrogate: the frame is lost whole, but cleanly.
    frame = _frame([Case(mini("A\\ud800"), "bad_symbol")], combined, "s", False)
    frame = frame.replace("\\\\ud800", "\\ud800")
    with pytest.raises(MalformedFrame) as caught:
        FrameParser(combined).parse(frame)
    assert caught.value.kind in parsing.FRAME_KINDS
