"""The reverse proxy of the compose stack (``infra/nginx``): a real nginx, on the shipped
configuration, in front of two real gateway replicas (``python -m gateway``) on one bus."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

from common.bus.redis_streams import RedisTransport
from tests.support.gateway import (
    assert_silent,
    ids,
    make_alert,
    open_bus,
    publish,
    receive,
    receive_alerts,
)
from tests.support.processes import Service, metric
from tests.support.proxy import NginxProxy
from tests.support.servers import RedisServer
from tools.redis_server import free_port


@dataclass
class Replica:
    service: Service
    port: int

    def http(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def clients(self) -> float:
        return metric(self.http("/metrics"), "gateway_clients_connected")


@pytest.fixture
async def bus(redis_server: RedisServer) -> AsyncIterator[RedisTransport]:
    transport = await open_bus(redis_server.url)
    yield transport
    await transport.close()


@pytest.fixture
def stack(redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[NginxProxy, list[Replica]]]:
    """Two replicas, then nginx before them, as compose starts them."""
    ports = [free_port(), free_port()]
    proxy = NginxProxy(tmp_path / "nginx", [f"127.0.0.1:{port}" for port in ports])
    replicas = [Replica(Service("gateway", {
        "BUS_URL": redis_server.url, "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(port),
        "SHUTDOWN_TIMEOUT_S": "5", "READ_BLOCK_MS": "500", "BUS_TIMEOUT_S": "2",
        # As in compose: browsers open the page at the proxy's address.
        "ALLOWED_ORIGINS": proxy.origin,
    }, tmp_path / f"replica-{i}"), port) for i, port in enumerate(ports)]
    try:
        for replica in replicas:
            replica.service.log_dir.mkdir()
            replica.service.start()
        for replica in replicas:
            _wait_ok(replica.http("/readyz"))
        proxy.start()
        yield proxy, replicas
    except BaseException:
        print(proxy.output(), *(r.service.output() for r in replicas), sep="\n")
        raise
    finally:
        proxy.stop()
        for replica in replicas:
            replica.service.kill()


async def open_socket(proxy: NginxProxy, query: str = "") -> ClientConnection:
    return await connect(proxy.ws_url + query, origin=Origin(proxy.origin))


async def test_through_nginx_a_browser_resumes_with_since_on_the_other_replica(
        stack: tuple[NginxProxy, list[Replica]], bus: RedisTransport) -> None:
    proxy, replicas = stack
    ws = await open_socket(proxy)
    assert (await receive(ws))["type"] == "history"
    first = make_alert("BTCUSDT")
    await publish(bus, first)
    assert ids(await receive_alerts(ws, 1)) == [first.id]
    counts = await asyncio.gather(*(asyncio.to_thread(r.clients) for r in replicas))
    (serving,) = [r for r, count in zip(replicas, counts, strict=True) if count == 1]
    (other,) = [r for r in replicas if r is not serving]

    # The replica goes away (a deploy, a crash): its browser is told 1012 through nginx ...
    assert serving.service.process is not None
    serving.service.process.send_signal(signal.SIGTERM)
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1012
    assert await asyncio.to_thread(serving.service.process.wait, 15) == 0
    missed = [make_alert("ETHUSDT"), make_alert("SOLUSDT")]
    await publish(bus, *missed)

    # ... and reconnects, through the same address, to the replica that is left: it gets
    # exactly what it missed, then the live alerts.
    resumed_ws = await open_socket(proxy, f"?since={first.id}")
    try:
        resumed = await receive(resumed_ws)
        assert resumed["type"] == "history"
        assert resumed.get("resumed") is True
        assert ids(resumed["alerts"]) == [a.id for a in missed]
        assert await asyncio.to_thread(other.clients) == 1
        live = make_alert("XRPUSDT")
        await publish(bus, live)
        assert ids(await receive_alerts(resumed_ws, 1)) == [live.id]
        await assert_silent(resumed_ws)
    finally:
        await resumed_ws.close()


def test_nginx_serves_the_page_and_the_api_of_the_replicas(
        stack: tuple[NginxProxy, list[Replica]]) -> None:
    proxy, _ = stack
    for path in ("/", "/api/alerts", "/readyz"):
        with urllib.request.urlopen(proxy.origin + path, timeout=5) as response:
            assert response.status == 200, path
    # Bounded: an oversized header is refused by the proxy itself.
    request = urllib.request.Request(proxy.origin + "/", headers={"X-Big": "x" * 64_000})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code in {400, 431, 494}


def _wait_ok(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
            if response.status == 200:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} not ready")
        time.sleep(0.05)
