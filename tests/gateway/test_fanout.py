"""The fan-out's write path under a real uvicorn and real WebSocket clients: coalesced and
single frames, history then live exactly once and in order, a client that never reads, a
client that leaves in the middle of a fan-out."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest
from websockets.asyncio.client import ClientConnection, connect

from common.bus import Delivery
from common.bus.redis_streams import RedisTransport
from common.partitioning import ALERTS_STREAM
from common.schemas import Alert, encode_alert
from gateway.app import create_app
from tests.support.gateway import (
    ScriptedReader,
    ScriptedTransport,
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


def deliveries(alerts: list[Alert]) -> list[Delivery]:
    return [Delivery(ALERTS_STREAM, f"{i}-0", encode_alert(a), 1) for i, a in enumerate(alerts)]


async def live_messages(ws: ClientConnection, count: int) -> list[str]:
    """The types of the live messages that carry the next ``count`` alerts."""
    kinds: list[str] = []
    got = 0
    while got < count:
        message = await receive(ws)
        kinds.append(message["type"])
        got += len(live_alerts(message))
    return kinds


async def test_single_and_coalesced_frames_after_the_history_exactly_once_in_order() -> None:
    """Reads of one, several, one alerts (scripted, so that what one read returns is
    known): two clients connected at different points each get every alert once, in
    order, the history first."""
    backlog = [make_alert(f"H{i}USDT") for i in range(3)]
    first, second, third = ([make_alert(f"A{i}USDT") for i in range(5)], [make_alert("BUSDT")],
                            [make_alert(f"C{i}USDT") for i in range(4)])
    go, go_again = asyncio.Event(), asyncio.Event()
    reader = ScriptedReader([deliveries(backlog), go, deliveries(first), deliveries(second),
                             go_again, deliveries(third)])
    settings = gateway_settings("redis://unused", history_size=50)
    app = create_app(settings, ScriptedTransport(reader))  # type: ignore[arg-type]
    async with serving(app, settings) as gw:
        await gw.wait_ready()
        async with connect(gw.ws_url) as early:
            assert ids((await receive(early))["alerts"]) == [a.id for a in backlog]
            go.set()
            assert await live_messages(early, 6) == ["alerts", "alert"]
            async with connect(gw.ws_url) as late:
                history = ids((await receive(late))["alerts"])
                assert history == [a.id for a in backlog + first + second]
                go_again.set()
                for ws in (early, late):
                    assert ids(await receive_alerts(ws, 4)) == [a.id for a in third]
        assert await gw.metric("gateway_deliveries_total") == 6 + 2 * 4



async def test_a_client_that_never_reads_is_dropped_and_the_others_stay_prompt(
        redis_server: RedisServer, bus: RedisTransport) -> None:
    """While the stalled client's buffer fills and it is dropped, the reading clients'
    delay (write to receipt, one alert at a time) stays small."""
    async with running_gateway(redis_server.url, ws_max_buffered_bytes=64 * 1024) as gw:
        readers = [await connect(gw.ws_url) for _ in range(3)]
        try:
            for ws in readers:
                await receive(ws)
            stalled = await asyncio.to_thread(stalled_client, gw.port)
            try:
                await gw.wait_metric("gateway_clients_connected", 4)
                delays: list[float] = []
                for i in range(400):
                    alert = make_alert(f"S{i}USDT", path_points=60)
                    started = time.perf_counter()
                    await publish(bus, alert)
                    for ws in readers:
                        assert ids(await receive_alerts(ws, 1)) == [alert.id]
                    delays.append(time.perf_counter() - started)
                await gw.wait_metric("gateway_clients_dropped_total", 1, reason="too_slow")
                await gw.wait_metric("gateway_clients_connected", 3)
            finally:
                stalled.close()
        finally:
            for ws in readers:
                await ws.close()
    delays.sort()
    # Generous bounds for a shared 2-core machine; a fan-out that waited on the stalled
    # socket would take its close timeout (1 s) or never end.
    assert delays[len(delays) // 2] < 0.05, f"median delay {delays[len(delays) // 2]:.3f}s"
    assert delays[-1] < 0.5, f"slowest delay {delays[-1]:.3f}s"


async def test_clients_that_leave_mid_fan_out_cost_nothing(
        redis_server: RedisServer, bus: RedisTransport,
        caplog: pytest.LogCaptureFixture) -> None:
    """Connections reset (no close handshake) while alerts stream in: the others get
    every alert, nothing is logged as an error or a warning, and the reader keeps going."""
    caplog.set_level(logging.DEBUG)
    async with running_gateway(redis_server.url) as gw, connect(gw.ws_url) as stayer:
        await receive(stayer)
        leavers = [await connect(gw.ws_url) for _ in range(20)]
        for ws in leavers:
            await receive(ws)
        await gw.wait_metric("gateway_clients_connected", 21)
        alerts = [make_alert(f"L{i}USDT", path_points=60) for i in range(60)]
        for i, alert in enumerate(alerts):
            await publish(bus, alert)
            if i % 3 == 0 and leavers:
                leaver = leavers.pop()
                # RST instead of FIN: the peer vanishes with data in flight.
                sock = leaver.transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                leaver.transport.abort()
        assert ids(await receive_alerts(stayer, len(alerts))) == [a.id for a in alerts]
        for ws in leavers:
            assert ids(await receive_alerts(ws, len(alerts))) == [a.id for a in alerts]
            await ws.close()
        await gw.wait_metric("gateway_clients_connected", 1)
        assert (await gw.http.get("/readyz")).status_code == 200
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
