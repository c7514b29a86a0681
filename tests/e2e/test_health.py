"""Pipeline health as the gateway derives it from the bus, with every part a real process,
on both buses: the ``/readyz`` body and the ``health`` message on ``/ws``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from fake_exchange import FakeExchange, drifting_market
from tests.support.gateway import receive
from tests.support.processes import Pipeline, running
from tests.support.servers import Bus

pytestmark = pytest.mark.e2e

SYMBOLS = 40
# Short thresholds keep the test fast; the defaults are for real feeds.
HEALTH_ENV = {"TICK_PARTITIONS": "2", "HEALTH_FEED_STALE_S": "2", "HEALTH_FEED_DOWN_S": "60",
              "HEALTH_DETECTOR_STALE_S": "2", "HEALTH_CHECK_S": "0.25",
              "DETECTOR_HEARTBEAT_S": "0.25"}


async def readyz(pipeline: Pipeline) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(pipeline.http("/readyz"))


async def until_ready_body(pipeline: Pipeline, accept: Callable[[dict[str, Any]], bool],
                           timeout_s: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        response = await readyz(pipeline)
        if accept(response.json()):
            return response
        if time.monotonic() > deadline:
            raise AssertionError(f"/readyz never matched: {response.json()}")
        await asyncio.sleep(0.1)


async def until_health(ws: ClientConnection, level: str, timeout_s: float = 20.0
                       ) -> dict[str, Any]:
    async with asyncio.timeout(timeout_s):
        while True:
            message = await receive(ws, timeout_s, skip=frozenset({"ping", "rules", "alert"}))
            if message["type"] == "health" and message["health"]["level"] == level:
                health: dict[str, Any] = message["health"]
                return health


async def test_readyz_names_each_component_and_a_stopped_detector_is_reported_with_200(
        bus: Bus, tmp_path: Path) -> None:
    url, env = bus.url, bus.env
    async with FakeExchange(drifting_market(SYMBOLS, change_ratio=1.0), interval_s=0.25,
                            wall_clock=True) as exchange:
        pipeline = Pipeline(url, exchange.url("!miniTicker@arr"), tmp_path,
                            extra_env={**HEALTH_ENV, **env})
        async with running(pipeline):
            ok = await until_ready_body(pipeline, lambda body: body["level"] == "ok")
            assert ok.status_code == 200
            body = ok.json()
            assert body["status"] == "ready"
            assert set(body["components"]) == {"gateway", "bus", "feed", "detector"}
            assert all(c["level"] == "ok" for c in body["components"].values()), body
            assert body["symbols"] == SYMBOLS
            assert body["summary"].startswith(f"watching {SYMBOLS} symbols · data ")
            assert 0 < body["at_ms"] - body["newest_tick_ms"] < 2000
            assert body["reasons"] == []

            async with connect(pipeline.ws_url) as ws:
                assert (await receive(ws))["type"] == "history"
                first = await receive(ws, skip=frozenset({"ping", "rules"}))
                assert first["type"] == "health"
                assert first["health"]["level"] == "ok"
                assert first["health"]["symbols"] == SYMBOLS

                detector = pipeline.services["detector"]
                assert await asyncio.to_thread(detector.stop) == 0
                down = await until_health(ws, "down")
                assert down["reasons"] == ["no detector consuming"]
                assert down["components"]["detector"]["level"] == "down"
                # Every replica sees the same dead detector: a load balancer must keep them.
                stopped = await readyz(pipeline)
                assert stopped.status_code == 200
                assert stopped.json()["status"] == "ready"
                assert stopped.json()["reasons"] == ["no detector consuming"]

                detector.start()
                back = await until_health(ws, "ok", timeout_s=40)
                assert back["reasons"] == []
