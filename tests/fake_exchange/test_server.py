"""The fake exchange over real sockets: framing, routes, pacing and faults."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from fake_exchange import FakeExchange, Quote, drifting_market, firehose


def _connect(url: str, **kw: Any) -> connect:
    """A client that stops reading cannot finish a closing handshake (its receive buffer is
    full), so tests bound the wait instead of sitting out websockets' 10 s default."""
    return connect(url, close_timeout=0.5, **kw)


def _market(n_frames: int, n_symbols: int = 10) -> list[list[Quote]]:
    return list(drifting_market(n_symbols, seed=1, start_ms=1_000_000, frames=n_frames))


async def _recv_raw(ws: ClientConnection, wait_s: float = 2.0) -> str | bytes:
    async with asyncio.timeout(wait_s):
        return await ws.recv()


async def _recv(ws: ClientConnection, wait_s: float = 2.0) -> Any:
    async with asyncio.timeout(wait_s):
        return json.loads(await ws.recv())


async def _closed(ws: ClientConnection, wait_s: float = 2.0) -> ConnectionClosed:
    """Read until the connection ends; the close exception says how it ended."""
    try:
        async with asyncio.timeout(wait_s):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        return exc


async def _silent(ws: ClientConnection, wait_s: float) -> bool:
    try:
        async with asyncio.timeout(wait_s):
            await ws.recv()
    except TimeoutError:
        return True
    return False


async def test_combined_mini_ticker_frames_match_scenario() -> None:
    frames = _market(5)
    async with FakeExchange(frames, interval_s=0.01) as fx, _connect(fx.url()) as ws:
        for frame in frames:
            msg = await _recv(ws)
            assert msg["stream"] == "!miniTicker@arr"
            assert [e["s"] for e in msg["data"]] == [q.symbol for q in frame]
            for e, q in zip(msg["data"], frame, strict=True):
                assert e["e"] == "24hrMiniTicker"
                assert e["E"] == q.event_time_ms
                assert float(e["c"]) == pytest.approx(q.price, rel=1e-7)
                assert e["st"] == 1
        await fx.wait_until_done(2)
        assert fx.frames_sent == 5
        assert fx.quotes_sent == sum(map(len, frames))
        # Exhausted: the connection stays open and silent.
        assert await _silent(ws, 0.2)
        assert fx.active_connections == 1


async def test_raw_streams_and_shapes_share_one_market() -> None:
    frames = _market(3)
    async with FakeExchange(frames, interval_s=0.05) as fx:
        fx.stall()  # hold the market until every client is in
        async with (
            _connect(fx.url("!markPrice@arr@1s", combined=False)) as mark,
            _connect(fx.url("!ticker@arr", combined=False)) as ticker,
            _connect(fx.url("!markPrice@arr/sym003usdt@aggTrade")) as multi,
        ):
            await fx.wait_for_connections(3)
            fx.resume()
            m = await _recv(mark)
            t = await _recv(ticker)
            assert isinstance(m, list)
            assert {e["e"] for e in m} == {"markPriceUpdate"}
            assert "c" not in m[0]
            assert float(m[0]["p"]) == pytest.approx(frames[0][0].price, rel=1e-7)
            assert {e["e"] for e in t} == {"24hrTicker"}
            assert [e["E"] for e in t] == [e["E"] for e in m]
            got = [await _recv(multi) for _ in range(2)]
            assert {g["stream"] for g in got} == {"!markPrice@arr", "sym003usdt@aggTrade"}
            agg = next(g["data"] for g in got if g["stream"] == "sym003usdt@aggTrade")
            assert agg["e"] == "aggTrade"
            assert agg["s"] == "SYM003USDT"


async def test_unknown_path_is_404_and_old_routes_are_silent() -> None:
    async with FakeExchange(_market(50), interval_s=0.01) as fx:
        with pytest.raises(InvalidStatus) as err:
            async with _connect(f"ws://127.0.0.1:{fx.port}/nope/ws/!miniTicker@arr"):
                pass
        assert err.value.response.status_code == 404
        old_url = f"ws://127.0.0.1:{fx.port}/ws/!miniTicker@arr"
        async with _connect(old_url) as old, _connect(f"ws://127.0.0.1:{fx.port}/stream") as old2:
            await old2.send(json.dumps({"method": "SUBSCRIBE", "params": ["!miniTicker@arr"]}))
            # Nobody on a live route yet: the market does not even start.
            assert await _silent(old, 0.2)
            assert fx.frames_sent == 0
            async with _connect(fx.url()) as live:
                await _recv(live)
                assert await _silent(old, 0.2)
                assert await _silent(old2, 0.01)  # not even the SUBSCRIBE ack
                assert fx.frames_sent > 5
        assert fx.connections_total == 3


async def test_market_waits_for_a_streaming_client() -> None:
    frames = _market(3)
    fx = FakeExchange(frames, interval_s=0.01)
    async with fx, _connect(f"ws://127.0.0.1:{fx.port}/market/ws") as ws:
        await asyncio.sleep(0.15)
        assert fx.frames_sent == 0, "no stream subscribed, nothing consumed"
        sub = {"method": "SUBSCRIBE", "params": ["!miniTicker@arr"], "id": 7}
        await ws.send(json.dumps(sub))
        assert await _recv(ws) == {"result": None, "id": 7}
        first = await _recv(ws)
        assert isinstance(first, list)
        assert first[0]["E"] == 1_000_000  # frame 0, not lost while nobody listened
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 8}))
        replies = [await _recv(ws) for _ in range(3)]
        assert {"result": ["!miniTicker@arr"], "id": 8} in replies


async def test_wall_clock_loop_and_max_frames() -> None:
    frames = _market(3)
    fx = FakeExchange(frames, interval_s=0.005, wall_clock=True, max_frames=4)
    async with fx, _connect(fx.url()) as ws:
        msg = await _recv(ws)
        now = time.time() * 1000
        assert abs(msg["data"][0]["E"] - now) < 1000
        await fx.wait_until_done(2)
        assert fx.frames_sent == 3
    fx = FakeExchange(iter(frames), interval_s=0.005, loop=True, max_frames=7)
    async with fx, _connect(fx.url()) as ws:
        times = [(await _recv(ws))["data"][0]["E"] for _ in range(7)]
        await fx.wait_until_done(2)
    assert times == sorted(times)
    assert len(set(times)) == 7, "each pass is shifted forward in event time"
    assert times[3] == 1_000_000 + 3000


async def test_drop_closes_and_allows_reconnect() -> None:
    async with FakeExchange(drifting_market(10, frames=10_000), interval_s=0.01) as fx:
        async with _connect(fx.url()) as ws:
            await _recv(ws)
            await fx.drop()
            err = await _closed(ws)
            assert isinstance(err, ConnectionClosedError)
            assert err.rcvd is None  # no close frame: an abrupt drop
            assert fx.active_connections == 0
        async with _connect(fx.url()) as again:
            assert isinstance(await _recv(again), dict)
        assert fx.connections_total == 2


async def test_stall_pauses_without_consuming_then_resumes() -> None:
    fx = FakeExchange(drifting_market(10, frames=10_000), interval_s=0.01)
    async with fx, _connect(fx.url()) as ws:
        await _recv(ws)
        fx.stall(0.5)
        sent = fx.frames_sent
        # Drain whatever was already in flight, then expect silence.
        async with asyncio.timeout(0.1):
            while not await _silent(ws, 0.05):
                pass
        started = time.monotonic()
        pong = await ws.ping()  # the socket stays alive during a stall
        await asyncio.wait_for(pong, 0.2)
        await _recv(ws, 2)
        assert time.monotonic() - started > 0.3
        assert fx.frames_sent <= sent + 2, "a stall does not consume the scenario"
        fx.stall()
        assert await _silent(ws, 0.2)
        fx.resume()
        await _recv(ws)


async def test_each_malformed_kind_is_delivered() -> None:
    fx = FakeExchange(_market(2), interval_s=0)
    async with (
        fx,
        _connect(fx.url()) as comb,
        _connect(fx.url("!miniTicker@arr", combined=False)) as raw,
    ):
        await fx.wait_until_done(2)
        for ws in (comb, raw):
            while not await _silent(ws, 0.05):
                pass
        for kind in ("not_json", "truncated", "bad_price", "wrong_shape", "binary"):
            await fx.send_malformed(kind)
        got = {ws: [await _recv_raw(ws) for _ in range(5)] for ws in (comb, raw)}
        for ws, msgs in got.items():
            not_json, truncated, bad, wrong, binary = msgs
            for text in (not_json, truncated):
                assert isinstance(text, str)
                with pytest.raises(json.JSONDecodeError):
                    json.loads(text)
            entries = json.loads(bad)
            if ws is comb:
                assert str(truncated).startswith('{"stream":"!miniTicker@arr"')
                entries = entries["data"]
                assert "data" not in json.loads(wrong)
            else:
                assert json.loads(wrong) == {"foo": 1}
            assert [e["c"] for e in entries].count("abc") == 1
            assert len(entries) >= 2
            assert isinstance(binary, bytes)
        with pytest.raises(ValueError, match="unknown"):
            await fx.send_malformed("nope")


async def test_ping_gets_pongs() -> None:
    fx = FakeExchange(_market(1), interval_s=0.01)
    async with fx, _connect(fx.url()), _connect(f"ws://127.0.0.1:{fx.port}/ws"):
        await fx.wait_for_connections(2)
        await fx.ping()
        assert fx.pongs_received == 2
        await fx.ping()
        assert fx.pongs_received == 4


async def test_slow_client_is_closed_and_others_keep_streaming() -> None:
    big = firehose(200, frames=100_000)
    # Paced so that the reading client (in this same event loop) keeps up on a busy host.
    fx = FakeExchange(big, interval_s=0.01, client_queue=8)
    async with (
        fx,
        _connect(fx.url(), max_queue=1, max_size=None) as slow,
        _connect(fx.url(), max_size=None) as fast,
    ):
        # The fast client reads throughout, until the slow one is closed (which can be
        # before either handshake is counted on a busy host: read at least once).
        async with asyncio.timeout(8):
            await fast.recv()
            while fx.active_connections == 2:
                await fast.recv()
        await fast.recv()  # still streaming
        assert (await _closed(slow, 5)).rcvd is None
        assert fx.active_connections == 1


async def test_unpaced_mode_applies_backpressure_instead_of_dropping() -> None:
    fx = FakeExchange(firehose(500, frames=300), interval_s=0)
    async with fx, _connect(fx.url(), max_size=None) as ws:
        times = [(await _recv(ws))["data"][0]["E"] for _ in range(300)]
        await fx.wait_until_done(5)
    assert len(set(times)) == 300
    assert fx.quotes_sent == 150_000


async def test_stop_does_not_hang_on_a_client_that_stopped_reading() -> None:
    fx = FakeExchange(firehose(500, frames=100_000), interval_s=0)
    await fx.start()
    async with _connect(fx.url(), max_queue=1, max_size=None) as ws:
        await ws.recv()
        await asyncio.sleep(0.3)  # let the backlog fill every buffer on the way
        started = time.monotonic()
        async with asyncio.timeout(5):
            await fx.stop()
        assert time.monotonic() - started < 4
        assert fx.active_connections == 0
