"""The HTTP control surface and `python -m fake_exchange` as a real subprocess."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

from fake_exchange import FakeExchange, drifting_market

REPO = Path(__file__).resolve().parents[2]


async def test_control_surface_over_http() -> None:
    fx = FakeExchange(drifting_market(10, frames=100_000), interval_s=0.01)
    async with (
        fx,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{fx.port}", timeout=5) as http,
        connect(fx.url(), close_timeout=0.5) as ws,
    ):
        await ws.recv()
        r = await http.get("/control/stats")
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        stats = r.json()
        assert stats["connections_total"] == 1
        assert stats["active_connections"] == 1
        assert stats["frames_sent"] >= 1
        assert stats["quotes_sent"] >= 10

        assert (await http.get("/control/nope")).status_code == 404
        assert (await http.get("/elsewhere")).status_code == 404
        assert (await http.get("/market/ws/!miniTicker@arr")).status_code == 426  # no upgrade
        for bad in ("/control/stall?seconds=abc", "/control/stall?seconds=-1",
                    "/control/malformed?kind=xyz", "/control/malformed"):  # fmt: skip
            r = await http.get(bad)
            assert r.status_code == 400, bad
            assert r.json()["error"]

        r = await http.get("/control/stall", params={"seconds": "5"})
        assert r.json()["stalled"] is True
        assert fx.stalled
        assert (await http.get("/control/resume")).json()["stalled"] is False

        assert (await http.get("/control/ping")).json()["pongs_received"] == 1

        # Let the stream settle, then the malformed frame must arrive among the data.
        assert (await http.get("/control/malformed?kind=not_json")).status_code == 200
        async with asyncio.timeout(2):
            while True:
                msg = await ws.recv()
                if not str(msg).startswith("{"):
                    break
        assert msg == "this is {not json"

        r = await http.get("/control/drop")
        assert r.json()["active_connections"] == 0
        try:
            async with asyncio.timeout(2):
                while True:
                    await ws.recv()
        except ConnectionClosedError:
            pass


async def _read_url(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(10):
        line = (await proc.stdout.readline()).decode()
    m = re.match(r"fake exchange listening on (ws://127\.0\.0\.1:\d+) \(scenario ", line)
    assert m, line
    return m.group(1)


async def _run(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fake_exchange", "--port", "0", *args,
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_cli_serves_and_exits_cleanly_on_sigterm() -> None:
    proc = await _run("--scenario", "drift", "--symbols", "25", "--interval", "0.05")
    try:
        base = await _read_url(proc)
        async with connect(
            f"{base}/market/stream?streams=!miniTicker@arr", close_timeout=0.5
        ) as ws:
            first: Any = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert len(first["data"]) == 25
        http = base.replace("ws://", "http://")
        async with httpx.AsyncClient(timeout=5) as client:
            stats = (await client.get(f"{http}/control/stats")).json()
        assert stats["connections_total"] == 1
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 5) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_cli_replays_a_recording() -> None:
    data = REPO / "tests" / "data" / "cryptofeed_binance_futures_head.ws"
    proc = await _run("--scenario", "recording", "--file", str(data), "--interval", "0")
    try:
        base = await _read_url(proc)
        async with connect(f"{base}/market/ws/!miniTicker@arr", close_timeout=0.5) as ws:
            frame: Any = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert frame[0]["s"] in {"SUSHIUSDT", "AKROUSDT", "KEEPUSDT", "CTKUSDT"}
        assert frame[0]["E"] > 1626992740000
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 5) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_cli_rejects_recording_without_file() -> None:
    proc = await _run("--scenario", "recording")
    _, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 2
    assert b"--file" in err
