"""A gateway run as operators run it with ``GATEWAY_WORKERS``: ``python -m gateway`` (the
parent and its worker processes) on a free port, and the means to reach each worker."""

from __future__ import annotations

import asyncio
import re
import signal
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect

from tests.support.processes import Service
from tools.redis_server import free_port

WORKER_HEADER: Final = "X-Gateway-Worker"
_STARTED: Final = re.compile(r"gateway worker (\d+) started \(pid (\d+)\)")


@dataclass
class GatewayPool:
    """``python -m gateway`` with ``workers`` worker processes; its log is the test's."""

    bus_url: str
    log_dir: Path
    workers: int = 2
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    service: Service = field(init=False)

    def __post_init__(self) -> None:
        self.service = Service("gateway", {
            "BUS_URL": self.bus_url, "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(self.port), "GATEWAY_WORKERS": str(self.workers),
            "SHUTDOWN_TIMEOUT_S": "5", "BUS_TIMEOUT_S": "2", "READ_BLOCK_MS": "500",
            "LOG_LEVEL": "INFO", **self.extra_env}, self.log_dir, own_session=True)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def http(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def pids(self) -> dict[int, int]:
        """The pid of each worker's latest process, from the parent's log."""
        return {int(i): int(pid) for i, pid in _STARTED.findall(self.service.output())}

    def starts(self, worker: int) -> int:
        return sum(int(i) == worker for i, _ in _STARTED.findall(self.service.output()))

    async def start(self, timeout_s: float = 30.0) -> None:
        """Start it and wait until every worker answers ``/readyz`` with 200."""
        self.service.start()
        await self.wait_ready(timeout_s)

    async def wait_ready(self, timeout_s: float = 30.0,
                         workers: set[int] | None = None) -> None:
        wanted = set(range(self.workers)) if workers is None else workers
        ready: set[int] = set()
        async with asyncio.timeout(timeout_s):
            while not wanted <= ready:
                process = self.service.process
                assert process is not None
                assert process.poll() is None, self.service.output()
                answered = await asyncio.to_thread(_ready_worker, self.http("/readyz"))
                if answered is None:
                    await asyncio.sleep(0.05)
                else:
                    ready.add(answered)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        return self.service.stop(signum)

    def kill(self) -> None:
        self.service.kill()

    def metrics_text(self) -> str:
        return _get(self.http("/metrics"))

    async def metrics(self) -> dict[tuple[str, str], float]:
        """``/metrics`` of the shared port: (sample name, worker label) → value, summed
        over the other labels."""
        text = await asyncio.to_thread(self.metrics_text)
        values: dict[tuple[str, str], float] = defaultdict(float)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[(sample.name, sample.labels.get("worker", ""))] += sample.value
        return values


def worker_of(ws: ClientConnection) -> int:
    """The worker that accepted this WebSocket (its handshake's ``X-Gateway-Worker``)."""
    assert ws.response is not None
    return int(ws.response.headers[WORKER_HEADER])


async def connect_to_every_worker(url: str, workers: int, *, per_worker: int = 1,
                                  attempts: int = 300) -> dict[int, list[ClientConnection]]:
    """WebSockets opened until each of the ``workers`` holds at least ``per_worker`` of
    them (the kernel picks the worker); every connection opened is kept and returned."""
    clients: dict[int, list[ClientConnection]] = defaultdict(list)
    for _ in range(attempts):
        if len(clients) == workers and all(len(c) >= per_worker for c in clients.values()):
            return dict(clients)
        ws = await connect(url)
        clients[worker_of(ws)].append(ws)
    raise AssertionError(f"{attempts} connections reached only workers {sorted(clients)}")


def _ready_worker(url: str) -> int | None:
    """The worker that answered ``/readyz`` with 200 on a connection of its own."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.headers[WORKER_HEADER])
    except OSError:
        return None


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())
