"""Hostile requests against ``python -m gateway`` (a real process, a real Redis, raw
sockets): each is refused with its 4xx and a closed connection, counted, and costs the
browsers reading alerts meanwhile nothing."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.support.gateway import make_alert, metric_value, open_bus, publish, receive
from tests.support.processes import Service, service_env, wait_answering
from tests.support.raw_http import Answer, exchange_async, request, upgrade
from tests.support.servers import RedisServer
from tools.redis_server import free_port

TOKEN: Final = "hostile-test-admin-token"
READ_TIMEOUT_S: Final = 1.0
BIG: Final = 64 * 1024 * 1024
# A refusal is written as soon as the limit is passed: well under this on any machine.
PROMPT_S: Final = 1.0
ALERT_DELAY_BOUND_S: Final = 0.2


@dataclass
class Gateway:
    service: Service
    port: int
    redis_url: str

    @property
    def pid(self) -> int:
        assert self.service.process is not None
        return self.service.process.pid

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    async def metric(self, name: str, **labels: str) -> float:
        async with httpx.AsyncClient() as http:
            response = await http.get(f"http://127.0.0.1:{self.port}/metrics")
        return metric_value(response.text, name, **labels)

    async def refused(self, reason: str) -> float:
        return await self.metric("gateway_requests_refused_total", reason=reason)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One gateway for the module: each test reads the counters' increase."""
    redis = RedisServer(tmp_path_factory.mktemp("redis"))
    redis.start()
    port = free_port()
    service = Service("gateway", service_env(
        BUS_URL=redis.url, GATEWAY_HOST="127.0.0.1", GATEWAY_PORT=str(port),
        ADMIN_TOKEN=TOKEN, REQUEST_READ_TIMEOUT_S=str(READ_TIMEOUT_S),
        SHUTDOWN_TIMEOUT_S="3", LOG_LEVEL="INFO"), tmp_path_factory.mktemp("logs"))
    service.start()
    try:
        wait_answering(service, f"http://127.0.0.1:{port}/readyz")
        yield Gateway(service, port, redis.url)
        assert service.stop() == 0, service.output()
    except BaseException:
        print(service.output())
        raise
    finally:
        service.kill()
        redis.stop()


@pytest.fixture
async def reader(gateway: Gateway) -> AsyncIterator[ClientConnection]:
    async with connect(f"ws://127.0.0.1:{gateway.port}/ws") as ws:
        assert (await receive(ws))["type"] == "history"
        yield ws


def assert_refused(answer: Answer, status: int) -> None:
    """The status, a short plain-text reason, ``Connection: close``, and a closed stream."""
    assert answer.status == status, answer.raw[:300]
    assert answer.headers.get("connection") == "close", answer.headers
    assert answer.headers.get("content-type", "").startswith("text/plain"), answer.headers
    assert 0 < len(answer.body) < 100, answer.body
    assert answer.answered_after_s is not None
    assert answer.answered_after_s < PROMPT_S, answer
    assert answer.closed, "the connection was left open"


def alerts_in(message: dict[str, object]) -> list[dict[str, object]]:
    """One alert, or several coalesced into one frame."""
    if message["type"] == "alert":
        alert = message["alert"]
        assert isinstance(alert, dict)
        return [alert]
    assert message["type"] == "alerts", message
    alerts = message["alerts"]
    assert isinstance(alerts, list)
    return alerts


async def test_a_64_mb_header_is_refused_at_once_without_delaying_alerts(
        gateway: Gateway, reader: ClientConnection) -> None:
    bus = await open_bus(gateway.redis_url)
    before = await gateway.refused("headers")
    rss_before = gateway.rss_bytes()
    sent: dict[str, float] = {}
    delays: list[float] = []
    try:
        hostile = asyncio.create_task(exchange_async(
            gateway.port, [b"GET /healthz HTTP/1.1\r\nHost: gateway.test\r\nX-Big: ",
                           b"a" * BIG], wait_s=15))

        async def read() -> None:
            while True:
                for alert in alerts_in(await receive(reader, timeout_s=10)):
                    delays.append(time.monotonic() - sent[str(alert["id"])])

        reading = asyncio.create_task(read())
        # Alerts every 20 ms for as long as the attack lasts, and 0.5 s at least.
        started = time.monotonic()
        while not hostile.done() or time.monotonic() - started < 0.5:
            alert = make_alert("BTCUSDT")
            sent[alert.id] = time.monotonic()
            await publish(bus, alert)
            await asyncio.sleep(0.02)
        answer = await hostile
        async with asyncio.timeout(5):
            while len(delays) < len(sent) and not reading.done():
                await asyncio.sleep(0.01)
        if reading.done():
            reading.result()
        reading.cancel()
    finally:
        await bus.close()
    growth = gateway.rss_bytes() - rss_before
    print(f"64 MB header: {answer.status} after {answer.answered_after_s} s, closed after "
          f"{answer.closed_after_s} s, RSS growth {growth / 1e6:.1f} MB, alert delay max "
          f"{max(delays, default=0) * 1000:.1f} ms over {len(delays)} alerts")
    assert_refused(answer, 431)
    assert len(delays) == len(sent) >= 10
    assert max(delays) < ALERT_DELAY_BOUND_S, sorted(delays)[-5:]
    assert growth < 8 * 1024 * 1024, growth
    assert await gateway.refused("headers") == before + 1


async def test_an_oversized_request_line_gets_414(gateway: Gateway) -> None:
    before = await gateway.refused("request_line")
    answer = await exchange_async(gateway.port, [request("GET", "/?q=" + "a" * 9000)])
    assert_refused(answer, 414)
    assert await gateway.refused("request_line") == before + 1


@pytest.mark.parametrize("headers", [
    pytest.param([f"X-Long: {'a' * 9000}"], id="one header line over 8 KiB"),
    pytest.param([f"X-{i}: {'a' * 1000}" for i in range(40)], id="a 40 KB head"),
    pytest.param([f"X-{i}: a" for i in range(101)], id="101 headers"),
])
async def test_oversized_headers_get_431(gateway: Gateway, headers: list[str]) -> None:
    before = await gateway.refused("headers")
    answer = await exchange_async(gateway.port, [request("GET", "/healthz", *headers)])
    assert_refused(answer, 431)
    assert await gateway.refused("headers") == before + 1


async def test_a_keep_alive_connection_serves_then_refuses(gateway: Gateway) -> None:
    """Normal requests near the limits pass (twice on one connection, and two pipelined);
    the next one past a limit is refused on the same connection."""
    near = [f"X-{i}: {'a' * 600}" for i in range(40)]  # a 24 KB head of 41 lines
    pipelined = request("GET", "/healthz") * 2
    answer = await exchange_async(gateway.port, [
        request("GET", "/healthz", *near), pipelined,
        request("GET", "/healthz", f"X-Long: {'a' * 9000}")], pause_s=0.2)
    statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer.raw)]
    assert statuses == [200, 200, 200, 431], answer.raw[-400:]
    assert answer.closed


async def test_an_oversized_body_gets_413_before_it_is_read(gateway: Gateway) -> None:
    before = await gateway.refused("body")
    # Content-Length says 2 MB; only the head is sent: the answer cannot wait for the body.
    head = request("PUT", "/api/admin/rules", f"Authorization: Bearer {TOKEN}",
                   "Content-Type: application/json", "Content-Length: 2000000")
    answer = await exchange_async(gateway.port, [head])
    assert_refused(answer, 413)
    assert await gateway.refused("body") == before + 1
    # A body within the limit reaches the app (which finds it is no rule document).
    body = json.dumps({"rules": "x" * 60_000}).encode()
    answer = await exchange_async(gateway.port, [request(
        "PUT", "/api/admin/rules", f"Authorization: Bearer {TOKEN}",
        "Content-Type: application/json", "Connection: close", body=body)])
    assert answer.status == 422, answer.raw[:300]


@pytest.mark.parametrize(("method", "path", "statuses"), [
    ("PUT", "/api/admin/rules", {413}),
    # No route reads this body: the app may have answered before the limit was reached.
    ("POST", "/api/alerts", {405, 413}),
])
async def test_a_chunked_body_is_cut_at_the_limit(gateway: Gateway, method: str, path: str,
                                                  statuses: set[int]) -> None:
    before = await gateway.refused("body")
    head = request(method, path, f"Authorization: Bearer {TOKEN}",
                   "Content-Type: application/json", "Transfer-Encoding: chunked")
    chunk = b"4000\r\n" + b"[" * 0x4000 + b"\r\n"  # 16 KiB
    answer = await exchange_async(gateway.port, [head] + [chunk] * 200)  # 3.2 MB
    assert answer.status in statuses, answer.raw[:300]
    assert answer.raw.count(b"HTTP/1.1 ") == 1, answer.raw[:600]
    assert answer.closed, "the connection was left open"
    assert answer.closed_after_s is not None
    assert answer.closed_after_s < PROMPT_S
    assert await gateway.refused("body") == before + 1


@pytest.mark.parametrize(("handshake", "status", "reason"), [
    pytest.param(upgrade("/ws?since=" + "a" * 9000), 414, "request_line", id="request line"),
    pytest.param(upgrade("/ws", f"Cookie: {'a' * 9000}"), 431, "headers", id="one header"),
    # 8192 bytes as sent, 8193 as handed on to the handshake ("x-pad: ..."): 431 too.
    pytest.param(upgrade("/ws", f"X-Pad:{'a' * 8184}"), 431, "headers",
                 id="one header as rebuilt"),
])
async def test_an_oversized_websocket_upgrade_is_answered_closed_and_counted(
        gateway: Gateway, handshake: bytes, status: int, reason: str) -> None:
    before = await gateway.refused(reason)
    answer = await exchange_async(gateway.port, [handshake])
    assert_refused(answer, status)
    assert await gateway.refused(reason) == before + 1
    async with asyncio.timeout(5):  # no place of MAX_CLIENTS taken (the last test's gone)
        while await gateway.metric("gateway_clients_connected") != 0:
            await asyncio.sleep(0.05)
    # A handshake within the limits still upgrades.
    ok = await exchange_async(gateway.port, [upgrade("/ws", f"X-Pad: {'a' * 4000}")],
                              wait_s=1)
    assert ok.status == 101, ok.raw[:300]


async def test_a_slowloris_trickle_is_cut(gateway: Gateway) -> None:
    before = await gateway.refused("timeout")
    trickle = [b"GET /healthz HTTP/1.1\r\nHost: gateway.test\r\n"] + [b"X"] * 100
    answer = await exchange_async(gateway.port, trickle, pause_s=0.05, wait_s=8)
    assert answer.status == 408, answer.raw
    assert answer.closed
    assert answer.answered_after_s is not None
    assert READ_TIMEOUT_S - 0.1 < answer.answered_after_s < READ_TIMEOUT_S + PROMPT_S
    # A connection that never says anything is closed too, without an answer.
    idle = await exchange_async(gateway.port, [], wait_s=8)
    assert idle.closed
    assert idle.raw == b""
    assert idle.closed_after_s is not None
    assert idle.closed_after_s < READ_TIMEOUT_S + PROMPT_S
    assert await gateway.refused("timeout") == before + 2
