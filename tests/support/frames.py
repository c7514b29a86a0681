"""Exchange frames for the parser's tests: entries as the exchange writes them, the
hypothesis strategies of hostile values, and the checks every parse must pass (the parser
raises only ``MalformedFrame``, and every tick it returns is one the pipeline can trust)."""

from __future__ import annotations

import json
import math
from typing import Any, Final

from hypothesis import strategies as st

import ingestor.parsing as parsing
from common.schemas import (
    FUNDING,
    LIQUIDATION,
    TICK_KINDS,
    Tick,
    decode_ticks,
    encode_ticks,
    is_alert_id,
)
from ingestor.parsing import FrameParser, MalformedFrame, ParsedFrame

NOW_MS: Final = 1_700_000_000_000
RAW: Final = FrameParser(combined=False)
COMBINED: Final = FrameParser(combined=True)


def mini(symbol: str, price: Any = "1.5", event_ms: Any = NOW_MS, **extra: Any) -> dict[str, Any]:
    return {"e": "24hrMiniTicker", "E": event_ms, "s": symbol, "c": price, "q": "20", **extra}


def frame_of(*entries: Any) -> str:
    """A raw array frame; big integers are written out in full, as a hostile peer would."""
    return json.dumps(list(entries))


def combined_frame(entries: Any, stream: str = "!miniTicker@arr") -> str:
    return json.dumps({"stream": stream, "data": entries})


def symbols(parsed: ParsedFrame) -> list[str]:
    return [t.symbol for t in parsed.ticks]


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# --- strategies ------------------------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.text(max_size=8)
           | st.integers(min_value=-(2**80), max_value=2**80)
           | st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=3), inner, max_size=4),
                           max_leaves=20)
numbers = (st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=False, allow_infinity=False)
           | st.sampled_from(["1.5", "1e-300", "5e-324", "1e400", "-2", "0", "NaN", "inf",
                              "abc", "", "1e12", "1e-12", "64000.10"]))
event_times = (st.integers(min_value=-(2**70), max_value=2**70)
               | st.integers(min_value=NOW_MS - 10**9, max_value=NOW_MS + 10**9)
               | st.sampled_from([2**63, 2**64, -1, 0, NOW_MS, 1.5, "123"]))
field_values: Final[dict[str, st.SearchStrategy[Any]]] = {
    "e": st.sampled_from(["24hrMiniTicker", "24hrTicker", "markPriceUpdate", "trade",
                          "aggTrade", "forceOrder", "bookTicker"]) | scalars,
    "E": event_times,
    "s": st.sampled_from(["BTCUSDT", "", "X" * 70]) | st.text(max_size=10) | scalars,
    "c": numbers, "p": numbers, "q": numbers,
    "st": st.sampled_from([1, 2, 2**64]) | scalars,
    "X": st.sampled_from(["MARKET", "INSURANCE_FUND"]) | scalars,
    "T": event_times, "a": st.integers(min_value=-(2**70), max_value=2**70) | scalars,
    "r": numbers,
    "o": st.fixed_dictionaries({}, optional={"s": st.sampled_from(["BTCUSDT", ""]) | scalars,
                                             "S": st.sampled_from(["BUY", "SELL"]) | scalars,
                                             "ap": numbers, "z": numbers, "T": event_times})
         | scalars,
}
# Entries shaped like the exchange's with hostile values; any field possibly missing; and
# anything at all.
entries = (st.fixed_dictionaries({"e": st.sampled_from(["24hrMiniTicker", "trade", "aggTrade",
                                                        "markPriceUpdate", "forceOrder"]),
                                  "E": event_times, "s": field_values["s"],
                                  "c": numbers, "p": numbers},
                                 optional={k: field_values[k]
                                           for k in ("q", "st", "X", "T", "a", "r", "o")})
           | st.fixed_dictionaries({}, optional=field_values) | json_values)


# --- checks ----------------------------------------------------------------------------------

def check_ticks(parsed: ParsedFrame, received_ms: int | None) -> None:
    """What every tick the parser returns must be, whatever the frame held."""
    latest = parsing.MAX_EVENT_TIME_MS
    if received_ms is not None:
        latest = min(latest, received_ms + parsing.MAX_AHEAD_MS)
    for tick in parsed.ticks:
        assert isinstance(tick, Tick)
        assert isinstance(tick.price, float)
        assert math.isfinite(tick.price)
        assert parsing.MIN_PRICE <= tick.price <= parsing.MAX_PRICE
        assert isinstance(tick.event_time_ms, int)
        assert 0 <= tick.event_time_ms <= latest
        assert 0 < len(tick.symbol) <= parsing.MAX_SYMBOL_CHARS
        # An alert on this symbol gets an id that the gateway takes back as a cursor.
        assert is_alert_id(f"{tick.symbol}:60:{tick.event_time_ms}"), tick.symbol
        volume = tick.quote_volume
        assert volume is None or 0 <= volume <= parsing.MAX_QUOTE_VOLUME
        assert tick.kind in TICK_KINDS
        quantity = tick.quantity
        assert quantity is None or 0 < quantity <= parsing.MAX_QUANTITY
        assert (tick.side in ("BUY", "SELL")) is (tick.kind == LIQUIDATION)
        if tick.kind == LIQUIDATION:
            assert quantity is not None
        assert (tick.funding_rate is not None) is (tick.kind == FUNDING)
        if tick.kind == FUNDING:
            assert abs(tick.funding_rate or 0.0) <= parsing.MAX_FUNDING_RATE
            next_funding = tick.next_funding_ms
            assert next_funding is not None
            assert 0 <= next_funding <= parsing.MAX_EVENT_TIME_MS
    assert parsed.filtered >= 0
    assert set(parsed.bad) <= set(parsing.ENTRY_KINDS)
    assert all(count > 0 for count in parsed.bad.values())
    assert decode_ticks(encode_ticks(parsed.ticks)) == parsed.ticks


def parse_checked(parser: FrameParser, frame: str | bytes,
                  received_ms: int | None) -> ParsedFrame | None:
    """The parse, checked: the frame's ticks, or None when the parser refused the whole
    frame with a ``MalformedFrame`` of a known kind; any other exception fails the test."""
    try:
        parsed = parser.parse(frame, received_ms)
    except MalformedFrame as exc:
        kind = exc.kind
    else:
        check_ticks(parsed, received_ms)
        return parsed
    assert kind in parsing.FRAME_KINDS
    return None
