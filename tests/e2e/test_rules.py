"""Live rule changes as deployed: real processes, a real Redis server, the fake exchange; the
admin API of the running gateway lowers a threshold and a move that did not fire now fires."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fake_exchange import FakeExchange, Quote
from tests.support.alert_client import alert_client
from tests.support.processes import Pipeline
from tests.support.servers import RedisServer

pytestmark = pytest.mark.e2e

TOKEN = "e2e-admin-token-0123456789"


def market(state: dict[str, bool]) -> Iterator[list[Quote]]:
    """Two symbols quoting every frame; MOVERUSDT sits 1.5 % up once ``state["moved"]``."""
    while True:
        mover = 101.5 if state["moved"] else 100.0
        yield [Quote("MOVERUSDT", mover, 0), Quote("STILLUSDT", 50.0, 0)]


async def test_a_lower_threshold_put_through_the_admin_api_fires_a_move_that_did_not(
        redis_server: RedisServer, tmp_path: Path) -> None:
    state = {"moved": False}
    logs = tmp_path / "logs"
    logs.mkdir()
    async with FakeExchange(market(state), interval_s=0.2, wall_clock=True) as exchange:
        pipeline = Pipeline(redis_server.url, exchange.url("!miniTicker@arr"), logs,
                            extra_env={"TICK_PARTITIONS": "2", "ADMIN_TOKEN": TOKEN})
        await asyncio.to_thread(pipeline.start)
        try:
            async with alert_client(pipeline.ws_url) as client, \
                    httpx.AsyncClient(base_url=pipeline.http(""), timeout=5) as http:
                await asyncio.sleep(1.0)
                state["moved"] = True
                await asyncio.sleep(3.0)  # +1.5 % for 15 frames under the 2 % of WINDOW_S…
                assert client.live == []

                assert (await http.get("/api/admin/rules")).status_code == 401
                listed = await http.get("/api/admin/rules",
                                        headers={"Authorization": f"Bearer {TOKEN}"})
                assert listed.json()["version"] == 1  # seeded by the detector from its env
                changed = await http.put(
                    "/api/admin/rules/default",
                    headers={"Authorization": f"Bearer {TOKEN}", "X-Admin-User": "e2e"},
                    json={"window_s": 60, "threshold_up_pct": 1.0, "threshold_down_pct": 1.0,
                          "cooldown_s": 60})
                assert changed.status_code == 200, changed.text
                put_at = time.time() * 1000

                deadline = time.monotonic() + 10
                while not client.live:
                    assert time.monotonic() < deadline, pipeline.logs()
                    await asyncio.sleep(0.05)
                received_ms, alert = client.live[0]
                await asyncio.sleep(1.0)
            assert len(client.live) == 1  # one alert, then the cooldown
            assert (alert["symbol"], alert["direction"]) == ("MOVERUSDT", "up")
            assert alert["threshold_pct"] == 1.0
            assert alert["change_pct"] == pytest.approx(1.5)
            assert (alert["rule"], alert["level"]) == ("default", 1)
            # Applied within a second, then the next frame (0.2 s) carried the move.
            assert received_ms - put_at < 2000
            assert "rules version 2 applied (by e2e" in pipeline.services["detector"].output()
            assert "rules version 2 written by e2e" in pipeline.services["gateway"].output()
            assert TOKEN not in pipeline.logs()
        except BaseException:
            print(pipeline.logs())
            raise
        finally:
            await asyncio.to_thread(pipeline.stop)
    codes = {name: s.exit_codes for name, s in pipeline.services.items()}
    assert all(code == 0 for c in codes.values() for code in c), codes
