"""Detector throughput from a filled stream: ticks/s from XREADGROUP to XACK.

The ``ticks.{p}`` streams are filled first (one entry per partition per 1,000-symbol frame,
as the ingestor writes them), then a detector is started and timed until the group has
acknowledged everything.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from bench.engine import synthetic_ticks
from common.partitioning import DETECTOR_GROUP, partition_of, ticks_stream
from common.redis_server import free_port, start_redis_server
from common.redis_transport import RedisTransport
from common.schemas import Tick, encode_ticks
from common.settings import DetectorSettings, load_settings
from common.transport import Record
from detector.service import Detector

PARTITIONS = 4
SYMBOLS = 1000
FRAMES = 2000


async def fill(bus: RedisTransport, ticks: list[Tick]) -> int:
    records: list[Record] = []
    for start in range(0, len(ticks), SYMBOLS):
        by_partition: dict[int, list[Tick]] = {}
        for tick in ticks[start : start + SYMBOLS]:
            by_partition.setdefault(partition_of(tick.symbol, PARTITIONS), []).append(tick)
        records.extend(Record(ticks_stream(p), str(p), encode_ticks(batch))
                       for p, batch in by_partition.items())
    for start in range(0, len(records), 2000):
        await bus.publish(records[start : start + 2000])
    return len(records)


async def unacknowledged(bus: RedisTransport) -> int:
    total = 0
    for p in range(PARTITIONS):
        for group in await bus.client.xinfo_groups(ticks_stream(p)):
            if group["name"] == DETECTOR_GROUP.encode():
                total += int(group["lag"] or 0) + int(group["pending"])
    return total


async def measure(url: str) -> None:
    bus = RedisTransport(url)
    ticks = synthetic_ticks(SYMBOLS, FRAMES, seed=3)
    entries = await fill(bus, ticks)
    settings = load_settings(DetectorSettings, bus_url=url, tick_partitions=PARTITIONS,
                             read_count=64)
    detector = Detector(settings, bus)
    stopping = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(detector.run(stopping))
    await asyncio.sleep(0.2)
    while await unacknowledged(bus):
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    stopping.set()
    await task
    await bus.close()
    print(f"detector: {len(ticks) / elapsed:,.0f} ticks/s from a filled stream "
          f"({len(ticks):,} ticks in {entries:,} entries, {elapsed:.2f} s)")


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        port = free_port()
        server = start_redis_server(port, Path(scratch), appendonly=False)
        try:
            asyncio.run(measure(f"redis://127.0.0.1:{port}/0"))
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
