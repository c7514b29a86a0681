"""The pipeline on Redis behind Sentinel (a master, a replica, three Sentinels): a kill -9
of the master mid-stream is followed to the promoted replica by every service, none of
them restarted, and the moves made after it still reach a WebSocket client, once each."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fake_exchange import FakeExchange, Quote
from tests.support.alert_client import AlertClient, alert_client
from tests.support.markets import board_with_moves
from tests.support.processes import Pipeline, running
from tests.support.servers import SentinelCluster

pytestmark = pytest.mark.e2e

MOVES = [("SYM011USDT", 3.0), ("SYM022USDT", -3.0), ("SYM033USDT", 3.5), ("SYM044USDT", -4.0),
         ("SYM055USDT", 3.0), ("SYM066USDT", -3.0)]
FRAMES_BETWEEN_MOVES = 14
KILL_AFTER_ALERTS = 1
# A failover takes 2-4 s, 20-40 frames: the moves from the fifth on (5 s after the kill,
# at the earliest) start after it.
AFTER_FAILOVER = MOVES[4:]


def moves_scenario() -> Iterator[list[Quote]]:
    return board_with_moves(MOVES, frames_between=FRAMES_BETWEEN_MOVES, quiet_after=1)


def kinds(client: AlertClient) -> Counter[tuple[str, str]]:
    unique = {a["id"]: a for a in client.history}
    unique.update({a["id"]: a for _, a in client.live})
    alerts: list[dict[str, Any]] = list(unique.values())
    return Counter((a["symbol"], a["direction"]) for a in alerts)


async def test_the_services_follow_a_master_kill_to_the_promoted_replica(
        sentinel_cluster: SentinelCluster, tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    later = {(symbol, "up" if pct > 0 else "down") for symbol, pct in AFTER_FAILOVER}
    expected = {(symbol, "up" if pct > 0 else "down") for symbol, pct in MOVES}
    async with FakeExchange(moves_scenario(), interval_s=0.1, wall_clock=False) as exchange:
        pipeline = Pipeline(sentinel_cluster.url, exchange.url("!miniTicker@arr"), log_dir,
                            extra_env={"TICK_PARTITIONS": "4"})
        async with running(pipeline), alert_client(pipeline.ws_url) as client:
            pids = {name: s.process.pid for name, s in pipeline.services.items() if s.process}
            deadline = time.monotonic() + 60
            while len(client.ids()) < KILL_AFTER_ALERTS:
                assert time.monotonic() < deadline, f"no alerts\n{pipeline.logs()}"
                await asyncio.sleep(0.05)
            old = await asyncio.to_thread(sentinel_cluster.kill_master)
            new = await asyncio.to_thread(sentinel_cluster.wait_for_failover, old)
            while not set(kinds(client)) >= later:
                assert time.monotonic() < deadline, \
                    f"after the failover to {new}: {kinds(client)}\n{pipeline.logs()}"
                await asyncio.sleep(0.05)
            await exchange.wait_until_done(timeout=60)
            await asyncio.sleep(1.0)
            assert {name: s.process.pid for name, s in pipeline.services.items()
                    if s.process} == pids, "a service was restarted"
    live = client.live_ids()
    assert len(live) == len(set(live)), f"an alert was shown twice: {live}"
    counts = kinds(client)
    assert all(n == 1 for n in counts.values()), counts
    assert set(counts) <= expected
    assert all(s.starts == 1 for s in pipeline.services.values()), "a service crashed"
    assert client.connections == 1  # the gateway never dropped its clients
