"""``GATEWAY_WORKERS``: several gateway processes serving one port.

One process saturates one core at a few tens of thousands of deliveries a second; more
cores need more processes. Each worker is a whole gateway: its own bus readers (every
worker reads every alert, so a browser resumes with ``since`` on whichever worker or
replica it lands on), its own hub, its own ``MAX_CLIENTS`` (the limit is per worker: the
host serves up to ``MAX_CLIENTS × GATEWAY_WORKERS``).

**SO_REUSEPORT: one listening socket per worker, the kernel spreading connections.** The
alternative, one socket bound by the parent and inherited by every worker (uvicorn's own
``--workers``), was tried first and measured here: 300 WebSockets opened at once on three
workers landed 151 / 6 / 143 (sequentially 147 / 26 / 127), because whichever worker
wakes first on the shared socket accepts a whole batch; with SO_REUSEPORT they landed
92 / 112 / 96 (sequentially 113 / 94 / 93). A gateway's cost is its connections (every
alert is written to each), and they live for hours, so an even split matters more than
anything else here, most of all when thousands of browsers reconnect at once after a
replica restarted. What the shared
socket did better, and how it is made up for:

- a port another process holds must still fail at once, exit 2 naming ``GATEWAY_PORT``:
  the parent first binds the port without SO_REUSEPORT (refused while anything listens
  there, a second gateway included), then keeps a socket bound with SO_REUSEPORT and never
  listening, which receives no connection but holds the port against other programs
  (all but one of the same user that sets SO_REUSEPORT too) while workers restart; a
  worker that cannot bind exits 2 the same way, and so does the gateway;
- the connections queued on a worker's socket when it dies are reset (a shared socket
  would keep them for the others): those browsers reconnect, as the dying worker's own
  browsers do; the kernel spreads new connections over the workers that listen;
- the socket options are set in one place still, ``gateway.service.bind_socket``.

The workers are spawned (a fresh interpreter, the settings passed by ``multiprocessing``),
not forked from a parent that may be running an event loop.

**Supervision.** The parent owns SIGTERM/SIGINT through the common runner: the first
signal is forwarded to every worker, which drains as a single gateway does (stops
accepting, closes every WebSocket with 1012, so browsers reconnect, to another worker or
replica); a second signal, or the drain deadline, is forwarded too, and cuts the drain
short. Workers run in a process group of their own, so a terminal's Ctrl-C reaches only
the parent (which forwards it once), and each stops by itself if the parent disappears.
A worker that dies while the gateway is not stopping is reported (an error log line
naming it, its pid and how it ended) and **restarted** on the same port, after a backoff
that grows while it keeps dying early: its browsers reconnect, the other workers' browsers
notice nothing; exiting instead would cut every browser of every worker. A worker that
exits 2 (a configuration error, which a restart would hit again) stops the gateway with
exit code 2. Settings, the bus configuration and the port are all checked in the parent,
before any worker starts. The exit code is otherwise the runner's: 0 when every worker
drained cleanly, 1 when one did not.

``/metrics`` on the shared port answers for all workers, each sample labelled with its
worker: see ``gateway.worker_metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Final, NoReturn

from common.backoff import Backoff
from common.bus import create_transport
from common.logs import configure_logging
from common.runner import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    Runtime,
    Service,
    ServiceMain,
    load_or_exit,
    run_on_bus,
    run_service,
    run_supervised,
    wait_or_stop,
)
from common.settings import GatewaySettings, address_in_use, redact_url
from gateway.app import create_app
from gateway.service import SERVICE, bind_socket, serve
from gateway.worker_metrics import AllWorkersMetrics, PeerMetrics, WorkerPlace

log = logging.getLogger(__name__)

# A worker that ran this long before dying was not crash-looping: its restart is quick.
STEADY_RUN_S: Final = 60.0
RESTART_MIN_S: Final = 0.5
RESTART_MAX_S: Final = 30.0
# After the drain deadline (or a second signal) the workers get this long to cancel.
KILL_AFTER_S: Final = 5.0


def run_gateway() -> NoReturn:
    """``python -m gateway``: one process, or the pool of ``GATEWAY_WORKERS``."""
    settings = load_or_exit(SERVICE)
    if settings.gateway_workers == 1:
        run_service(SERVICE, settings)
    configure_logging(settings.log_level, settings.log_format, service="gateway")
    log.info("gateway starting with %d workers (bus %s)", settings.gateway_workers,
             redact_url(settings.bus_url))
    pool = WorkerPool(settings.gateway_workers)
    code = run_supervised("gateway", settings, pool.main)
    sys.exit(code if code != EXIT_OK else pool.exit_code)


class WorkerPool:
    """The parent: binds, starts ``count`` workers, keeps them running, stops them."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.exit_code = EXIT_OK
        self._live: dict[int, BaseProcess] = {}
        self._spawn = multiprocessing.get_context("spawn")

    async def main(self, settings: GatewaySettings, stopping: asyncio.Event) -> None:
        # A BUS_URL or KAFKA_* setting the bus refuses exits 2 here, before any worker.
        await create_transport(settings).close()
        host = settings.gateway_host
        try:
            if settings.gateway_port:  # refused while anything listens on the port
                bind_socket(host, settings.gateway_port).close()
            reservation = bind_socket(host, settings.gateway_port, reuse_port=True)
        except OSError as exc:
            raise address_in_use("GATEWAY_PORT", host, settings.gateway_port, exc) from None
        run_dir = Path(tempfile.mkdtemp(prefix="gateway-workers-"))
        try:
            port = int(reservation.getsockname()[1])
            log.info("serving the page, /ws and /api on http://%s:%d with %d workers",
                     host, port, self.count)
            async with asyncio.TaskGroup() as tasks:
                for index in range(self.count):
                    place = WorkerPlace(index, self.count, run_dir, host, port)
                    tasks.create_task(self._keep(settings, place, stopping),
                                      name=f"gateway worker {index}")
                tasks.create_task(self._stop_when_asked(stopping), name="gateway-stop")
        finally:
            self._end_all()
            reservation.close()
            shutil.rmtree(run_dir, ignore_errors=True)

    async def _keep(self, settings: GatewaySettings, place: WorkerPlace,
                    stopping: asyncio.Event) -> None:
        """Worker ``place.index``, started and restarted until the gateway stops."""
        backoff = Backoff(RESTART_MIN_S, RESTART_MAX_S)
        while not stopping.is_set():
            process = self._spawn.Process(
                target=worker_process, args=(settings, place),
                name=f"gateway-worker-{place.index}")
            process.start()
            self._live[place.index] = process
            started = time.monotonic()
            log.info("gateway worker %d started (pid %s)", place.index, process.pid)
            code = await _exit_code(process)
            del self._live[place.index]
            ended = f"worker {place.index} (pid {process.pid}) {_how(code)}"
            if stopping.is_set():
                # -SIGTERM: the signal came before the worker had its handlers, while it
                # was still starting, with nothing to drain.
                if code not in {EXIT_OK, -signal.SIGTERM}:
                    log.error("gateway %s while draining", ended)
                    self.exit_code = max(self.exit_code, EXIT_FAILED)
                return
            if code == EXIT_CONFIG:
                log.error("gateway %s on a configuration error: stopping the gateway", ended)
                self.exit_code = EXIT_CONFIG
                stopping.set()
                return
            if time.monotonic() - started >= STEADY_RUN_S:
                backoff.reset()
            delay = backoff.next_delay()
            log.error("gateway %s; starting it again in %.1f s", ended, delay)
            if await wait_or_stop(stopping, delay):
                return

    async def _stop_when_asked(self, stopping: asyncio.Event) -> None:
        await stopping.wait()
        for process in list(self._live.values()):
            _signal(process, signal.SIGTERM)

    def _end_all(self) -> None:
        """After the drain deadline or a second signal (the task group was cancelled):
        the workers' second signal, then, KILL_AFTER_S later, SIGKILL."""
        alive = [p for p in self._live.values() if p.is_alive()]
        for process in alive:
            _signal(process, signal.SIGTERM)
        deadline = time.monotonic() + KILL_AFTER_S
        for process in alive:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("gateway worker %s did not stop: killing it", process.pid)
                process.kill()
                process.join()


def worker_process(settings: GatewaySettings, place: WorkerPlace) -> None:
    """The body of one worker process (spawned by ``WorkerPool``)."""
    os.setpgid(0, 0)  # a terminal's Ctrl-C goes to the parent, which forwards it once
    name = f"gateway worker {place.index}"
    configure_logging(settings.log_level, settings.log_format, service=f"gateway[{place.index}]")
    service = Service("gateway", GatewaySettings, _worker_main(place))

    async def main(settings: GatewaySettings, stopping: asyncio.Event) -> None:
        await run_on_bus(service, settings, stopping)

    sys.exit(run_supervised(name, settings, main))


def _worker_main(place: WorkerPlace) -> ServiceMain[GatewaySettings]:
    async def main(settings: GatewaySettings, stopping: asyncio.Event,
                   runtime: Runtime) -> None:
        try:
            sock = bind_socket(place.host, place.port, reuse_port=True)
        except OSError as exc:
            raise address_in_use("GATEWAY_PORT", place.host, place.port, exc) from None
        app = create_app(settings, runtime.transport, runtime.registry)
        peers = PeerMetrics(place, runtime.registry)
        app.add_middleware(AllWorkersMetrics, peers=peers)
        async with asyncio.TaskGroup() as tasks:
            helpers = [tasks.create_task(peers.run(), name="gateway worker metrics"),
                       tasks.create_task(_stop_if_orphaned(), name="gateway orphan watch")]
            try:
                await serve(app, settings, sock, stopping, worker=place.index)
            finally:
                sock.close()
                for helper in helpers:
                    helper.cancel()
    return main


async def _stop_if_orphaned() -> None:
    """A worker whose parent vanished (SIGKILL, OOM) stops as if told to, through its
    runner's staged shutdown, rather than serve on unsupervised."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return
    await _readable(parent.sentinel)
    log.warning("the gateway's parent process is gone: stopping this worker")
    os.kill(os.getpid(), signal.SIGTERM)


async def _exit_code(process: BaseProcess) -> int:
    await _readable(process.sentinel)
    process.join()
    assert process.exitcode is not None
    return process.exitcode


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    loop.add_reader(fd, ready.set)
    try:
        await ready.wait()
    finally:
        loop.remove_reader(fd)


def _signal(process: BaseProcess, signum: int) -> None:
    if process.pid is not None and process.is_alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signum)


def _how(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"
