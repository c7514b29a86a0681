"""The soak's processes: the bus, the market, the services, and a supervisor that restarts
whatever dies after a short delay, as systemd (``Restart=always``, ``RestartSec``) or
Compose (``restart: always``) would.

Every process is a ``Proc``: a role ("ingestor", "detector-a", "redis", ...), how to launch
it, and the record of each of its lives (pid, start, how it ended, memory samples). A fault
is ``Cluster.kill(role)``: SIGKILL, noted as planned, so that any other exit is reported as
a crash. The bus side is its own class (``PlainRedis`` now): what "kill the Redis master"
means, and which processes it owns, is all that changes for another topology.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from tools.redis_server import (
    SentinelSetup,
    free_port,
    start_redis_server,
    start_sentinel_setup,
)

log = logging.getLogger(__name__)

POLL_S: Final = 0.1
RSS_EVERY_S: Final = 5.0
# The prefixes of the services' settings: none is inherited from the caller's environment
# by accident, every one the soak needs is set explicitly.
_SETTING_PREFIXES: Final = ("BUS_", "BINANCE_", "KAFKA_", "DETECTOR_", "GATEWAY_",
                            "INGESTOR_", "LOG_", "NOTIFY_", "NOTIFIER_", "WINDOW_",
                            "THRESHOLD_", "COOLDOWN_", "TICK", "LEASE_", "HISTORY_")


def rss_kib(pid: int) -> int | None:
    """Resident set size of ``pid`` from ``/proc`` (Linux), None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def healthy(url: str, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class Life:
    """One run of a process, from spawn to exit."""

    pid: int
    started_s: float  # wall clock
    ended_s: float | None = None
    exit_code: int | None = None
    killed: bool = False  # ended by the soak's own SIGKILL
    ready_s: float | None = None  # its health URL first answered 200
    rss_first: tuple[float, int] | None = None  # (time, KiB) once past the memory baseline
    rss_last: tuple[float, int] | None = None


@dataclass
class Proc:
    role: str
    launch: Callable[[], subprocess.Popen[bytes]]  # blocking; returns once spawned
    health_url: str | None = None
    restart: bool = True
    process: subprocess.Popen[bytes] | None = None
    lives: list[Life] = field(default_factory=list)
    restart_at: float | None = None  # monotonic time of the pending restart

    @property
    def life(self) -> Life | None:
        return self.lives[-1] if self.lives else None

    def spawn(self) -> None:
        self.adopt(self.launch())

    def adopt(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        life = Life(self.process.pid, time.time())
        if self.health_url is None:
            life.ready_s = life.started_s  # its launch returned once it listens
        self.lives.append(life)
        self.restart_at = None


def python_launcher(module: str, env: dict[str, str], log_path: Path,
                    args: list[str] | None = None,
                    per_start: Callable[[int], dict[str, str]] | None = None,
                    ) -> Callable[[], subprocess.Popen[bytes]]:
    """``python -m module [args]`` with ``env`` (and ``per_start(n)`` for the n-th start,
    from 1), output appended to ``log_path``."""
    starts = 0

    def launch() -> subprocess.Popen[bytes]:
        nonlocal starts
        starts += 1
        if per_start is not None:
            env.update(per_start(starts))
        with log_path.open("ab") as out:
            out.write(f"--- start at {time.time():.3f} ---\n".encode())
            out.flush()
            return subprocess.Popen([sys.executable, "-m", module, *(args or [])], env=env,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
    return launch


def clean_environment(**values: str) -> dict[str, str]:
    """This environment without any service setting a caller could leak in, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SETTING_PREFIXES)}
    env.update(values)
    return env


class PlainRedis:
    """One Redis-compatible server with its append-only file (as deployed: fsync every
    second). "Kill the master" is kill -9 of it; the supervisor starts it again on the same
    port and data, which is the outage the services must sit out."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self._data_dir = data_dir

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, cluster: Cluster) -> None:
        proc = Proc("redis", lambda: start_redis_server(self.port, self._data_dir))
        cluster.procs[proc.role] = proc
        proc.spawn()

    def master_role(self) -> str:
        return "redis"

    def wait_promoted(self, killed_role: str) -> float | None:
        """No replica to promote: the outage lasts until the restart."""
        return None

    def stop(self) -> None:
        """Its process is the cluster's."""


class SentinelRedis:
    """A master, a replica and three Sentinels (``tools.redis_server``), ``BUS_URL``
    ``redis+sentinel://``. "Kill the master" is kill -9 of whichever node is master now;
    the Sentinels promote the replica, and the supervisor starts the killed node again
    (once the promotion is done) as the new master's replica, so that the next kill fails
    over too. Each promotion's time is noted for the report."""

    def __init__(self, data_dir: Path, down_after_ms: int = 1000) -> None:
        self._data_dir = data_dir
        self._down_after_ms = down_after_ms
        self.setup: SentinelSetup | None = None

    @property
    def url(self) -> str:
        assert self.setup is not None, "start() first"
        return self.setup.url

    def start(self, cluster: Cluster) -> None:
        setup = self.setup = start_sentinel_setup(self._data_dir,
                                                  down_after_ms=self._down_after_ms)
        for i, port in enumerate(setup.data_ports, 1):
            proc = Proc(f"redis-{i}", self._relauncher(port))
            proc.adopt(setup.processes[port])
            cluster.procs[proc.role] = proc
        for i, port in enumerate(setup.sentinel_ports, 1):
            proc = Proc(f"sentinel-{i}", self._relauncher(port), restart=False)
            proc.adopt(setup.processes[port])
            cluster.procs[proc.role] = proc

    def master_role(self) -> str:
        assert self.setup is not None
        return f"redis-{self.setup.data_ports.index(self.setup.master_port()) + 1}"

    def _relauncher(self, port: int) -> Callable[[], subprocess.Popen[bytes]]:
        def relaunch() -> subprocess.Popen[bytes]:
            setup = self.setup
            assert setup is not None
            if setup.master_port() == port:  # a replica of itself would never serve
                setup.wait_for_failover(port)
            setup.restart_node(port)
            return setup.processes[port]
        return relaunch

    def wait_promoted(self, killed_role: str) -> float | None:
        """When a replica was promoted in place of the killed master (None: not in 30 s)."""
        assert self.setup is not None
        port = self.setup.data_ports[int(killed_role.rsplit("-", 1)[1]) - 1]
        try:
            self.setup.wait_for_failover(port)
        except TimeoutError:
            return None
        return time.time()

    def stop(self) -> None:
        if self.setup is not None:
            self.setup.stop()


@dataclass
class Cluster:
    """Supervises ``procs``: restarts the dead after ``restart_delay_s``, samples memory."""

    procs: dict[str, Proc]
    restart_delay_s: float
    memory_from_s: float = 0.0  # wall clock before which memory is not sampled (warm-up)
    life_settle_s: float = 10.0  # nor in a life's first seconds (imports, rebuild)
    crashes: list[tuple[str, float, int | None]] = field(default_factory=list)

    def start(self, roles: list[str]) -> None:
        for role in roles:
            self.procs[role].spawn()

    def kill(self, role: str) -> Life | None:
        """kill -9 the role's process now; None when it is not running."""
        proc = self.procs[role]
        life = proc.life
        if proc.process is None or proc.process.poll() is not None or life is None:
            return None
        life.killed = True
        proc.process.send_signal(signal.SIGKILL)
        return life

    async def supervise(self, stopping: asyncio.Event) -> None:
        next_rss = 0.0
        while not stopping.is_set():
            now = time.monotonic()
            for proc in self.procs.values():
                await self._look_after(proc, now)
            if now >= next_rss:
                self._sample_memory()
                next_rss = now + RSS_EVERY_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), POLL_S)
        self._sample_memory()

    async def _look_after(self, proc: Proc, now: float) -> None:
        life = proc.life
        if proc.process is None or life is None:
            return
        code = proc.process.poll()
        if code is None:
            if life.ready_s is None and proc.health_url is not None and await asyncio.to_thread(
                    healthy, proc.health_url, 0.5):
                life.ready_s = time.time()
            return
        if life.ended_s is None:
            life.ended_s, life.exit_code = time.time(), code
            if not life.killed:
                self.crashes.append((proc.role, life.ended_s, code))
                log.warning("%s exited by itself with code %s", proc.role, code)
            if proc.restart:
                proc.restart_at = now + self.restart_delay_s
        if proc.restart_at is not None and now >= proc.restart_at:
            await asyncio.to_thread(proc.spawn)
            log.info("%s restarted (pid %d)", proc.role, proc.process.pid)

    def _sample_memory(self) -> None:
        now = time.time()
        for proc in self.procs.values():
            life = proc.life
            if life is None or life.ended_s is not None:
                continue
            if now < max(self.memory_from_s, life.started_s + self.life_settle_s):
                continue
            kib = rss_kib(life.pid)
            if kib is None:
                continue
            if life.rss_first is None:
                life.rss_first = (now, kib)
            life.rss_last = (now, kib)

    def stop(self, first: list[str]) -> None:
        """SIGTERM the ``first`` roles in that order (the pipeline's: ingestor first, so
        that batches drain), then the rest (the bus); SIGKILL after 15 s."""
        order = [*first, *(role for role in self.procs if role not in first)]
        for proc in (self.procs[role] for role in order if role in self.procs):
            if proc.process is not None and proc.process.poll() is None:
                proc.process.send_signal(signal.SIGTERM)
                try:
                    proc.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.process.kill()
                    proc.process.wait()
            life = proc.life
            if life is not None and life.ended_s is None:
                life.ended_s = time.time()
                life.exit_code = proc.process.returncode if proc.process else None
