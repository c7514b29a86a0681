"""Helpers shared by the ingestor tests: read the real streams back, poll, run the service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as redis

from common.bus.redis_streams import RedisConfig, RedisTransport
from common.partitioning import ticks_stream
from common.runner import Hosted
from common.schemas import Tick, decode_ticks
from common.settings import IngestorSettings, load_settings
from ingestor.service import SERVICE

RunningIngestor = Hosted[IngestorSettings]


def make_settings(bus_url: str, ws_url: str, **overrides: Any) -> IngestorSettings:
    values: dict[str, Any] = {
        "bus_url": bus_url, "binance_ws_url": ws_url, "tick_partitions": 4,
        "metrics_host": "127.0.0.1", "ingestor_metrics_port": 0,
        "reconnect_min_s": 0.05, "reconnect_max_s": 0.2, "stale_after_s": 5.0,
        "shutdown_timeout_s": 5.0, "bus_timeout_s": 2.0,
    }
    values.update(overrides)
    return load_settings(IngestorSettings, **values)


async def read_entries(url: str, partitions: int) -> dict[int, list[list[Tick]]]:
    """Every bus entry of every ``ticks.{p}``, decoded, oldest first."""
    client = redis.Redis.from_url(url)
    try:
        entries: dict[int, list[list[Tick]]] = {}
        for p in range(partitions):
            rows: Any = await client.xrange(ticks_stream(p))
            entries[p] = [decode_ticks(fields[b"d"]) for _, fields in rows]
        return entries
    finally:
        await client.aclose()


async def read_ticks(url: str, partitions: int) -> list[Tick]:
    entries = await read_entries(url, partitions)
    return [tick for p in range(partitions) for batch in entries[p] for tick in batch]


async def wait_until(predicate: Callable[[], Any], timeout: float = 10.0,  # noqa: ASYNC109
                     what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def sample(ingestor: RunningIngestor, name: str, labels: dict[str, str] | None = None) -> float:
    value = ingestor.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


@asynccontextmanager
async def running(settings: IngestorSettings,
                  stop_within_s: float = 5.0) -> AsyncIterator[RunningIngestor]:
    """Run the service (its ``main`` under the runner's health server) on a Redis transport
    of its own; on exit stop it the way a SIGTERM does and check that it returned by itself
    within the deadline. What it yields stays readable afterwards (metrics, health)."""
    transport = RedisTransport(RedisConfig.from_settings(settings))
    ingestor = Hosted(SERVICE, settings, transport)
    stopping = asyncio.Event()
    task = asyncio.create_task(ingestor.run(stopping))
    try:
        yield ingestor
    finally:
        stopping.set()
        done, _ = await asyncio.wait({task}, timeout=stop_within_s)
        try:
            if not done:
                task.cancel()
                raise AssertionError("the ingestor did not stop within the deadline")
            task.result()
        finally:
            await transport.close()
