"""Detector throughput from a filled stream: ticks/s from the group read to the acknowledgement
(XREADGROUP → XACK on Redis, fetch → offset commit on Kafka).

Run: ``python -m bench.detector [--bus redis|kafka]``. The ``ticks.{p}`` streams are filled
first (one entry per partition per 1,000-symbol frame, as the ingestor writes them), then a
detector is started and timed until it has fed every tick to its engine and its consumer
lag (entries behind plus pending, the contract's ``lag()``) is zero.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench.buses import LocalBus, add_bus_option, local_bus, use_in_process
from bench.engine import synthetic_ticks
from common.bus import GroupConsumer, Record, Retention, Transport, create_transport
from common.partitioning import partition_of, ticks_stream
from common.schemas import Tick, encode_ticks
from common.settings import DetectorSettings, load_settings
from detector.service import Detector

PARTITIONS = 4
SYMBOLS = 1000
FRAMES = 2000


async def fill(bus: Transport, ticks: list[Tick]) -> int:
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


async def unfinished(consumer: GroupConsumer | None) -> int:
    if consumer is None:
        return 1
    return sum(lag.behind + lag.pending for lag in (await consumer.lag()).values())


def processed(detector: Detector) -> float:
    value = detector.metrics.registry.get_sample_value("detector_ticks_processed_total")
    return value or 0.0


async def measure(bus_env: LocalBus) -> None:
    url = bus_env.url
    settings = load_settings(DetectorSettings, bus_url=url, tick_partitions=PARTITIONS,
                             read_count=64)
    bus = create_transport(settings)
    ticks = synthetic_ticks(SYMBOLS, FRAMES, seed=3)
    await bus.declare([ticks_stream(p) for p in range(PARTITIONS)], Retention(max_age_s=900))
    entries = await fill(bus, ticks)
    detector = Detector(settings, bus)
    stopping = asyncio.Event()
    launched = time.perf_counter()
    task = asyncio.create_task(detector.run(stopping))
    # The clock starts with the first batch: joining a Kafka group takes a rebalance
    # (seconds on tansu), which is start-up, not throughput.
    await detector.rebuilt.wait()
    started = time.perf_counter()
    # Watched by the detector's own counter, then confirmed by the lag: asking the broker
    # for end offsets every few milliseconds would slow down what is measured.
    while processed(detector) < len(ticks):
        await asyncio.sleep(0.005)
    while await unfinished(detector.consumer):
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - started
    stopping.set()
    await task
    await bus.close()
    print(f"detector ({bus_env.kind}): {len(ticks) / elapsed:,.0f} ticks/s from a filled "
          f"stream ({len(ticks):,} ticks in {entries:,} entries, {elapsed:.2f} s; first batch "
          f"{started - launched:.2f} s after start)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_bus_option(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, local_bus(args.bus, Path(scratch)) as bus:
        use_in_process(bus)
        asyncio.run(measure(bus))


if __name__ == "__main__":
    main()
