"""End-to-end latency: from the exchange frame being sent to the alert reaching a WebSocket
client, at 1 frame/s × 1,000 symbols, through real service processes and a real bus.

Run: ``python -m bench.latency [--bus redis|kafka] [--seconds 30]``. The fake exchange
stamps each frame's event time with the wall clock as it sends it, so
``received − event_time_ms`` is the whole pipeline: parse, publish, group read, detect,
publish, broadcast read, fan-out. On Kafka the local broker is tansu, which answers a fetch
waiting for data when its wait (``KAFKA_FETCH_MAX_WAIT_MS``, 10 ms here) expires, not when
the data arrives: each of the two reads adds up to that wait, which a real Kafka does not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from bench.buses import LocalBus, add_bus_option, local_bus
from fake_exchange import FakeExchange, Quote
from tests.support.processes import Pipeline

SYMBOLS = 1000
MOVERS_PER_FRAME = 5


def movers_market(frames: int) -> Iterator[list[Quote]]:
    """Every symbol quotes every second; five of them jump 3 % in each frame."""
    names = [f"SYM{i:04d}USDT" for i in range(SYMBOLS)]
    prices = [10.0 + i for i in range(SYMBOLS)]
    for frame in range(frames):
        for k in range(MOVERS_PER_FRAME):
            i = (frame * MOVERS_PER_FRAME + k) % SYMBOLS
            prices[i] *= 1.03 if frame % 2 else 0.97
        yield [Quote(name, price, 0) for name, price in zip(names, prices, strict=True)]


def _live_alerts(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The alerts of an ``alert`` message, or of an ``alerts`` one (several of one read)."""
    if message["type"] == "alert":
        return [message["alert"]]
    return list(message["alerts"]) if message["type"] == "alerts" else []


WARMUP_S = 5.0  # alerts of the first seconds are left out: start-up, not latency


async def measure(bus: LocalBus, log_dir: Path, seconds: int) -> list[float]:
    """Latencies of the alerts received after ``WARMUP_S`` (a Kafka detector, for one, is
    still joining its group when the first frames arrive)."""
    latencies: list[float] = []
    async with FakeExchange(movers_market(seconds + int(WARMUP_S) + 10), interval_s=1.0,
                            wall_clock=True) as exchange:
        pipeline = Pipeline(bus.url, exchange.url("!miniTicker@arr"), log_dir,
                            extra_env=bus.env)
        await asyncio.to_thread(pipeline.start)
        try:
            async with connect(pipeline.ws_url) as ws:
                warm_at = time.monotonic() + WARMUP_S
                deadline = warm_at + seconds
                while time.monotonic() < deadline:
                    try:
                        raw = await asyncio.wait_for(ws.recv(), timeout=2)
                    except TimeoutError:
                        continue
                    received = time.time() * 1000
                    message = json.loads(raw)
                    if time.monotonic() > warm_at:
                        latencies.extend(received - a["event_time_ms"]
                                         for a in _live_alerts(message))
        finally:
            await asyncio.to_thread(pipeline.stop)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_bus_option(parser)
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch, local_bus(args.bus, Path(scratch)) as bus:
        latencies = asyncio.run(measure(bus, Path(scratch), args.seconds))
    load_after = os.getloadavg()[0]
    if len(latencies) < 2:
        raise SystemExit("latency: too few alerts received to measure")
    cuts = statistics.quantiles(latencies, n=100)
    print(f"end-to-end latency ({args.bus}): p50 {cuts[49]:.1f} ms, p99 {cuts[98]:.1f} ms, "
          f"max {max(latencies):.1f} ms ({len(latencies)} alerts, {SYMBOLS:,} symbols at "
          f"1 frame/s; load average {load_before:.1f} → {load_after:.1f} on "
          f"{os.cpu_count()} cores: other work on the host moves the tail)")


if __name__ == "__main__":
    main()
