"""Payload shapes per stream, checked by decoding what the renderer produced."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from fake_exchange import Quote
from fake_exchange.frames import (
    HOSTILE_DEPTH,
    MALFORMED_KINDS,
    Renderer,
    StreamSpec,
    combined,
    decimals_for,
    malformed,
    parse_stream,
    restamp,
)

FRAME = [
    Quote("BTCUSDT", 61800.3, 1_700_000_000_123),
    Quote("PEPEUSDT", 0.0000123456, 1_700_000_000_123),
    Quote("BTCUSD_PERP", 61790.0, 1_700_000_000_123, contract_type=2),
]


def _render(stream: str, frame: list[Quote] = FRAME) -> list[dict[str, Any]]:
    r = Renderer()
    r.apply(frame)
    spec = parse_stream(stream)
    assert spec is not None
    payload = r.payload(spec, frame)
    assert payload is not None
    data: Any = json.loads(payload)
    return data if isinstance(data, list) else [data]


def test_parse_stream() -> None:
    assert parse_stream("!miniTicker@arr") == StreamSpec("miniTicker")
    assert parse_stream("!markPrice@arr") == parse_stream("!markPrice@arr@1s")
    assert parse_stream("btcusdt@aggTrade") == StreamSpec("aggTrade", "BTCUSDT")
    assert parse_stream("btcusdt@depth") is None
    assert parse_stream("!bookTicker") is None


def test_mini_ticker_entries() -> None:
    entries = _render("!miniTicker@arr")
    assert [e["s"] for e in entries] == ["BTCUSDT", "PEPEUSDT", "BTCUSD_PERP"]
    for e, q in zip(entries, FRAME, strict=True):
        assert e["e"] == "24hrMiniTicker"
        assert e["E"] == q.event_time_ms
        assert isinstance(e["c"], str)
        assert float(e["c"]) == pytest.approx(q.price, rel=1e-7)
        assert e["st"] == q.contract_type
        for k in ("o", "h", "l", "v", "q"):
            assert isinstance(e[k], str)
            float(e[k])
    assert entries[0]["c"] == "61800.300"  # fixed scale, decimal string, no exponent
    assert "e" not in str(entries[1]["c"])
    assert entries[2]["ps"] == "BTCUSD"
    assert entries[0]["ps"] == "BTCUSDT"


def test_ticker_and_mark_price_entries() -> None:
    t = _render("!ticker@arr")[0]
    assert t["e"] == "24hrTicker"
    for k in "pPwQohlvqOCFLn":
        assert k in t
    assert float(t["c"]) == pytest.approx(61800.3)
    assert t["C"] == t["E"]
    m = _render("!markPrice@arr@1s")[0]
    assert m["e"] == "markPriceUpdate"
    assert float(m["p"]) == pytest.approx(61800.3)
    assert "c" not in m
    assert m["r"] == "0.00010000"
    assert m["T"] > m["E"]


def test_stats_track_high_and_low() -> None:
    r = Renderer()
    spec = StreamSpec("miniTicker")
    for price in (100.0, 104.0, 97.0, 101.0):
        frame = [Quote("XUSDT", price, 1)]
        r.apply(frame)
        payload = r.payload(spec, frame)
    assert payload is not None
    e = json.loads(payload)[0]
    assert (e["o"], e["h"], e["l"], e["c"]) == ("100.00000", "104.00000", "97.00000", "101.00000")


def test_per_symbol_trade_only_when_present() -> None:
    r = Renderer()
    r.apply(FRAME)
    assert r.payload(StreamSpec("trade", "ETHUSDT"), FRAME) is None
    payload = r.payload(StreamSpec("aggTrade", "BTCUSDT"), FRAME)
    assert payload is not None
    agg = json.loads(payload)
    assert (agg["e"], agg["s"], float(agg["p"])) == ("aggTrade", "BTCUSDT", 61800.3)
    assert r.payload(StreamSpec("miniTicker"), []) is None


def test_wall_clock_override_and_combined_wrapper() -> None:
    r = Renderer()
    r.apply(FRAME)
    payload = r.payload(StreamSpec("miniTicker"), FRAME, event_ms=42)
    assert payload is not None
    msg = json.loads(combined('we"ird', payload))
    assert msg["stream"] == 'we"ird'
    assert {e["E"] for e in msg["data"]} == {42}


@pytest.mark.parametrize(("stream", "stamped"), [
    ("!miniTicker@arr", {"E"}), ("!ticker@arr", {"E", "C"}), ("btcusdt@trade", {"E", "T"}),
    ("btcusdt@aggTrade", {"E", "T"}), ("!markPrice@arr", {"E"}),
])
def test_restamp_moves_every_event_time_field_and_nothing_else(stream: str,
                                                               stamped: set[str]) -> None:
    r = Renderer()
    r.apply(FRAME)
    spec = parse_stream(stream)
    assert spec is not None
    rendered = r.payload(spec, FRAME, event_ms=1_700_000_000_001)
    assert rendered is not None
    before: Any = json.loads(rendered)
    after: Any = json.loads(restamp(rendered, 1_700_000_000_001, 1_700_000_000_009))
    for old, new in zip(before if isinstance(before, list) else [before],
                        after if isinstance(after, list) else [after], strict=True):
        changed = {k for k in old if old[k] != new[k]}
        assert changed == stamped
        assert all(new[k] == 1_700_000_000_009 for k in stamped)


def test_decimals() -> None:
    assert decimals_for(61800.3) == 3
    assert decimals_for(0.001) == 10
    assert decimals_for(1.2e-9) == 12
    assert decimals_for(3.5) == 7


def test_malformed_kinds() -> None:
    r = Renderer()
    spec = StreamSpec("miniTicker")
    out = {
        k: malformed(k, spec, "!miniTicker@arr", is_combined=True, renderer=r, sample=FRAME[:2])
        for k in MALFORMED_KINDS
    }
    with pytest.raises(json.JSONDecodeError):
        json.loads(out["not_json"][0])
    assert out["binary"][1] is False
    with pytest.raises(UnicodeDecodeError):
        out["binary"][0].decode()
    truncated = out["truncated"][0].decode()
    assert truncated.startswith('{"stream":"!miniTicker@arr","data":[{')
    with pytest.raises(json.JSONDecodeError):
        json.loads(truncated)
    bad = json.loads(out["bad_price"][0])["data"]
    assert [e["c"] for e in bad].count("abc") == 1
    assert sum(1 for e in bad if e["c"] != "abc") == 1
    assert "data" not in json.loads(out["wrong_shape"][0])
    raw, _ = malformed("wrong_shape", spec, "x", is_combined=False, renderer=r, sample=FRAME)
    assert json.loads(raw) == {"foo": 1}
    mark, _ = malformed(
        "bad_price", StreamSpec("markPrice"), "m", is_combined=False, renderer=r, sample=FRAME
    )
    assert [e["p"] for e in json.loads(mark)].count("abc") == 1
    with pytest.raises(ValueError, match="unknown malformed kind"):
        malformed("nope", spec, "x", is_combined=False, renderer=r, sample=FRAME)


@pytest.mark.parametrize("stream", ["!miniTicker@arr", "!markPrice@arr", "btcusdt@trade"])
def test_hostile_kinds_change_only_the_last_entry(stream: str) -> None:
    spec = parse_stream(stream)
    assert spec is not None
    r = Renderer()
    out = {
        k: json.loads(malformed(k, spec, stream, is_combined=True, renderer=r, sample=FRAME[:2])[0])
        for k in ("tiny_price", "huge_event_time", "future_event_time")
    }
    price = "c" if spec.kind == "miniTicker" else "p"
    entries = {k: v["data"] if isinstance(v["data"], list) else [v["data"]] for k, v in out.items()}
    assert entries["tiny_price"][-1][price] == "1e-300"
    assert entries["huge_event_time"][-1]["E"] == 2**64
    day_ahead = time.time() * 1000 + 86_400_000
    assert abs(entries["future_event_time"][-1]["E"] - day_ahead) < 60_000
    for kind, bad in entries.items():
        assert all(e["E"] == 1_700_000_000_123 for e in bad[:-1]), kind  # the rest untouched
        assert all(float(e[price]) > 1e-12 for e in bad[:-1]), kind
    deep, text = malformed("too_deep", spec, stream, is_combined=False, renderer=r, sample=FRAME)
    assert text
    assert deep.count(b"[") >= HOSTILE_DEPTH
    with pytest.raises(RecursionError):
        json.loads(deep)
