"""The trade-level feed through real processes: the fake exchange, in a process of its own,
lists ``--symbols`` perpetuals and sends ``--rate`` trades/s over them; the ingestor
(``FEED=agg_trade``) discovers them over REST and subscribes them on as many connections as it
needs (650 symbols → 4), then the detector and the gateway run as deployed, on Redis.

Run: ``python -m bench.trades [--rate 20000] [--symbols 650] [--seconds 15] [--jumps 20]
[--runs 3]``. Each run prints two figures, and the last line their medians over the runs:

- **ingest CPU per trade**: the ingestor process's user + system CPU over ``--seconds`` of
  steady load, divided by the trades it published (its own counter, checked against what the
  exchange sent); its inverse is the trades/s one core would sustain at that cost;
- **trade → client latency** of scripted jumps (3 % over 100 ms on one symbol at a time,
  the rest of the board still trading at the full rate): the time a WebSocket client at the
  gateway receives the alert minus the exchange time ``T`` of the trade that fired it. Both
  clocks are this host's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from websockets.asyncio.client import connect

from bench.buses import local_bus
from bench.ingest import cpu_seconds
from tests.support.exchange import ExchangeControl, ExchangeProcess
from tests.support.processes import Pipeline, metric

WARMUP_S = 4.0
JUMP_PCT = 3.0
JUMP_OVER_MS = 100


class Run:
    """The figures of one run."""

    def __init__(self) -> None:
        self.cpu_us_per_trade = 0.0
        self.published_per_s = 0.0
        self.connections = 0
        self.latencies_ms: list[float] = []


async def one_run(args: argparse.Namespace, scratch: Path) -> Run:
    run = Run()
    with local_bus("redis", scratch) as bus, \
            ExchangeProcess(symbols=args.symbols, trades_per_s=args.rate,
                            log_path=scratch / "exchange.log") as exchange:
        pipeline = Pipeline(bus.url, exchange.ws_base_url + "/ws/!miniTicker@arr", scratch,
                            extra_env={**bus.env, "FEED": "agg_trade",
                                       "BINANCE_REST_URL": exchange.rest_url,
                                       "BINANCE_WS_BASE_URL": exchange.ws_base_url,
                                       "TICK_PARTITIONS": "4", "LOG_LEVEL": "WARNING"})
        await asyncio.to_thread(pipeline.start)
        try:
            await asyncio.sleep(WARMUP_S)
            process = pipeline.services["ingestor"].process
            assert process is not None
            metrics = f"http://127.0.0.1:{pipeline.ingestor_metrics_port}/metrics"

            def reading() -> tuple[float, float, float]:
                # CPU first and the count right after: on a loaded host the scrape itself
                # can take seconds (the ingestor's loop is busy), so it is retried.
                for attempt in range(5):
                    cpu = cpu_seconds(process.pid)
                    try:
                        published = metric(metrics, "ingestor_ticks_published_total")
                    except TimeoutError:
                        if attempt == 4:
                            raise
                        continue
                    return cpu, published, time.monotonic()
                raise AssertionError("unreachable")

            async with exchange.control() as control:
                run.connections = sum(c.open for c in (await control.stats()).connections)
                cpu0, n0, t0 = reading()
                await asyncio.sleep(args.seconds)
                cpu1, n1, t1 = reading()
                trades = n1 - n0
                if trades <= 0:
                    raise SystemExit(f"trades: nothing published\n{pipeline.logs()}")
                run.cpu_us_per_trade = (cpu1 - cpu0) / trades * 1e6
                run.published_per_s = trades / (t1 - t0)
                run.latencies_ms = await jumps(control, pipeline, args)
        finally:
            await asyncio.to_thread(pipeline.stop)
    return run


async def jumps(control: ExchangeControl, pipeline: Pipeline,
                args: argparse.Namespace) -> list[float]:
    """Script ``args.jumps`` moves one after another, each on a symbol of its own."""
    latencies: list[float] = []
    async with connect(pipeline.ws_url, max_size=2**24) as ws:
        await ws.recv()  # history
        for i in range(args.jumps):
            symbol = f"SYM{(i * 31) % args.symbols:03d}USDT"
            await control.jump(symbol, pct=JUMP_PCT if i % 2 else -JUMP_PCT,
                               over_ms=JUMP_OVER_MS)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout=deadline - time.monotonic())
                except TimeoutError:
                    break
                received_ms = time.time() * 1000
                message = json.loads(raw)
                alerts = ([message["alert"]] if message["type"] == "alert" else
                          message.get("alerts", []) if message["type"] == "alerts" else [])
                hit = [a for a in alerts if a["symbol"] == symbol]
                if hit:
                    latencies.append(received_ms - hit[0]["event_time_ms"])
                    break
            else:
                raise SystemExit(f"trades: no alert for the jump of {symbol}")
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=20_000, help="trades/s the exchange sends")
    parser.add_argument("--symbols", type=int, default=650)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--jumps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs: list[Run] = []
    for n in range(args.runs):
        with tempfile.TemporaryDirectory() as scratch:
            run = asyncio.run(one_run(args, Path(scratch)))
        runs.append(run)
        cuts = statistics.quantiles(run.latencies_ms, n=100, method="inclusive")
        print(f"trades run {n + 1}: {run.published_per_s:,.0f} trades/s published on "
              f"{run.connections} connections, ingest {run.cpu_us_per_trade:.2f} µs CPU/trade "
              f"(→ {1e6 / run.cpu_us_per_trade:,.0f} trades/s per core); trade → client "
              f"p50 {cuts[49]:.1f} ms, p99 {cuts[98]:.1f} ms over {len(run.latencies_ms)} jumps")
    every = [latency for run in runs for latency in run.latencies_ms]
    cuts = statistics.quantiles(every, n=100, method="inclusive")
    cpu = statistics.median(run.cpu_us_per_trade for run in runs)
    print(f"trades (median of {len(runs)} runs, {args.rate:,.0f} trades/s over {args.symbols} "
          f"symbols): ingest {cpu:.2f} µs CPU/trade → {1e6 / cpu:,.0f} trades/s on one core; "
          f"trade → WebSocket client p50 {cuts[49]:.1f} ms, p99 {cuts[98]:.1f} ms "
          f"({len(every)} jumps; {os.cpu_count()} cores shared by the exchange, the three "
          f"services, Redis and this client)")


if __name__ == "__main__":
    main()
