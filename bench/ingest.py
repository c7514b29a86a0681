"""Ingest throughput: fake exchange firehose → ``python -m ingestor`` → a real bus.

Run: ``python -m bench.ingest [--bus redis|kafka] [--frames N] [--symbols 1000]
[--partitions 4] [--no-aof]``.

The fake exchange plays ``firehose`` (every symbol in every frame) as fast as the socket
takes it; the ingestor runs as its own process, exactly as deployed; the clock starts when
the ingestor's connection opens and stops when the last bus entry is in Redis (on Kafka:
when the ingestor has every tick acknowledged by the broker, ``acks=all``, since counting
records while they arrive would load this process, which is also the exchange). The figure
counts ticks decoded back out of the bus, not ticks the ingestor claims it sent.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import redis.asyncio as redis

from bench.buses import LocalBus, add_bus_option, local_bus
from common.partitioning import ticks_streams
from common.schemas import decode_ticks
from fake_exchange import FakeExchange, firehose
from tools.redis_server import free_port

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]


async def total_entries(client: redis.Redis, streams: list[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for stream in streams:
        pipe.xlen(stream)
    return sum(await pipe.execute())


async def count_ticks(client: redis.Redis, streams: list[str]) -> int:
    ticks = 0
    for stream in streams:
        cursor = "-"
        while True:
            rows: Any = await client.xrange(stream, cursor, "+", count=2000)
            ticks += sum(len(decode_ticks(fields[b"d"])) for _, fields in rows)
            if len(rows) < 2000:
                break
            cursor = "(" + rows[-1][0].decode()
    return ticks


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process (Linux /proc), to tell who the bottleneck is."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        await asyncio.wait_for(process.wait(), 15)


def scrape(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return float("nan")


async def count_kafka_ticks(url: str, streams: list[str], entries: int) -> int:
    """Read every ticks topic from its start until ``entries`` entries came back."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=url.removeprefix("kafka://"),
                                auto_offset_reset="earliest", fetch_max_wait_ms=50)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(s, p) for s in streams
                         for p in sorted(consumer.partitions_for_topic(s) or {0})])
        seen = ticks = 0
        while seen < entries:
            batches = await consumer.getmany(timeout_ms=5000)
            if not batches:
                break
            for records in batches.values():
                seen += len(records)
                ticks += sum(len(decode_ticks(r.value)) for r in records)
        return ticks
    finally:
        await consumer.stop()


async def wait_for_bus(bus: LocalBus, client: redis.Redis | None, streams: list[str],
                       expected_entries: int, expected_ticks: int, metrics_port: int,
                       deadline: float) -> bool:
    """True once everything is on the bus; False on timeout."""
    while True:
        if client is not None:
            if await total_entries(client, streams) >= expected_entries:
                return True
        elif scrape(metrics_port, "ingestor_ticks_published_total") >= expected_ticks:
            return True
        if time.perf_counter() > deadline:
            return False
        await asyncio.sleep(0.01)


async def bench(bus: LocalBus, frames: int, symbols: int, partitions: int, aof: bool,
                timeout_s: float) -> int:
    metrics_port = free_port()
    client = redis.Redis.from_url(bus.url) if bus.kind == "redis" else None
    streams = ticks_streams(partitions)
    process: asyncio.subprocess.Process | None = None
    try:
        async with FakeExchange(firehose(symbols, frames=frames), interval_s=0) as ex:
            env = {**os.environ, **bus.env, "BUS_URL": bus.url,
                   "BINANCE_WS_URL": ex.url("!miniTicker@arr"),
                   "TICK_PARTITIONS": str(partitions), "METRICS_HOST": "127.0.0.1",
                   "INGESTOR_METRICS_PORT": str(metrics_port), "LOG_LEVEL": "WARNING"}
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ingestor", cwd=ROOT, env=env)
            await ex.wait_for_connections(1, timeout=30)
            started = time.perf_counter()
            cpu_at_start = cpu_seconds(process.pid)
            expected_entries = frames * partitions
            if not await wait_for_bus(bus, client, streams, expected_entries, frames * symbols,
                                      metrics_port, started + timeout_s):
                print(f"timed out: not all of {expected_entries} entries on {bus.kind} after "
                      f"{timeout_s:.0f} s")
                return 1
            elapsed = time.perf_counter() - started
            cpu_s = cpu_seconds(process.pid) - cpu_at_start
            dropped = scrape(metrics_port, "ingestor_ticks_dropped_total")
            batches = scrape(metrics_port, "ingestor_publish_batch_records_count")
            await stop(process)
        if client is not None:
            ticks = await count_ticks(client, streams)
        else:
            ticks = await count_kafka_ticks(bus.url, streams, expected_entries)
    finally:
        if process is not None:
            await stop(process)
        if client is not None:
            await client.aclose()
    rate = ticks / elapsed
    durability = f"AOF {'on' if aof else 'off'}" if bus.kind == "redis" else "acks=all, in memory"
    print(f"ingest ({bus.kind}): {rate:,.0f} ticks/s ({ticks:,} ticks in {elapsed:.2f} s; "
          f"{frames} frames of {symbols} symbols, {partitions} partitions, {durability}, "
          f"{batches:.0f} publish calls, {dropped:.0f} dropped)")
    # Below 100 % the fake exchange (in this process) was the limit, not the ingestor.
    print(f"ingestor CPU: {cpu_s / elapsed:.0%} of one core, "
          f"{ticks / max(cpu_s, 1e-9):,.0f} ticks per CPU-second")
    return 0 if ticks == frames * symbols else 1


async def run(kind: str, frames: int, symbols: int, partitions: int, aof: bool,
              timeout_s: float) -> int:
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp, \
            local_bus(kind, Path(tmp), aof=aof) as bus:
        return await bench(bus, frames, symbols, partitions, aof, timeout_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_bus_option(parser)
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--no-aof", dest="aof", action="store_false")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sys.exit(asyncio.run(run(args.bus, args.frames, args.symbols, args.partitions, args.aof,
                             args.timeout)))


if __name__ == "__main__":
    main()
