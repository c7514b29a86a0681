"""The gateway against a real Redis-compatible server, through real HTTP and WebSockets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from common.bus.redis_streams import RedisTransport
from gateway.app import create_app
from tests.support.gateway import (
    ALERT_FIELDS,
    ScriptedReader,
    ScriptedTransport,
    assert_silent,
    gateway_settings,
    ids,
    live_alerts,
    make_alert,
    publish,
    receive,
    receive_alerts,
    running_gateway,
    serving,
    stalled_client,
)
from tests.support.servers import RedisServer


async def test_history_on_connect_then_each_live_alert_once(
        redis_server: RedisServer, bus: RedisTransport) -> None:
    old = [make_alert("BTCUSDT"), make_alert("ETHUSDT", change_pct=-3.1),
           make_alert("SOLUSDT", path_points=3)]
    await publish(bus, *old)
    async with running_gateway(redis_server.url, history_size=2) as gw, \
            connect(gw.ws_url) as ws:
        history = await receive(ws)
        assert history["type"] == "history"
        assert ids(history["alerts"]) == [old[1].id, old[2].id]  # the last 2, oldest first
        eth, sol = history["alerts"]
        assert set(eth) == ALERT_FIELDS
        assert eth["direction"] == "down"
        assert eth["change_pct"] == -3.1
        assert eth["path"] is None
        assert sol["path"] == [list(point) for point in old[2].path or []]

        live = make_alert("DOGEUSDT", change_pct=4.0)
        await publish(bus, live)
        (got,) = await receive_alerts(ws, 1)
        assert set(got) == ALERT_FIELDS
        assert got == {
            "id": live.id, "symbol": "DOGEUSDT", "direction": "up", "change_pct": 4.0,
            "price": live.price, "base_price": 100.0, "window_s": 60, "threshold_pct": 2.0,
            "event_time_ms": live.event_time_ms, "detected_at_ms": live.detected_at_ms,
            "source": "mini_ticker", "path": None, "rule": None, "level": 1,
            "kind": "price", "threshold": None, "notional_usdt": None, "liquidations": None,
            "funding_rate_pct": None, "next_funding_ms": None, "volume_usdt": None,
            "baseline_volume_usdt": None, "baseline_s": None,
        }
        await assert_silent(ws)


async def test_alerts_racing_the_connect_arrive_exactly_once(
        redis_server: RedisServer, bus: RedisTransport) -> None:
    """Clients connect while alerts stream in: each sees a gap-free run, no repeats."""
    alerts = [make_alert(f"S{i}USDT") for i in range(150)]

    async def watch() -> list[str]:
        async with connect(gw.ws_url) as ws:
            seen = ids((await receive(ws))["alerts"])
            while alerts[-1].id not in seen:
                seen.extend(ids(live_alerts(await receive(ws))))
            return seen

    async def produce() -> None:
        for alert in alerts:
            await publish(bus, alert)
            await asyncio.sleep(0.002)

    async with running_gateway(redis_server.url, history_size=5) as gw:
        async with asyncio.TaskGroup() as group:
            producer = group.create_task(produce())
            watchers = []
            for _ in range(12):
                watchers.append(group.create_task(watch()))
                await asyncio.sleep(0.02)
        assert producer.done()
    order = [a.id for a in alerts]
    for watcher in watchers:
        seen = watcher.result()
        assert len(seen) == len(set(seen)), "an alert was sent twice"
        start = order.index(seen[0])
        assert seen == order[start:], "an alert was lost or reordered"


async def test_same_alert_id_twice_on_the_bus_is_forwarded_once(
        redis_server: RedisServer, bus: RedisTransport) -> None:
    twice, after = make_alert("XRPUSDT"), make_alert("ADAUSDT")
    async with running_gateway(redis_server.url) as gw, connect(gw.ws_url) as ws:
        assert (await receive(ws))["alerts"] == []
        await publish(bus, twice, twice)
        await publish(bus, twice, after)
        assert ids(await receive_alerts(ws, 2)) == [twice.id, after.id]
        await assert_silent(ws)
        assert await gw.metric("gateway_alerts_received_total") == 2
        assert await gw.metric("gateway_duplicate_alerts_total") == 2
        assert ids((await gw.http.get("/api/alerts")).json()["alerts"]) == [after.id, twice.id]



async def test_a_client_that_stops_reading_is_dropped_and_others_keep_up(
        redis_server: RedisServer, bus: RedisTransport) -> None:
    alerts = [make_alert(f"P{i}USDT", path_points=60) for i in range(800)]
    async with running_gateway(redis_server.url, ws_max_buffered_bytes=16 * 1024) as gw, \
            connect(gw.ws_url) as good:
        await receive(good)
        stalled = await asyncio.to_thread(stalled_client, gw.port)
        try:
            await gw.wait_metric("gateway_clients_connected", 2)
            loop = asyncio.get_running_loop()
            slowest = 0.0
            for start in range(0, len(alerts), 50):
                batch = alerts[start:start + 50]
                started = loop.time()
                await publish(bus, *batch)
                assert ids(await receive_alerts(good, len(batch))) == [a.id for a in batch]
                slowest = max(slowest, loop.time() - started)
            assert slowest < 2, f"the reading client waited {slowest:.2f}s for a batch"
            await gw.wait_metric("gateway_clients_dropped_total", 1, reason="too_slow")
            await gw.wait_metric("gateway_clients_connected", 1)
            # Still live for the one that reads.
            last = make_alert("LASTUSDT")
            await publish(bus, last)
            assert ids(await receive_alerts(good, 1)) == [last.id]
        finally:
            stalled.close()


async def test_clients_beyond_max_clients_are_refused_with_a_reason(
        redis_server: RedisServer) -> None:
    async with running_gateway(redis_server.url, max_clients=2) as gw:
        async with connect(gw.ws_url) as first, connect(gw.ws_url) as second:
            await receive(first)
            await receive(second)
            async with connect(gw.ws_url) as third:
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(third.recv(), 5)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1013
            assert closed.value.rcvd.reason == "too many clients"
            assert await gw.metric("gateway_clients_dropped_total", reason="max_clients") == 1
            assert await gw.metric("gateway_clients_connected") == 2
        await gw.wait_metric("gateway_clients_connected", 0)
        async with connect(gw.ws_url) as again:
            assert (await receive(again))["type"] == "history"


async def test_a_client_flooding_messages_is_closed_with_1008(redis_server: RedisServer) -> None:
    async with running_gateway(redis_server.url) as gw, connect(gw.ws_url) as ws:
        await receive(ws)

        async def chatter() -> None:
            for _ in range(100):
                await ws.send("hello")
            await receive(ws, 5)

        with pytest.raises(ConnectionClosed) as closed:
            await chatter()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1008
        await gw.wait_metric("gateway_clients_dropped_total", 1, reason="flood")


async def test_oversized_client_message_closes_the_connection(redis_server: RedisServer) -> None:
    async with running_gateway(redis_server.url) as gw, connect(gw.ws_url) as ws:
        await receive(ws)

        async def oversized() -> None:
            await ws.send("x" * 100_000)
            await receive(ws, 5)

        with pytest.raises(ConnectionClosed) as closed:
            await oversized()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009


async def test_api_alerts_limit_and_order(redis_server: RedisServer, bus: RedisTransport) -> None:
    alerts = [make_alert(f"A{i}USDT") for i in range(6)]
    await publish(bus, *alerts)
    async with running_gateway(redis_server.url, history_size=4) as gw:
        newest_first = [a.id for a in reversed(alerts)]
        default = (await gw.http.get("/api/alerts")).json()
        assert ids(default["alerts"]) == newest_first[:4]
        assert set(default["alerts"][0]) == ALERT_FIELDS
        two = await gw.http.get("/api/alerts", params={"limit": 2})
        assert two.status_code == 200
        assert two.headers["content-type"] == "application/json"
        assert ids(two.json()["alerts"]) == newest_first[:2]
        many = (await gw.http.get("/api/alerts", params={"limit": 1000})).json()
        assert ids(many["alerts"]) == newest_first
        for bad in ("0", "abc", "1001", "-5"):
            response = await gw.http.get("/api/alerts", params={"limit": bad})
            assert response.status_code == 422, bad
            detail = response.json()["detail"]
            assert detail[0]["loc"] == ["query", "limit"]
            assert detail[0]["msg"]


async def test_readiness_follows_redis_and_the_reader_survives_a_restart(
        redis_server: RedisServer, bus: RedisTransport) -> None:
    async with running_gateway(redis_server.url) as gw, connect(gw.ws_url) as ws:
        await receive(ws)
        before = make_alert("BNBUSDT")
        await publish(bus, before)
        assert ids(await receive_alerts(ws, 1)) == [before.id]
        assert (await gw.http.get("/readyz")).json()["status"] == "ready"

        await asyncio.to_thread(redis_server.stop)
        down = await gw.wait_ready(False, timeout_s=5)
        assert down.status_code == 503
        assert down.json()["reason"]
        assert (await gw.http.get("/healthz")).json() == {"status": "ok"}
        assert await gw.metric("gateway_reader_up") == 0

        await asyncio.to_thread(redis_server.start)
        await gw.wait_ready(True, timeout_s=10)
        after = make_alert("LTCUSDT")
        await publish(bus, after)
        # The old alert survived in the AOF but is not sent again; the new one flows.
        assert ids(await receive_alerts(ws, 1)) == [after.id]
        await assert_silent(ws)
        assert await gw.metric("gateway_bus_errors_total") >= 1


async def test_page_static_files_and_health(redis_server: RedisServer) -> None:
    async with running_gateway(redis_server.url) as gw:
        page = await gw.http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "app.js" in page.text
        assert "style.css" in page.text
        script = await gw.http.get("/app.js")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith(("text/javascript",
                                                          "application/javascript"))
        assert (await gw.http.get("/style.css")).status_code == 200
        assert (await gw.http.get("/healthz")).json() == {"status": "ok"}
        assert (await gw.http.get("/nothing-here")).status_code == 404


async def test_metrics_count_alerts_once_and_deliveries_per_client(
        redis_server: RedisServer, bus: RedisTransport) -> None:
    alerts = [make_alert("BTCUSDT"), make_alert("ETHUSDT"), make_alert("SOLUSDT")]
    async with running_gateway(redis_server.url) as gw, \
            connect(gw.ws_url) as one, connect(gw.ws_url) as two:
        await receive(one)
        await receive(two)
        assert await gw.metric("gateway_clients_connected") == 2
        await publish(bus, *alerts)
        for ws in (one, two):
            assert ids(await receive_alerts(ws, 3)) == [a.id for a in alerts]
        metrics: dict[str, Any] = {
            name: await gw.metric(name) for name in (
                "gateway_alerts_received_total", "gateway_deliveries_total",
                "gateway_bad_payloads_total", "gateway_reader_up")}
        assert metrics == {"gateway_alerts_received_total": 3, "gateway_deliveries_total": 6,
                           "gateway_bad_payloads_total": 0, "gateway_reader_up": 1}
        text = (await gw.http.get("/metrics")).text
        assert 'gateway_clients_dropped_total{reason="too_slow"} 0.0' in text


async def test_clients_waiting_for_the_startup_backlog_count_toward_max_clients() -> None:
    """Until the alert history is loaded a client waits; it holds a place of MAX_CLIENTS
    while it does, and gives it back as soon as it goes away."""
    backlog_read = asyncio.Event()
    settings = gateway_settings("redis://unused", max_clients=1)
    app = create_app(settings, ScriptedTransport(ScriptedReader([backlog_read])))  # type: ignore[arg-type]
    async with serving(app, settings) as gw:
        async with connect(gw.ws_url) as waiting:
            await gw.wait_metric("gateway_clients_connected", 1)
            async with connect(gw.ws_url) as refused:
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(refused.recv(), 5)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
                1013, "too many clients")
            assert await gw.metric("gateway_clients_dropped_total", reason="max_clients") == 1
            await assert_silent(waiting)  # still waiting: no history yet
        # It left before the history came: its place is free again.
        await gw.wait_metric("gateway_clients_connected", 0)
        async with connect(gw.ws_url) as late:
            await gw.wait_metric("gateway_clients_connected", 1)
            backlog_read.set()
            assert (await receive(late))["type"] == "history"
            assert await gw.metric("gateway_clients_connected") == 1
        await gw.wait_metric("gateway_clients_connected", 0)
        assert await gw.metric("gateway_clients_dropped_total", reason="max_clients") == 1


async def test_answers_on_one_connection_do_not_wait_for_a_delayed_ack(
        redis_server: RedisServer) -> None:
    """Without TCP_NODELAY on the listening socket every answer (head and body written
    apart) waited for the client's delayed ACK: 40-45 ms each, on loopback."""
    async with running_gateway(redis_server.url) as gw:
        timings = []
        for _ in range(21):
            started = asyncio.get_running_loop().time()
            assert (await gw.http.get("/api/alerts?limit=1")).status_code == 200
            timings.append(asyncio.get_running_loop().time() - started)
    timings.sort()
    assert timings[10] < 0.025, timings
