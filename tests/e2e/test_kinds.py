"""The trade-level feed and the rule kinds as deployed: real service processes on a real Redis
server, the fake exchange's trade market over real sockets (exchangeInfo over HTTP, aggTrade,
forced orders and mark prices on the `/market` route), alerts at a WebSocket client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from fake_exchange import FakeExchange
from tests.support.alert_client import AlertClient, alert_client
from tests.support.exchange import ExchangeControl, trade_exchange
from tests.support.processes import Pipeline, running
from tests.support.servers import RedisServer

pytestmark = pytest.mark.e2e

TOKEN = "e2e-admin-token-kinds-0123456789"
SYMBOLS = 30


def trade_pipeline(redis_url: str, fx: FakeExchange, log_dir: Path,
                   **env: str) -> Pipeline:
    """The three services on the trade-level feed of `fx`'s whole board."""
    return Pipeline(redis_url, fx.url("!miniTicker@arr"), log_dir, extra_env={
        "FEED": "agg_trade", "BINANCE_REST_URL": fx.rest_url,
        "BINANCE_WS_BASE_URL": fx.rest_url.replace("http://", "ws://") + "/market",
        "TICK_PARTITIONS": "2", "ADMIN_TOKEN": TOKEN, **env})


@pytest.fixture
async def market(tmp_path: Path) -> AsyncIterator[FakeExchange]:
    async with trade_exchange(SYMBOLS, trades_per_s=300, extras=True,
                              wall_clock=True) as fx:
        yield fx


async def wait_for(predicate: Callable[[], object], timeout_s: float, what: str,
                   pipeline: Pipeline) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{pipeline.logs()}")
        await asyncio.sleep(0.05)


def of(client: AlertClient, symbol: str, kind: str) -> list[dict[str, Any]]:
    return [alert for _, alert in client.live
            if alert["symbol"] == symbol and alert["kind"] == kind]


async def test_a_trade_level_jump_alerts_at_a_websocket_client_well_inside_a_second(
        redis_server: RedisServer, market: FakeExchange, tmp_path: Path) -> None:
    pipeline = trade_pipeline(redis_server.url, market, tmp_path)
    async with running(pipeline), alert_client(pipeline.ws_url) as client, \
            ExchangeControl(market.rest_url) as control:
        # Every perpetual of the board is subscribed, on one connection, and trades flow.
        await asyncio.sleep(1.5)
        stats = await control.stats()
        assert [c.streams for c in stats.connections if c.open] == [SYMBOLS + 2]
        assert client.live == []  # the drift stays under the threshold

        jump = await control.jump("SYM007USDT", pct=3.0, over_ms=300)
        await wait_for(lambda: of(client, "SYM007USDT", "price"), 5, "the jump's alert",
                       pipeline)
        received_ms, alert = next((r, a) for r, a in client.live
                                  if a["symbol"] == "SYM007USDT")
        await asyncio.sleep(1.0)

    assert len(of(client, "SYM007USDT", "price")) == 1
    assert (alert["direction"], alert["source"], alert["level"]) == ("up", "agg_trade", 1)
    assert alert["change_pct"] >= 2.0
    burst_times = {t for t, _ in jump.path}
    # Event time is the time T of the trade that crossed the threshold, one of the burst's,
    # and before the burst's end: a trade feed sees the move as it happens, not a second late.
    assert alert["event_time_ms"] in burst_times
    assert alert["event_time_ms"] <= jump.first_past_ms
    assert received_ms - alert["event_time_ms"] < 500, "trade → client should take ms"


async def test_a_liquidation_cascade_and_a_funding_extreme_each_alert_once(
        redis_server: RedisServer, market: FakeExchange, tmp_path: Path) -> None:
    pipeline = trade_pipeline(redis_server.url, market, tmp_path)
    rules = {"rules": [
        {"name": "default", "window_s": 60, "threshold_up_pct": 2.0,
         "threshold_down_pct": 2.0},
        {"name": "cascade", "kind": "liquidation", "window_s": 60,
         "min_notional_usdt": 1_000_000, "cooldown_s": 300},
        {"name": "funding", "kind": "funding", "min_funding_rate_pct": 0.1},
    ]}
    async with running(pipeline), alert_client(pipeline.ws_url) as client, \
            ExchangeControl(market.rest_url) as control, \
            httpx.AsyncClient(base_url=pipeline.http(""), timeout=5) as http:
        put = await http.put("/api/admin/rules", json=rules,
                             headers={"Authorization": f"Bearer {TOKEN}"})
        assert put.status_code == 200, put.text
        detector = pipeline.services["detector"]
        await wait_for(lambda: "rules version 2" in detector.output(), 10,
                       "the detector on the new rules", pipeline)

        cascade = await control.cascade("SYM011USDT", side="SELL", notional=2_000_000,
                                        orders=5)
        funding = await control.funding("SYM022USDT", rate=0.002)
        await wait_for(lambda: of(client, "SYM011USDT", "liquidation")
                       and of(client, "SYM022USDT", "funding"), 15,
                       "the cascade's and the funding's alerts", pipeline)
        # The cascade's last orders and many more mark prices of the same period follow.
        remaining_s = (cascade.last_ms - time.time() * 1000) / 1000
        await asyncio.sleep(max(0.0, remaining_s) + 3.0)

    (liquidation,) = of(client, "SYM011USDT", "liquidation")
    assert (liquidation["direction"], liquidation["rule"]) == ("down", "cascade")  # longs
    assert liquidation["notional_usdt"] >= 1_000_000
    assert liquidation["threshold"] == 1_000_000
    assert liquidation["id"].startswith("SYM011USDT:liquidation.cascade:")
    (extreme,) = of(client, "SYM022USDT", "funding")
    assert (extreme["direction"], extreme["rule"]) == ("up", "funding")  # longs pay
    assert extreme["funding_rate_pct"] == pytest.approx(0.2)
    assert extreme["next_funding_ms"] == funding.next_funding_ms
    assert extreme["id"] == f"SYM022USDT:funding.funding:{funding.next_funding_ms}"
    assert not [a for _, a in client.live if a["kind"] == "funding"
                and a["symbol"] != "SYM022USDT"]
