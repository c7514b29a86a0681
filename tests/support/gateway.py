"""Helpers for the gateway tests: alerts written as the detector writes them, a gateway
served by uvicorn on a free port inside the test, and readers for its answers."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection

from common.bus import BroadcastReader, BusUnavailable, Delivery, Record, Retention
from common.bus.redis_streams import RedisConfig, RedisTransport
from common.partitioning import ALERTS_STREAM
from common.schemas import Alert, alert_id, encode_alert
from common.settings import GatewaySettings
from gateway.app import create_app
from gateway.service import bind_socket, serve
from gateway.wire import BEHIND, GONE, WRITTEN

ALERT_FIELDS: Final = {"id", "symbol", "direction", "change_pct", "price", "base_price",
                       "window_s", "threshold_pct", "event_time_ms", "detected_at_ms",
                       "source", "path", "rule", "level", "kind", "threshold",
                       "notional_usdt", "liquidations", "funding_rate_pct", "next_funding_ms",
                       "volume_usdt", "baseline_volume_usdt", "baseline_s"}
BASE_TIME_MS: Final = 1_780_000_000_000
_sequence = itertools.count()


def make_alert(symbol: str = "BTCUSDT", *, event_time_ms: int | None = None,
               change_pct: float = 2.5, path_points: int = 0) -> Alert:
    """A valid alert; each call gets a later event time (hence a new id) unless given one."""
    event_time = event_time_ms if event_time_ms is not None else (
        BASE_TIME_MS + 1000 * next(_sequence))
    base = 100.0
    price = base * (1 + change_pct / 100)
    path = [(event_time - 1000 * (path_points - i), base + i * 0.01)
            for i in range(path_points)] or None
    return Alert(id=alert_id(symbol, 60, event_time), symbol=symbol,
                 direction="up" if change_pct >= 0 else "down", change_pct=change_pct,
                 price=price, base_price=base, window_s=60, threshold_pct=2.0,
                 event_time_ms=event_time, detected_at_ms=event_time + 3, source="mini_ticker",
                 path=path)


async def open_bus(url: str) -> RedisTransport:
    bus = RedisTransport(RedisConfig(url, timeout_s=2))
    await bus.start()
    await bus.declare([ALERTS_STREAM], Retention(max_len=10_000))
    return bus


async def publish(bus: RedisTransport, *alerts: Alert, attempts: int = 20) -> None:
    """``XADD alerts MAXLEN ~ 10000 * d <msgpack>``, exactly as the detector does; retried,
    because a pooled connection to a restarted server fails once."""
    records = [Record(ALERTS_STREAM, a.symbol, encode_alert(a)) for a in alerts]
    for attempt in range(attempts):
        try:
            await bus.publish(records)
            return
        except BusUnavailable:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.1)


@dataclass
class RunningGateway:
    app: FastAPI
    port: int
    http: httpx.AsyncClient

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def metric(self, name: str, **labels: str) -> float:
        response = await self.http.get("/metrics")
        response.raise_for_status()
        return metric_value(response.text, name, **labels)

    async def wait_metric(self, name: str, value: float, timeout_s: float = 5.0,
                          **labels: str) -> None:
        async with asyncio.timeout(timeout_s):
            while await self.metric(name, **labels) != value:
                await asyncio.sleep(0.02)

    async def wait_ready(self, ready: bool = True, timeout_s: float = 10.0) -> httpx.Response:
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    response = await self.http.get("/readyz")
                except httpx.TransportError:
                    await asyncio.sleep(0.02)
                    continue
                if (response.status_code == 200) == ready:
                    return response
                await asyncio.sleep(0.05)


def gateway_settings(bus_url: str, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "bus_url": bus_url, "gateway_host": "127.0.0.1", "gateway_port": 0,
        "bus_timeout_s": 2.0, "read_block_ms": 500, "shutdown_timeout_s": 4.0,
    }
    values.update(overrides)
    # model_validate skips the environment and .env: a test sees only what it sets.
    return GatewaySettings.model_validate(values)


@asynccontextmanager
async def serving(app: FastAPI, settings: GatewaySettings) -> AsyncIterator[RunningGateway]:
    """The app under uvicorn (the service's own ``serve``) on a free port, once it
    listens (ready or not)."""
    sock = bind_socket("127.0.0.1", 0)
    port = int(sock.getsockname()[1])
    stopping = asyncio.Event()
    server = asyncio.create_task(serve(app, settings, sock, stopping))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            async with asyncio.timeout(10):
                while True:  # listening once it answers at all
                    try:
                        await http.get("/healthz")
                        break
                    except httpx.TransportError:
                        await asyncio.sleep(0.02)
            yield RunningGateway(app, port, http)
    finally:
        stopping.set()
        try:
            await asyncio.wait_for(server, 10)
        finally:
            sock.close()


async def serve_until_it_fails(app: FastAPI, settings: GatewaySettings) -> Exception:
    """The service's ``serve`` with nobody asking it to stop: it must end on its own, with
    the error that stops the service."""
    sock = bind_socket("127.0.0.1", 0)
    try:
        await asyncio.wait_for(serve(app, settings, sock, asyncio.Event()), 10)
    except Exception as exc:
        return exc
    finally:
        sock.close()
    raise AssertionError("serve ended without an error")
@asynccontextmanager
async def running_gateway(bus_url: str, **overrides: Any) -> AsyncIterator[RunningGateway]:
    """The real app on a free port, on a Redis transport of its own, once ready."""
    settings = gateway_settings(bus_url, **overrides)
    transport = RedisTransport(RedisConfig(bus_url, timeout_s=settings.bus_timeout_s))
    try:
        async with serving(create_app(settings, transport), settings) as gateway:
            await gateway.wait_ready()
            yield gateway
    finally:
        await transport.close()


class ScriptedReader:
    """A broadcast reader whose answers (or failures) are given in advance; an event in the
    script is waited for, then read as an empty answer; an empty script blocks."""

    def __init__(self, script: list[list[Delivery] | Exception | asyncio.Event]) -> None:
        self.script = script

    async def _next(self) -> list[Delivery]:
        if not self.script:
            await asyncio.sleep(3600)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        if isinstance(step, asyncio.Event):
            await step.wait()
            return []
        return step

    async def backlog(self, count: int) -> list[Delivery]:
        return await self._next()

    async def read(self, count: int, block_ms: int) -> list[Delivery]:
        return await self._next()

    async def close(self) -> None: ...


class ScriptedTransport:
    """A transport whose ``alerts`` reader is scripted; every other stream is empty."""

    def __init__(self, reader: ScriptedReader) -> None:
        self.reader = reader

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        return True

    async def declare(self, streams: Sequence[str], retention: object) -> None: ...

    async def publish(self, records: Sequence[Record]) -> None: ...

    def group_consumer(self, *args: object, **kwargs: object) -> object:
        raise NotImplementedError

    def broadcast_reader(self, stream: str) -> BroadcastReader:
        if stream != ALERTS_STREAM:
            return ScriptedReader([[]])
        return self.reader


class RecordingSink:
    """Where the hub's frames go in the hub's own tests: decoded and kept in order, as a
    connection that reads everything; ``behind`` is what it reports as still buffered."""

    def __init__(self, behind: int = 0) -> None:
        self.messages: list[dict[str, Any]] = []
        self.behind = behind
        self.open = True

    def offer(self, frame: bytes, max_buffered: int) -> int:
        if not self.open:
            return GONE
        if self.behind > max_buffered:
            return BEHIND
        assert frame[0] == 0x81, "a final text frame"
        length, start = frame[1], 2
        if length == 126:
            length, start = int.from_bytes(frame[2:4], "big"), 4
        elif length == 127:
            length, start = int.from_bytes(frame[2:10], "big"), 10
        assert len(frame) == start + length
        self.messages.append(json.loads(frame[start:]))
        return WRITTEN

    def alert_ids(self) -> list[str]:
        """The ids of the live alerts received, across ``alert`` and ``alerts`` messages."""
        return [a["id"] for m in self.messages for a in live_alerts(m)]


def live_alerts(message: dict[str, Any]) -> list[dict[str, Any]]:
    if message["type"] == "alert":
        return [message["alert"]]
    if message["type"] == "alerts":
        assert len(message["alerts"]) > 1, "one alert goes as an alert message"
        return list(message["alerts"])
    return []


BACKGROUND_TYPES: Final = frozenset({"rules", "ping", "health"})


async def receive(ws: ClientConnection, timeout_s: float = 5.0,
                  skip: frozenset[str] = BACKGROUND_TYPES) -> dict[str, Any]:
    """The next message, passing over the ones that any connection may get at any time."""
    async with asyncio.timeout(timeout_s):
        while True:
            message = await ws.recv()
            assert isinstance(message, str), "the gateway sends JSON text frames"
            document = json.loads(message)
            assert isinstance(document, dict)
            if document["type"] not in skip:
                return document


async def receive_alerts(ws: ClientConnection, count: int,
                         timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """The next ``count`` live alerts, whether they come one per message or several
    (``alerts``); a message that would overshoot ``count`` fails the test."""
    alerts: list[dict[str, Any]] = []
    while len(alerts) < count:
        message = await receive(ws, timeout_s)
        assert message["type"] in {"alert", "alerts"}, message["type"]
        alerts.extend(live_alerts(message))
    assert len(alerts) == count, f"{len(alerts) - count} more alerts than expected"
    return alerts


async def assert_silent(ws: ClientConnection, seconds: float = 0.3) -> None:
    try:
        extra = await receive(ws, seconds)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected message: {extra!r}")


def ids(alerts: Sequence[dict[str, Any]]) -> list[str]:
    return [a["id"] for a in alerts]


def field_of(response: httpx.Response) -> list[Any]:
    """Where a 422 of the gateway says the bad value is (its one error's ``loc``), after
    checking that it is a 422 with a reason."""
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["msg"]
    return list(error["loc"])


def metric_value(exposition: str, name: str, **labels: str) -> float:
    """The first sample ``name`` with ``labels`` in a Prometheus text exposition."""
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in labels.items()):
                return float(sample.value)
    raise KeyError(name)


def stalled_client(port: int) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads again (a small
    receive buffer, so the gateway's side fills soon)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 b"Sec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock
