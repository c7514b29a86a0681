"""``/metrics`` of a gateway that runs several worker processes on one port.

A scrape lands on whichever worker the kernel hands the connection to, so a worker that
answered with its own registry alone would show Prometheus a different process at every
scrape (counters jumping up and down, clients that come and go). Instead every worker
answers for all of them: each serves its own registry on a Unix socket in the pool's
run directory (``PeerMetrics.run``), and the one that takes the scrape asks the others,
concurrently, and merges the families, every sample labelled ``worker="<n>"``. Each series
stays the exact value of one process (``sum without (worker) (...)`` is the gateway's
total; a restarted worker's counters restart, which ``rate()`` handles), the metric
definitions stay what ``gateway.metrics`` says (no shared-memory mode, whose gauges need
per-metric aggregation modes and whose per-increment locking would sit on the fan-out's
path), and the scrape costs nothing between scrapes. A worker that does not answer
within ``PEER_TIMEOUT_S`` (dead, restarting) is left out of that scrape.

With one worker none of this runs: ``/metrics`` is the app's own, without the label.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

PEER_TIMEOUT_S: Final = 2.0
WORKER_LABEL: Final = "worker"


@dataclass(frozen=True, slots=True)
class WorkerPlace:
    """Where one worker sits in the pool: its number, how many there are, the run
    directory (made by the parent, removed when it stops) that holds their metrics
    sockets, and the address they all listen on (the port resolved, never 0)."""

    index: int
    count: int
    run_dir: Path
    host: str
    port: int

    def metrics_socket(self, index: int) -> Path:
        return self.run_dir / f"metrics-{index}.sock"


class PeerMetrics:
    """One worker's side of the exchange: serves its registry to its peers, and gathers
    all of them when it takes a scrape."""

    def __init__(self, place: WorkerPlace, registry: CollectorRegistry) -> None:
        self.place = place
        self.registry = registry

    async def run(self) -> None:
        """Serve this worker's registry until cancelled."""
        path = self.place.metrics_socket(self.place.index)
        path.unlink(missing_ok=True)  # left by this worker's predecessor
        server = await asyncio.start_unix_server(self._answer, path=str(path))
        async with server:
            await server.serve_forever()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(generate_latest(self.registry))
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def gather(self) -> bytes:
        """Every worker's metrics (this one's and those that answer), merged and labelled."""
        others = [i for i in range(self.place.count) if i != self.place.index]
        texts = await asyncio.gather(*(self._ask(i) for i in others))
        merged = _Merged()
        merged.add(generate_latest(self.registry).decode(), self.place.index)
        for index, text in zip(others, texts, strict=True):
            if text is not None:
                merged.add(text, index)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(merged)
        return generate_latest(registry)

    async def _ask(self, index: int) -> str | None:
        writer = None
        try:
            async with asyncio.timeout(PEER_TIMEOUT_S):
                reader, writer = await asyncio.open_unix_connection(
                    str(self.place.metrics_socket(index)))
                return (await reader.read()).decode()
        except (OSError, TimeoutError) as exc:
            log.debug("worker %d left out of this scrape: %r", index, exc)
            return None
        finally:
            if writer is not None:
                writer.close()


class _Merged(Collector):
    """Metric families of several workers, each family once with all their samples."""

    def __init__(self) -> None:
        self._families: dict[str, Metric] = {}

    def add(self, text: str, worker: int) -> None:
        label = str(worker)
        for family in text_string_to_metric_families(text):
            merged = self._families.get(family.name)
            if merged is None:
                merged = self._families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit)
            merged.samples.extend(
                sample._replace(labels={**sample.labels, WORKER_LABEL: label})
                for sample in family.samples)

    def collect(self) -> Iterable[Metric]:
        return list(self._families.values())


class AllWorkersMetrics:
    """ASGI middleware: ``GET /metrics`` answered with ``PeerMetrics.gather``; the rest
    goes to the app."""

    def __init__(self, app: ASGIApp, peers: PeerMetrics) -> None:
        self.app = app
        self.peers = peers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/metrics" and scope["method"] in {
                "GET", "HEAD"}:
            body = await self.peers.gather()
            await Response(body, media_type=CONTENT_TYPE_LATEST)(scope, receive, send)
            return
        await self.app(scope, receive, send)

