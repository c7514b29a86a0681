"""``/metrics``, ``/healthz`` and ``/readyz`` (health with details) for the headless
services, and their registries.

A few lines of asyncio instead of ``prometheus_client.start_http_server``: that one runs in
a thread that keeps answering "healthy" after the event loop has wedged, which is exactly
the failure a health check exists to catch (a scrape that times out is, likewise, a sign the
loop is stuck: Prometheus then marks the target down).

Every service keeps its metrics on a registry of its own (``new_registry``) rather than the
process-global one, so that tests can run several instances in one process and read each
one's counters without cross-talk, and so that ``/metrics`` shows exactly what this
service counts.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES: Final = 8192


def new_registry() -> CollectorRegistry:
    """A service's own registry, with the process, platform and GC collectors added so
    that a scrape still shows the usual ``process_*`` and ``python_*`` series."""
    registry = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


class HealthServer:
    """Serves one registry; no default, so that a service cannot silently expose the
    process-global registry (empty of its metrics) by forgetting to pass its own."""

    def __init__(self, host: str, port: int, *, healthy: Callable[[], bool],
                 registry: CollectorRegistry,
                 details: Callable[[], Mapping[str, object]] = dict) -> None:
        self._host = host
        self._port = port
        self._healthy = healthy
        self._details = details
        self._registry = registry
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, self._port)
        log.info("metrics and health on http://%s:%d", self._host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        parts = head[:MAX_REQUEST_BYTES].split(b" ", 2)
        method, path = (parts[0], parts[1].split(b"?", 1)[0]) if len(parts) > 2 else (b"", b"")
        if method not in (b"GET", b"HEAD"):
            status, ctype, body = b"405 Method Not Allowed", b"text/plain", b"GET only\n"
        elif path == b"/metrics":
            status, ctype, body = b"200 OK", CONTENT_TYPE_LATEST.encode(), generate_latest(
                self._registry)
        elif path == b"/healthz":
            ok = self._healthy()
            status = b"200 OK" if ok else b"503 Service Unavailable"
            ctype, body = b"text/plain", b"ok\n" if ok else b"unhealthy\n"
        elif path == b"/readyz":
            ok = self._healthy()
            status = b"200 OK" if ok else b"503 Service Unavailable"
            ctype, body = b"application/json", json.dumps(
                {"healthy": ok, "details": self._details()}, default=str).encode()
        else:
            status, ctype, body = b"404 Not Found", b"text/plain", b"not found\n"
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype
                     + b"\r\nContent-Length: " + str(len(body)).encode()
                     + b"\r\nConnection: close\r\n\r\n" + (body if method == b"GET" else b""))
        try:
            await writer.drain()
        finally:
            writer.close()
