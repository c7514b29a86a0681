"""``python -m gateway``: the app served by uvicorn, with the bus readers that feed it, in
one task group under the common runner.

The runner owns SIGTERM/SIGINT (first signal sets ``stopping``, a second one cancels), so
uvicorn must not install handlers of its own: it would take the signal, and on exit
re-raise it, which the runner would count as the second, forcing signal. Stopping is
instead asked for with ``server.should_exit``, which makes uvicorn stop accepting, close
every WebSocket with 1012 (service restart, so browsers reconnect elsewhere) and wait for
the handlers to end. A bus reader that fails stops the server the same way, and its error
is raised once the server is down: the service exits 1 (2 for a configuration error)
instead of serving a page that no longer updates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Final

import uvicorn
from fastapi import FastAPI

from common.runner import Runtime, Service
from common.settings import GatewaySettings, address_in_use
from gateway.app import Reader, create_app, failed_readers, metrics_of, readers_of
from gateway.limits import limited_http
from gateway.wire import FanoutProtocol

log = logging.getLogger(__name__)

WS_MAX_SIZE: Final = 64 * 1024
# A peer that leaves sent data unacknowledged this long (a browser that stopped reading,
# a vanished laptop) is cut by the kernel; uvicorn alone would keep such a socket, with its
# buffered frames, for as long as the peer keeps answering TCP window probes.
UNREAD_DATA_TIMEOUT_MS: Final = 30_000
# Without a fixed send buffer Linux grows it to megabytes even for a peer that reads
# nothing, so a stalled browser would hide ~3 MB of alerts in the kernel before its queue
# (the signal that it is too slow) filled at all. Alerts are small; this is minutes of them.
SEND_BUFFER_BYTES: Final = 256 * 1024
WORKER_HEADER: Final = "X-Gateway-Worker"


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers (see the module docstring)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """Bind before anything else starts, so a taken port fails the service at once.

    Options set on the listening socket are inherited by every accepted connection.
    ``reuse_port``: one of the sockets of ``GATEWAY_WORKERS`` (``gateway.workers``).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        # asyncio sets TCP_NODELAY only on sockets it creates itself. Without it a response
        # written in two parts (starlette sends head and body apart), or a frame written
        # while the one before is unacknowledged, waits for the client's delayed ACK:
        # 40 ms on Linux, measured on every HTTP answer of this socket.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, UNREAD_DATA_TIMEOUT_MS)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def server_config(app: FastAPI, settings: GatewaySettings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        # Bounded request lines, heads, bodies and read times (gateway.limits).
        http=limited_http(settings, metrics_of(app).requests_refused),
        host=settings.gateway_host,
        port=settings.gateway_port,
        lifespan="off",  # nothing to start: the readers are tasks of serve()
        log_config=None,
        # uvicorn's own WebSocket protocol, plus the direct write path of the fan-out.
        ws=FanoutProtocol,
        ws_max_size=WS_MAX_SIZE,
        # Compression would be done once per client per message: the opposite of encoding
        # an alert once for everybody. Alerts are small.
        ws_per_message_deflate=False,
        # Protocol pings find browsers that vanished without a FIN (sleeping laptops).
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_timeout_s,
        server_header=False,
        # Leave the transport's close time within the runner's SHUTDOWN_TIMEOUT_S.
        timeout_graceful_shutdown=max(1, int(settings.shutdown_timeout_s / 2)),
    )


async def serve(app: FastAPI, settings: GatewaySettings, sock: socket.socket,
                stopping: asyncio.Event, *, worker: int | None = None) -> None:
    """Serve until ``stopping`` is set or a bus reader fails (then raise its error, in an
    ``ExceptionGroup``, once the server has stopped).

    ``worker``: this process's number among ``GATEWAY_WORKERS``, sent on every response
    (the WebSocket handshake included) as ``X-Gateway-Worker``, so that a client, a test or
    an operator chasing one connection knows which process answered.
    """
    config = server_config(app, settings)
    if worker is not None:
        config.headers.append((WORKER_HEADER, str(worker)))
    server = EmbeddedServer(config)
    failures = failed_readers(app)

    async def reading(name: str, read: Reader) -> None:
        try:
            await read()
        except Exception as exc:
            log.error("%s failed (%r): stopping the gateway", name, exc)
            failures[name] = exc
            server.should_exit = True

    async def stop_when_asked() -> None:
        await stopping.wait()
        server.should_exit = True

    async with asyncio.TaskGroup() as tasks:
        readers = [tasks.create_task(reading(name, read), name=f"gateway {name}")
                   for name, read in readers_of(app).items()]
        watcher = tasks.create_task(stop_when_asked(), name="gateway-stop")
        try:
            await server.serve(sockets=[sock])
        finally:
            watcher.cancel()
            for reader in readers:
                reader.cancel()
    if failures:
        raise ExceptionGroup("a bus reader of the gateway failed", list(failures.values()))


async def main(settings: GatewaySettings, stopping: asyncio.Event, runtime: Runtime) -> None:
    try:
        sock = bind_socket(settings.gateway_host, settings.gateway_port)
    except OSError as exc:
        raise address_in_use("GATEWAY_PORT", settings.gateway_host, settings.gateway_port,
                             exc) from None
    host, port = sock.getsockname()[:2]
    log.info("serving the page, /ws and /api on http://%s:%d", host, port)
    try:
        app = create_app(settings, runtime.transport, runtime.registry)
        await serve(app, settings, sock, stopping)
    finally:
        sock.close()


# No health server of the runner's: /healthz, /readyz and /metrics are routes of the app.
SERVICE = Service("gateway", GatewaySettings, main)
