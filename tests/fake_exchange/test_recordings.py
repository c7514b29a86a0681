"""Replaying the real recordings kept in tests/data (see tests/data/SOURCES.md)."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from fake_exchange import FakeExchange, recording_quotes

DATA = Path(__file__).resolve().parent.parent / "data"
HFT = DATA / "hftbacktest_btcusdt_20240808_head.gz"
CRYPTOFEED = DATA / "cryptofeed_binance_futures_head.ws"


def test_hftbacktest_slice() -> None:
    text = gzip.decompress(HFT.read_bytes()).decode().splitlines()
    trades = [line for line in text if '"e":"trade"' in line]
    no_stream = [line for line in text if '"stream"' not in line]
    assert len(no_stream) == 1, "the slice keeps the REST snapshot line"
    rec = recording_quotes(HFT)
    frames = list(rec)
    assert rec.format == "hftbacktest"
    assert len(frames) == len(trades) == rec.frames == rec.quotes
    assert rec.lines == len(text)
    assert rec.malformed == 0
    assert rec.ignored == len(text) - len(trades)
    quotes = [q for f in frames for q in f]
    assert {q.symbol for q in quotes} == {"BTCUSDT"}
    assert all(61000 < q.price < 62500 for q in quotes)
    # 2024-08-08 23:54 UTC, exchange time, within the few seconds the slice covers.
    assert all(1723161250000 < q.event_time_ms < 1723161600000 for q in quotes)
    assert all(q.contract_type == 1 for q in quotes)
    first = json.loads(trades[0].split(" ", 1)[1])["data"]
    assert (quotes[0].price, quotes[0].event_time_ms) == (float(first["p"]), first["E"])


def test_cryptofeed_slice() -> None:
    text = CRYPTOFEED.read_text().splitlines()
    agg = [line for line in text if '"e":"aggTrade"' in line]
    rec = recording_quotes(CRYPTOFEED)
    quotes = [q for f in rec for q in f]
    assert rec.format == "cryptofeed"
    assert len(quotes) == len(agg) == rec.frames
    assert rec.lines == len(text)
    assert rec.frames + rec.ignored == len(text) - 1  # the header is neither
    assert rec.malformed == 0
    assert {q.symbol for q in quotes} <= {"SUSHIUSDT", "AKROUSDT", "KEEPUSDT", "CTKUSDT"}
    assert all(0.001 < q.price < 100 for q in quotes)
    assert all(1626992740000 < q.event_time_ms < 1626992772000 for q in quotes)
    first = json.loads(agg[0].split(": ", 1)[1])["data"]
    assert (quotes[0].symbol, quotes[0].price) == (first["s"], float(first["p"]))


def test_skips_snapshots_and_counts_malformed(tmp_path: Path) -> None:
    lines = [
        '1 {"lastUpdateId":5,"E":1723161256501,"T":1,"bids":[],"asks":[]}',
        '2 {"stream":"btcusdt@trade","data":{"e":"trade","E":10,"s":"BTCUSDT","p":"61000.5"}}',
        "3 {not json",
        '4 {"stream":"btcusdt@trade","data":{"e":"trade","E":11,"s":"BTCUSDT","p":"abc"}}',
        '5 {"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","p":"1"}}',
        "garbage-without-separator",
        '7 {"e":"aggTrade","E":12,"s":"ETHUSDT","p":"3000"}',
        '8 {"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","E":13,"s":"BTCUSDT"}}',
    ]
    path = tmp_path / "rec.gz"
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    rec = recording_quotes(path)
    frames = list(rec)
    assert [(q.symbol, q.price, q.event_time_ms) for f in frames for q in f] == [
        ("BTCUSDT", 61000.5, 10),
        ("ETHUSDT", 3000.0, 12),
    ]
    assert (rec.malformed, rec.ignored, rec.lines) == (4, 2, 8)


def test_own_format_keeps_ticker_arrays_and_contract_type(tmp_path: Path) -> None:
    frame = json.dumps(
        {
            "stream": "!miniTicker@arr",
            "data": [
                {"e": "24hrMiniTicker", "E": 5, "s": "BTCUSDT", "c": "60000.1", "st": 1},
                {"e": "24hrMiniTicker", "E": 5, "s": "BTCUSD_PERP", "c": "59990", "st": 2},
            ],
        }
    )
    path = tmp_path / "own.jsonl.gz"
    path.write_bytes(gzip.compress((json.dumps({"t": 7, "frame": frame}) + "\n").encode()))
    rec = recording_quotes(path)
    (got,) = list(rec)
    assert rec.format == "own"
    assert [(q.symbol, q.price, q.contract_type) for q in got] == [
        ("BTCUSDT", 60000.1, 1),
        ("BTCUSD_PERP", 59990.0, 2),
    ]


def test_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_text("hello world\n")
    with pytest.raises(ValueError, match="not a recording format"):
        recording_quotes(path)


async def test_replay_over_the_wire() -> None:
    expected = [q for f in recording_quotes(HFT) for q in f]
    fx = FakeExchange(recording_quotes(HFT), interval_s=0)
    async with fx, connect(fx.url("btcusdt@trade", combined=False), close_timeout=0.5) as ws:
        got: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while len(got) < len(expected):
                got.append(json.loads(await ws.recv()))
        await fx.wait_until_done(2)
    assert [(g["s"], float(g["p"]), g["E"]) for g in got] == [
        (q.symbol, q.price, q.event_time_ms) for q in expected
    ]
    assert {g["e"] for g in got} == {"trade"}
