"""The whole system as deployed: real processes, a real bus (a Redis server, or a Kafka-protocol
broker: each scenario runs on both unless it is about one of them), the fake exchange over a
real socket, and WebSocket clients at the gateway."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fake_exchange import FakeExchange, Quote, jump_scenario
from tests.support.alert_client import AlertClient, alert_client
from tests.support.markets import board_with_moves
from tests.support.processes import Pipeline, metric, running
from tests.support.servers import Bus, KafkaBroker, RedisServer

pytestmark = pytest.mark.e2e


only_redis = pytest.mark.parametrize("bus", ["redis"], indirect=True)
only_kafka = pytest.mark.parametrize("bus", ["kafka"], indirect=True)


@pytest.fixture
async def exchange_and_pipeline(
    request: pytest.FixtureRequest, bus: Bus, log_dir: Path
) -> AsyncIterator[tuple[FakeExchange, Pipeline]]:
    scenario, interval_s, wall_clock, extra_env = request.param()
    async with FakeExchange(scenario, interval_s=interval_s, wall_clock=wall_clock) as exchange:
        pipeline = Pipeline(bus.url, exchange.url("!miniTicker@arr"), log_dir,
                            extra_env={"TICK_PARTITIONS": "4", **bus.env, **extra_env})
        async with running(pipeline):
            yield exchange, pipeline


MOVES = [("SYM011USDT", 3.0), ("SYM022USDT", -3.0), ("SYM033USDT", 3.5), ("SYM044USDT", -4.0),
         ("SYM055USDT", 3.0), ("SYM066USDT", -3.0), ("SYM077USDT", 3.0), ("SYM088USDT", -3.0)]
FRAMES_BETWEEN_MOVES = 14


def moves_scenario() -> Iterator[list[Quote]]:
    """Quiet board with eight known moves."""
    return board_with_moves(MOVES, frames_between=FRAMES_BETWEEN_MOVES, quiet_after=2)


def expected_moves() -> Counter[tuple[str, str]]:
    return Counter((symbol, "up" if pct > 0 else "down") for symbol, pct in MOVES)


Action = Callable[[], Awaitable[None]]


async def wait_for(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def stuck_client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket client that completes the handshake and then never reads."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    await writer.drain()
    return reader, writer


def jump_setup() -> tuple[Iterator[list[Quote]], float, bool, dict[str, str]]:
    return (jump_scenario(700, jump_symbol="SYM007USDT", at_frame=4, pct=3.0, over_frames=8,
                          frames=40), 0.25, True, {})


@pytest.mark.parametrize("exchange_and_pipeline", [jump_setup], indirect=True)
async def test_a_jump_on_one_of_700_symbols_gives_one_alert_within_2s(
        exchange_and_pipeline: tuple[FakeExchange, Pipeline]) -> None:
    exchange, pipeline = exchange_and_pipeline
    _, stuck = await stuck_client(pipeline.gateway_port)
    async with alert_client(pipeline.ws_url) as client:
        await wait_for(lambda: client.live, 30, "the alert")
        received_ms, alert = client.live[0]
        await exchange.wait_until_done(timeout=20)
        await asyncio.sleep(1.0)
    stuck.close()
    assert len(client.live) == 1, client.live
    assert alert["symbol"] == "SYM007USDT"
    assert alert["direction"] == "up"
    assert 2.0 <= alert["change_pct"] < 3.0
    assert alert["price"] == pytest.approx(alert["base_price"] * (1 + alert["change_pct"] / 100))
    assert alert["window_s"] == 60
    assert alert["threshold_pct"] == 2.0
    assert alert["source"] == "mini_ticker"
    assert alert["id"] == f"SYM007USDT:60:{alert['event_time_ms']}"
    assert alert["detected_at_ms"] >= alert["event_time_ms"]
    assert len(alert["path"]) >= 2
    # Event time is stamped by the fake exchange when it sends the frame.
    assert received_ms - alert["event_time_ms"] < 2000


def moves_setup() -> tuple[Iterator[list[Quote]], float, bool, dict[str, str]]:
    return moves_scenario(), 0.12, False, {}


async def run_moves(client: AlertClient, exchange: FakeExchange, pipeline: Pipeline,
                    disruptions: dict[int, Action]) -> None:
    """Play the moves, calling ``disruptions[k]`` once the k-th alert has arrived."""
    await run_moves_until(client, exchange, pipeline, disruptions,
                          lambda: len(client.ids()) >= len(MOVES))


def assert_each_move_alerted_exactly_once(client: AlertClient, alerts: list[dict[str, object]]
                                          ) -> None:
    assert Counter((a["symbol"], a["direction"]) for a in alerts) == expected_moves()
    live = client.live_ids()
    assert len(live) == len(set(live)), f"an alert was shown twice: {live}"
    assert client.ids() == {a["id"] for a in alerts}


async def bus_alerts(pipeline: Pipeline) -> list[dict[str, object]]:
    async with httpx.AsyncClient() as http:
        response = await http.get(pipeline.http("/api/alerts?limit=1000"))
    alerts: list[dict[str, object]] = response.json()["alerts"]
    return alerts


@pytest.mark.parametrize("exchange_and_pipeline", [moves_setup], indirect=True)
async def test_sigterm_and_restart_of_each_service_loses_and_repeats_nothing(
        exchange_and_pipeline: tuple[FakeExchange, Pipeline]) -> None:
    exchange, pipeline = exchange_and_pipeline

    def restart(name: str) -> Action:
        async def action() -> None:
            service = pipeline.services[name]
            assert await asyncio.to_thread(service.stop, signal.SIGTERM) == 0
            service.start()
            await asyncio.to_thread(pipeline.wait_ready)
        return action

    async with alert_client(pipeline.ws_url) as client:
        await run_moves(client, exchange, pipeline,
                        {1: restart("ingestor"), 3: restart("detector"), 5: restart("gateway")})
        alerts = await bus_alerts(pipeline)
    assert_each_move_alerted_exactly_once(client, alerts)
    assert client.connections >= 2  # the gateway restart forced a reconnect
    assert all(s.starts == 2 for s in pipeline.services.values())


@only_redis
@pytest.mark.parametrize("exchange_and_pipeline", [moves_setup], indirect=True)
async def test_a_redis_restart_is_survived(
        exchange_and_pipeline: tuple[FakeExchange, Pipeline], redis_server: RedisServer) -> None:
    exchange, pipeline = exchange_and_pipeline

    async def outage() -> None:
        await asyncio.to_thread(redis_server.stop)
        await asyncio.sleep(2.0)
        await asyncio.to_thread(redis_server.start)

    async with alert_client(pipeline.ws_url) as client:
        await run_moves(client, exchange, pipeline, {2: outage})
        alerts = await bus_alerts(pipeline)
    assert_each_move_alerted_exactly_once(client, alerts)
    assert all(s.starts == 1 for s in pipeline.services.values()), "a service crashed"


@only_kafka
@pytest.mark.parametrize("exchange_and_pipeline", [moves_setup], indirect=True)
async def test_a_kafka_broker_restart_is_survived(
        exchange_and_pipeline: tuple[FakeExchange, Pipeline], kafka_broker: KafkaBroker) -> None:
    """The in-memory broker comes back empty: what was on it is gone, but no service
    crashes, nothing is shown twice, and every move made once it is back is alerted."""
    exchange, pipeline = exchange_and_pipeline

    async def outage() -> None:
        await asyncio.to_thread(kafka_broker.stop)
        await asyncio.sleep(2.0)
        await asyncio.to_thread(kafka_broker.start)

    later = {(symbol, "up" if pct > 0 else "down") for symbol, pct in MOVES[5:]}
    async with alert_client(pipeline.ws_url) as client:
        await run_moves_until(client, exchange, pipeline, {2: outage},
                              lambda: kinds(client_alerts(client)) >= later)
    alerts = client_alerts(client)
    live = client.live_ids()
    assert len(live) == len(set(live)), f"an alert was shown twice: {live}"
    counts = Counter((a["symbol"], a["direction"]) for a in alerts)
    assert all(n == 1 for n in counts.values()), counts
    assert set(counts) <= set(expected_moves())
    assert all(s.starts == 1 for s in pipeline.services.values()), "a service crashed"


def kinds(alerts: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(a["symbol"], a["direction"]) for a in alerts}


def client_alerts(client: AlertClient) -> list[dict[str, Any]]:
    """Every distinct alert the client was shown, from history or live."""
    unique = {a["id"]: a for a in client.history}
    unique.update({a["id"]: a for _, a in client.live})
    return list(unique.values())


async def run_moves_until(client: AlertClient, exchange: FakeExchange, pipeline: Pipeline,
                          disruptions: dict[int, Action], done: Callable[[], bool]) -> None:
    """Play the moves until ``done()`` (runs where some moves may be lost stop early),
    calling ``disruptions[k]`` once the k-th alert has arrived."""
    started: set[int] = set()
    deadline = time.monotonic() + 120
    while not done():
        seen = len(client.ids())
        for index, action in disruptions.items():
            if index <= seen and index not in started:
                started.add(index)
                await action()
        assert time.monotonic() < deadline, f"only {seen} alerts\n{pipeline.logs()}"
        await asyncio.sleep(0.05)
    await exchange.wait_until_done(timeout=60)
    await asyncio.sleep(1.5)


def faults_setup() -> tuple[Iterator[list[Quote]], float, bool, dict[str, str]]:
    return moves_scenario(), 0.12, False, {"STALE_AFTER_S": "1.5"}


@only_redis  # about the exchange, not the bus
@pytest.mark.parametrize("exchange_and_pipeline", [faults_setup], indirect=True)
async def test_exchange_drop_and_stall_are_followed_by_reconnect_and_data(
        exchange_and_pipeline: tuple[FakeExchange, Pipeline]) -> None:
    exchange, pipeline = exchange_and_pipeline
    ingestor_metrics = f"http://127.0.0.1:{pipeline.ingestor_metrics_port}/metrics"

    async def drop() -> None:
        before = exchange.connections_total
        await exchange.drop()
        await wait_for(lambda: exchange.connections_total > before, 15, "reconnect after drop")

    async def stall() -> None:
        before = exchange.connections_total
        exchange.stall(4.0)
        await wait_for(lambda: exchange.connections_total > before, 15, "reconnect after stall")

    async with alert_client(pipeline.ws_url) as client:
        await run_moves(client, exchange, pipeline, {2: drop, 4: stall})
        alerts = await bus_alerts(pipeline)
    assert_each_move_alerted_exactly_once(client, alerts)
    assert metric(ingestor_metrics, "ingestor_reconnects_total") >= 2
