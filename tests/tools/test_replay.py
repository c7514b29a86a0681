"""The replay server over real sockets: routes, wrappers, pacing, looping, several clients."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.support.recordings import CRYPTOFEED, HFT_3K, source_frames
from tools.recording_writer import RotatingWriter
from tools.replayer import ReplayServer


def _connect(url: str) -> connect:
    """A test client stops reading before it closes, so its close handshake cannot finish
    behind the frames still coming (its read buffer is full): do not wait 10 s for it."""
    return connect(url, close_timeout=0.5)


async def receive(ws: ClientConnection, count: int, timeout_s: float = 10.0) -> list[str]:
    frames: list[str] = []
    async with asyncio.timeout(timeout_s):
        while len(frames) < count:
            message = await ws.recv()
            assert isinstance(message, str)
            frames.append(message)
    return frames


async def test_both_routes_serve_the_recording() -> None:
    expected = source_frames(HFT_3K)
    got = {}
    for path in ("/market/stream?streams=btcusdt@trade", "/market/ws/btcusdt@trade"):
        async with _server([HFT_3K], speed=0) as server:
            async with _connect(server.address + path) as ws:
                got[path] = await receive(ws, len(expected))
            await asyncio.wait_for(server.done.wait(), 5)
            assert server.frames_sent == len(expected)
    # Byte for byte on the combined route, whatever streams were asked for; unwrapped on the
    # raw one.
    assert got["/market/stream?streams=btcusdt@trade"] == expected
    assert [json.loads(f) for f in got["/market/ws/btcusdt@trade"]] == [
        json.loads(f)["data"] for f in expected]


async def test_old_routes_are_silent_and_unknown_paths_404() -> None:
    async with _server([CRYPTOFEED], speed=0) as server:
        async with _connect(f"{server.address}/ws/btcusdt@trade") as old:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(old.recv(), 0.3)
        assert server.frames_sent == 0  # nobody was listening on a market route
        with pytest.raises(InvalidStatus) as refused:
            async with _connect(f"{server.address}/nope"):
                pass
        assert refused.value.response.status_code == 404


async def test_paced_at_the_recorded_speed_times_n() -> None:
    """The cryptofeed slice spans ~11 s of receive times: at ×20 that is ~0.55 s."""
    frames = source_frames(CRYPTOFEED)
    span_s = 1626992752.0 - 1626992741.0  # first and last receive time, roughly
    async with _server([CRYPTOFEED], speed=20) as server, \
            _connect(f"{server.address}/market/stream?streams=x") as ws:
        started = time.monotonic()
        got = await receive(ws, len(frames))
        elapsed = time.monotonic() - started
    assert got == frames
    assert span_s / 20 * 0.8 < elapsed < span_s / 20 + 2.0


async def test_loop_shifts_event_times_forward() -> None:
    frames = source_frames(CRYPTOFEED)
    async with _server([CRYPTOFEED], speed=0, loop=True) as server, \
            _connect(f"{server.address}/market/stream?streams=x") as ws:
        got = await receive(ws, 2 * len(frames) + 1)
    first = [json.loads(f)["data"] for f in got[:len(frames)]]
    second = [json.loads(f)["data"] for f in got[len(frames):2 * len(frames)]]
    shift = second[0]["E"] - first[0]["E"]
    assert shift > max(e["E"] for e in first) - first[0]["E"]
    for a, b in zip(first, second, strict=True):
        assert b["E"] - a["E"] == shift
        if "T" in a:
            assert b["T"] - a["T"] == shift
        assert {k: v for k, v in a.items() if k not in "ET"} == {
            k: v for k, v in b.items() if k not in "ET"}


async def test_a_raw_recording_is_wrapped_for_a_combined_route(tmp_path: Path) -> None:
    frame = '[{"e":"24hrMiniTicker","E":1,"s":"BTCUSDT","c":"1.5"}]'
    writer = RotatingWriter(str(tmp_path / "rec"), "wss://h/market/ws/!miniTicker@arr",
                            rotate_bytes=10**9, rotate_s=3600)
    writer.write([(1000, frame), (1100, frame)])
    writer.close()
    async with _server(writer.files, speed=0) as server:
        async with _connect(f"{server.address}/market/stream?streams=!miniTicker@arr") as ws:
            wrapped = await receive(ws, 2)
        async with _connect(f"{server.address}/market/ws/!miniTicker@arr") as ws:
            with pytest.raises(TimeoutError):  # one shared playback, already played
                await asyncio.wait_for(ws.recv(), 0.3)
    assert [json.loads(f) for f in wrapped] == [
        {"stream": "!miniTicker@arr", "data": json.loads(frame)}] * 2


async def test_playback_waits_for_a_listener_and_clients_share_it() -> None:
    frames = source_frames(CRYPTOFEED)
    async with _server([CRYPTOFEED], speed=20) as server:
        await asyncio.sleep(0.3)
        assert server.frames_sent == 0
        async with _connect(f"{server.address}/market/stream?streams=x") as one, \
                _connect(f"{server.address}/market/stream?streams=y") as two:
            a, b = await asyncio.gather(receive(one, 10), receive(two, 10))
        assert a == frames[:10]
        assert b[0] in frames[:10]
        assert b == frames[frames.index(b[0]):][:10]


class _server:
    def __init__(self, paths: list[Path], **kwargs: Any) -> None:
        self.server = ReplayServer([str(p) for p in paths], port=0, **kwargs)

    async def __aenter__(self) -> ReplayServer:
        await self.server.start()
        return self.server

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop()
