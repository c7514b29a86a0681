"""Several detectors on one pipeline, a market whose moves the test makes on cue, and the
detectors' heartbeats as the test reads them: who owns which partition, and since when."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field

from common.bus import Transport
from common.bus.kafka.config import KafkaConfig
from common.bus.kafka.transport import KafkaTransport
from common.bus.redis_streams import RedisConfig, RedisTransport
from common.partitioning import ALERTS_STREAM, DETECTOR_HEARTBEAT_STREAM, partition_of
from common.schemas import DetectorHeartbeat, decode_alert, decode_heartbeat
from fake_exchange import Quote
from fake_exchange.scenarios import symbol_names
from tests.support.bus import kafka_test_settings
from tests.support.processes import Pipeline, Service, metric
from tests.support.servers import Bus
from tools.redis_server import free_port

# Short enough for a test to wait out, long enough for a loaded machine to renew in time.
FAILOVER_ENV = {
    "LEASE_S": "1.5",
    "READ_BLOCK_MS": "200",
    "WINDOW_S": "5",
    "REBUILD_MARGIN_S": "1",
    "DETECTOR_HEARTBEAT_S": "0.2",
    "HEALTH_DETECTOR_STALE_S": "2",
}


class ScriptedMarket:
    """Every symbol in every frame at a steady price; ``move`` makes one jump in the next
    frame (the price then stays there), so the test decides when each alert is due."""

    def __init__(self, symbols: int = 40) -> None:
        self.prices = {name: 100.0 + i for i, name in enumerate(symbol_names(symbols))}
        self._next: list[tuple[str, float]] = []
        self.moves: Counter[tuple[str, str]] = Counter()

    def __iter__(self) -> ScriptedMarket:
        return self

    def __next__(self) -> list[Quote]:
        for symbol, pct in self._next:
            self.prices[symbol] *= 1 + pct / 100
        self._next.clear()
        now_ms = time.time_ns() // 1_000_000
        return [Quote(symbol, price, now_ms) for symbol, price in self.prices.items()]

    def move(self, symbol: str, pct: float = 3.0) -> None:
        self._next.append((symbol, pct))
        self.moves[(symbol, "up" if pct > 0 else "down")] += 1

    def symbols_in(self, partitions: Collection[int], total: int) -> list[str]:
        """Symbols of these partitions, round-robin over them, never moved before."""
        moved = {symbol for symbol, _ in self.moves}
        by_partition = {p: [s for s in self.prices if partition_of(s, total) == p
                            and s not in moved] for p in sorted(partitions)}
        picks: list[str] = []
        while any(by_partition.values()):
            for symbols in by_partition.values():
                if symbols:
                    picks.append(symbols.pop(0))
        return picks


def add_detector(pipeline: Pipeline, name: str) -> Service:
    """One more ``python -m detector`` on the pipeline, with a metrics port of its own and
    no DETECTOR_CONSUMER (so a name of its own)."""
    env = {**pipeline.services["detector"].env, "DETECTOR_METRICS_PORT": str(free_port())}
    service = Service(name, env, pipeline.log_dir, module="detector")
    pipeline.services[name] = service
    return service


def metrics_url(service: Service) -> str:
    return f"http://127.0.0.1:{service.env['DETECTOR_METRICS_PORT']}/metrics"


def detector_metric(service: Service, name: str) -> float:
    return metric(metrics_url(service), name)


def labelled_metric(service: Service, name: str, label: str) -> float:
    """One labelled sample, e.g. ``detector_ownership_changes_total`` / ``change="lost"``."""
    with urllib.request.urlopen(metrics_url(service), timeout=2) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and label in line)


def healthy(service: Service) -> bool:
    try:
        with urllib.request.urlopen(metrics_url(service).replace("/metrics", "/healthz"),
                                    timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


async def wait_healthy(service: Service, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(healthy, service):
        assert time.monotonic() < deadline, f"{service.name} not healthy\n{service.output()}"
        await asyncio.sleep(0.05)


def member(service: Service) -> Callable[[str], bool]:
    """Picks the heartbeats of this process, by the name a detector without
    DETECTOR_CONSUMER gives itself (host and pid)."""
    assert service.process is not None
    suffix = f"-{service.process.pid}"
    return lambda name: name.endswith(suffix)


def bus_transport(bus: Bus) -> Transport:
    """A transport of the test's own on the pipeline's bus (to read what the services wrote)."""
    if bus.name == "redis":
        return RedisTransport(RedisConfig(bus.url, timeout_s=3))
    return KafkaTransport(KafkaConfig.from_url(bus.url, kafka_test_settings(), timeout_s=3))


@dataclass
class Heartbeats:
    """The newest heartbeat of each detector, as it arrives."""

    latest: dict[str, tuple[float, DetectorHeartbeat]] = field(default_factory=dict)

    async def follow(self, transport: Transport) -> None:
        reader = transport.broadcast_reader(DETECTOR_HEARTBEAT_STREAM)
        while True:
            for delivery in await reader.read(100, 100):
                beat = decode_heartbeat(delivery.payload)
                self.latest[beat.consumer] = (time.monotonic(), beat)

    def shares(self, *, since: float, of: Callable[[str], bool] = lambda _: True
               ) -> dict[str, list[int]]:
        """Partitions of each detector that beat after ``since`` (monotonic) and is not
        rebuilding, among those ``of`` picks by name."""
        return {name: beat.partitions for name, (at, beat) in self.latest.items()
                if at >= since and not beat.rebuilding and of(name)}

    async def wait_for(self, done: Callable[[dict[str, list[int]]], bool], *, since: float,
                       of: Callable[[str], bool] = lambda _: True, timeout_s: float = 30,
                       what: str = "shares") -> float:
        """Wait until the shares satisfy ``done``; returns the monotonic time it happened."""
        deadline = time.monotonic() + timeout_s
        while not done(shares := self.shares(since=since, of=of)):
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {shares}"
            await asyncio.sleep(0.02)
        return time.monotonic()


def balanced(detectors: int, partitions: int) -> Callable[[dict[str, list[int]]], bool]:
    """Every partition owned by exactly one of ``detectors`` detectors, none with more than
    its ⌈P / N⌉."""
    most = -(-partitions // detectors)

    def check(shares: dict[str, list[int]]) -> bool:
        owned = [p for parts in shares.values() for p in parts]
        return (len(shares) == detectors and sorted(owned) == list(range(partitions))
                and all(len(parts) <= most for parts in shares.values()))
    return check


@contextlib.asynccontextmanager
async def heartbeats(bus: Bus) -> AsyncIterator[Heartbeats]:
    transport = bus_transport(bus)
    await transport.start()
    beats = Heartbeats()
    task = asyncio.create_task(beats.follow(transport))
    try:
        yield beats
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await transport.close()


async def alert_ids_on_bus(bus: Bus) -> list[str]:
    """Every alert id on the ``alerts`` stream, duplicates included, oldest first."""
    transport = bus_transport(bus)
    await transport.start()
    try:
        deliveries = await transport.broadcast_reader(ALERTS_STREAM).backlog(10_000)
    finally:
        await transport.close()
    return [decode_alert(d.payload).id for d in deliveries]


def pause(service: Service) -> None:
    assert service.process is not None
    service.process.send_signal(signal.SIGSTOP)


def resume(service: Service) -> None:
    assert service.process is not None
    service.process.send_signal(signal.SIGCONT)
