"""``binance-alerter up``: the whole system on one machine with no infrastructure.

It starts a Redis-compatible server, or with ``--bus kafka`` an in-memory Kafka-protocol
broker (``tansu``), unless ``--bus-url`` names a running one; optionally the fake exchange;
and the three services as separate processes, exactly as they run in production,
prefixing their output; with ``--notify FILE`` the notifier too, reading that file as its
``NOTIFY_CONFIG``. Crashed services are restarted with backoff (a service
exits on purpose when a task dies, expecting a supervisor), except one that exits with
code 2: a configuration error would only repeat, so everything stops and ``up`` exits 2
with that service's message. Ctrl-C stops the services in pipeline order (ingestor,
detector, gateway, notifier) so that in-flight batches drain. The page's address is printed once the
gateway answers ``/readyz``, and a gateway port already taken is refused before anything
starts.
"""

from __future__ import annotations

import asyncio
import errno
import importlib.util
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from common.backoff import Backoff
from common.healthcheck import probe
from common.runner import EXIT_CONFIG, wait_or_stop
from tools.kafka_server import find_tansu, start_tansu, stop_tansu
from tools.redis_server import (
    ServerNotFound,
    find_redis_server,
    free_port,
    start_redis_server,
)

log = logging.getLogger(__name__)

SERVICES: Final = ("ingestor", "detector", "gateway")
NOTIFIER: Final = "notifier"
STOP_TIMEOUT_S: Final = 15.0
READY_POLL_S: Final = 0.25
_LISTENING: Final = re.compile(r"(?<=listening on )ws://[^\s/]+")
_COLOURS: Final = {"ingestor": "36", "detector": "35", "gateway": "32", "exchange": "33",
                    "notifier": "34"}
# What services need from the local tansu: it has no idempotent producer; a fetch waiting for
# data is answered when the wait expires, not when data arrives, so a short wait is its
# latency (a real Kafka answers at once); it holds a new group's first join for half the
# session timeout, and a restarted detector waits for its predecessor's session to expire,
# so sessions are short. Variables set in the environment still win.
TANSU_ENV: Final = {"KAFKA_IDEMPOTENCE": "false", "KAFKA_FETCH_MAX_WAIT_MS": "10",
                    "KAFKA_SESSION_TIMEOUT_MS": "3000", "KAFKA_HEARTBEAT_INTERVAL_MS": "500"}


@dataclass
class UpOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    bus_url: str | None = None
    bus: str = "redis"
    redis_port: int | None = None
    kafka_port: int | None = None
    data_dir: Path | None = None
    binance_url: str | None = None
    demo: bool = False
    # A NOTIFY_CONFIG file: run the notifier too.
    notify_config: Path | str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)


class Supervisor:
    def __init__(self, colour: bool) -> None:
        self._colour = colour
        self._processes: dict[str, asyncio.subprocess.Process] = {}
        self.stopping = asyncio.Event()
        self.failure: str | None = None  # why everything stopped, when a service gave up

    def emit(self, name: str, line: str) -> None:
        label = f"{name:<8}|"
        if self._colour:
            label = f"\x1b[{_COLOURS.get(name, '0')}m{label}\x1b[0m"
        sys.stdout.write(f"{label} {line}\n")
        sys.stdout.flush()

    async def spawn(self, name: str, argv: list[str], env: dict[str, str]
                    ) -> asyncio.subprocess.Process:
        # A new session keeps the terminal's Ctrl-C away from children: shutdown is ours.
        process = await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True)
        self._processes[name] = process
        return process

    async def pump(self, name: str, process: asyncio.subprocess.Process,
                   watch: tuple[re.Pattern[str], asyncio.Future[str]] | None = None) -> str:
        """Relay output; with ``watch``, resolve the future with the first matching text.

        Returns the last non-blank line: what a service that gave up said last.
        """
        assert process.stdout is not None
        last = ""
        async for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            if watch is not None and not watch[1].done():
                match = watch[0].search(line)
                if match:
                    watch[1].set_result(match.group(0))
            self.emit(name, line)
            last = line.strip() or last
        if watch is not None and not watch[1].done():
            watch[1].set_exception(RuntimeError(f"{name} exited before it was ready"))
        return last

    async def keep_running(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        backoff = Backoff(1.0, 10.0)
        while not self.stopping.is_set():
            process = await self.spawn(name, argv, env)
            last_line = await self.pump(name, process)
            code = await process.wait()
            if self.stopping.is_set():
                return
            if code == EXIT_CONFIG:
                self.emit(name, "exited with code 2, a configuration error that a restart "
                                "would repeat; stopping everything")
                self.failure = last_line or f"{name} exited with code 2 (configuration error)"
                self.stopping.set()
                return
            delay = backoff.next_delay()
            self.emit(name, f"exited with code {code}; restarting in {delay:.1f}s")
            await wait_or_stop(self.stopping, delay)

    async def announce_when_ready(self, page: str) -> None:
        """Print where to open the page once the gateway can serve it, not when spawned."""
        while not self.stopping.is_set():
            if await asyncio.to_thread(probe, f"{page}readyz", 1.0) is None:
                self.emit("up", f"open {page}")
                return
            await wait_or_stop(self.stopping, READY_POLL_S)

    async def stop(self, name: str) -> None:
        process = self._processes.get(name)
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            self.emit(name, "did not stop in time; killing")
            process.kill()
            await process.wait()


async def up(options: UpOptions) -> int:
    supervisor = Supervisor(colour=sys.stdout.isatty())
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, supervisor.stopping.set)
    redis_process: subprocess.Popen[bytes] | None = None
    kafka_process: subprocess.Popen[bytes] | None = None
    scratch = None
    env = {**os.environ, **options.extra_env}
    try:
        bus_url = options.bus_url
        if bus_url is None and options.bus == "kafka":
            port = options.kafka_port or free_port()
            kafka_process = await asyncio.to_thread(start_tansu, port)
            bus_url = f"kafka://127.0.0.1:{port}"
            for name, value in TANSU_ENV.items():
                env.setdefault(name, value)
            supervisor.emit("kafka", f"tansu listening on 127.0.0.1:{port} (in memory)")
        elif bus_url is None:
            data_dir = options.data_dir
            if data_dir is None:
                scratch = tempfile.TemporaryDirectory(prefix="binance-alerter-")
                data_dir = Path(scratch.name)
            port = options.redis_port or free_port()
            redis_process = await asyncio.to_thread(start_redis_server, port, data_dir)
            bus_url = f"redis://127.0.0.1:{port}/0"
            supervisor.emit("redis", f"listening on 127.0.0.1:{port} (data in {data_dir})")
        env.update(BUS_URL=bus_url, GATEWAY_HOST=options.host, GATEWAY_PORT=str(options.port))
        env.setdefault("METRICS_HOST", "127.0.0.1")
        services: tuple[str, ...] = SERVICES
        if options.notify_config is not None:
            env["NOTIFY_CONFIG"] = str(options.notify_config)
            services = (*SERVICES, NOTIFIER)
        async with asyncio.TaskGroup() as tasks:
            if options.demo:
                env["BINANCE_WS_URL"] = await _start_demo_exchange(supervisor, tasks, env)
            elif options.binance_url:
                env["BINANCE_WS_URL"] = options.binance_url
            for name in services:
                argv = [sys.executable, "-m", name]
                tasks.create_task(supervisor.keep_running(name, argv, env), name=name)
            page = f"http://{_browser_host(options.host)}:{options.port}/"
            tasks.create_task(supervisor.announce_when_ready(page), name="announce")
            await supervisor.stopping.wait()
            supervisor.emit("up", "stopping (Ctrl-C again is ignored; services drain first)")
            for name in (*services, "exchange"):
                await supervisor.stop(name)
    finally:
        if redis_process is not None:
            redis_process.terminate()
            await asyncio.to_thread(redis_process.wait, 10)
        if kafka_process is not None:
            await asyncio.to_thread(stop_tansu, kafka_process)
        if scratch is not None:
            scratch.cleanup()
    if supervisor.failure is not None:
        print(f"binance-alerter up: {supervisor.failure}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


async def _start_demo_exchange(supervisor: Supervisor, tasks: asyncio.TaskGroup,
                               env: dict[str, str]) -> str:
    argv = [sys.executable, "-m", "fake_exchange", "--scenario", "demo", "--port", "0",
            "--wall-clock"]
    process = await supervisor.spawn("exchange", argv, env)
    address: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    tasks.create_task(supervisor.pump("exchange", process, (_LISTENING, address)),
                      name="exchange")
    base = await asyncio.wait_for(address, 20)
    return f"{base}/market/stream?streams=!miniTicker@arr"


def _browser_host(host: str) -> str:
    if host in {"0.0.0.0", "::", "127.0.0.1"}:
        return "localhost"
    return f"[{host}]" if ":" in host else host  # an IPv6 address, as a URL writes it


def gateway_address_problem(host: str, port: int) -> str | None:
    """Why the gateway could not listen on ``host:port``; ``None`` when it can.

    Bound the way the gateway binds (``SO_REUSEADDR``, so a port in TIME_WAIT after the
    last run is no obstacle), and let go at once.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} is in use on {host}; choose another with --port"
            return (f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                    "check --host and --port")
    return None


def notify_config_problem(path: Path | str) -> str | None:
    """Why ``--notify`` cannot be used; ``None`` when the file is there. Its content is
    the notifier's to judge: a bad field stops it with exit 2, which stops ``up``."""
    if os.path.isdir(path):
        return f"--notify: a folder, not a file: {str(path)!r}"
    if not os.path.isfile(path):
        return f"--notify: no such file: {str(path)!r}"
    return None


def run_up(options: UpOptions) -> int:
    """Check what can be checked before anything starts: exit code 2 with a message."""
    if options.bus_url is not None:
        options.bus = "kafka" if options.bus_url.startswith("kafka://") else "redis"
    problem = gateway_address_problem(options.host, options.port)
    if problem is None and options.notify_config is not None:
        problem = notify_config_problem(options.notify_config)
        # The services' working directory is this one, but a path that says so is clearer
        # in their logs.
        options.notify_config = Path(options.notify_config).resolve()
    if problem is not None:
        print(f"binance-alerter up: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        if options.bus == "kafka" and importlib.util.find_spec("aiokafka") is None:
            raise ServerNotFound("the Kafka transport needs aiokafka: "
                                 "pip install 'binance-alerter[kafka]'")
        if options.notify_config is not None and importlib.util.find_spec("httpx") is None:
            raise ServerNotFound("the notifier needs httpx: "
                                 "pip install 'binance-alerter[notify]'")
        if options.bus_url is None and options.bus == "kafka":
            find_tansu()
        elif options.bus_url is None:
            find_redis_server()
    except ServerNotFound as exc:
        print(f"binance-alerter up: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return asyncio.run(up(options))
