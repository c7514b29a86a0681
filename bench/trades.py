"""The trade-level feed through real processes: the fake exchange, in a process of its own,
lists ``--symbols`` perpetuals and sends ``--rate`` trades/s over them; the ingestor
(``FEED=agg_trade``) discovers them over REST and subscribes them on as many connections as it
needs (650 symbols → 4), then the detector and the gateway run as deployed, on Redis.

Run: ``python -m bench.trades [--rate 20000] [--symbols 650] [--seconds 10] [--jumps 30]
[--runs 3]``. Each run prints its figures, and the last lines their medians over the runs:

- **ingest CPU per trade**: the ingestor process's user + system CPU over ``--seconds`` of
  steady load, divided by the trades it published (its own counter); its inverse is the
  trades/s one core would sustain at that cost (not measured with ``--rate 0``);
- **trade → client latency** of scripted jumps (3 % over 100 ms on one symbol at a time,
  the rest of the board still trading at the full rate): the time a WebSocket client at the
  gateway receives the alert minus the exchange time ``T`` of the trade that fired it. Both
  clocks are this host's. The fake stamps ``T`` in the loop tick (10 ms) that sends the
  trade, just before sending it, so its batching is not in the figure;
- **per stage**, from the times Redis wrote the entries (a stream id is the server's ms
  clock, read back after each alert, off the measured path) and the alert's
  ``detected_at_ms``: ``ingest`` T → the ``ticks.{p}`` entry holding the trade (exchange
  send, ingestor parse, ``FLUSH_MS``, the write); ``detector read`` → ``detected_at_ms``
  (the group read waking, the batch decoded up to the engine); ``detect`` → the ``alerts``
  entry (engine, fenced publish); ``gateway`` → the client's receipt (the broadcast read,
  fan-out, the client's socket). Milliseconds, so each stage is ±1 ms.
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
from typing import Any, Final

import redis.asyncio as redis
from websockets.asyncio.client import ClientConnection, connect

from bench.buses import local_bus
from bench.ingest import cpu_seconds
from bench.latency import _live_alerts
from common.partitioning import ALERTS_STREAM, partition_of, ticks_stream
from common.schemas import decode_alert, decode_ticks
from tests.support.exchange import ExchangeControl, ExchangeProcess
from tests.support.processes import Pipeline, metric

WARMUP_S: Final = 4.0
JUMP_PCT: Final = 3.0
JUMP_OVER_MS: Final = 100
PARTITIONS: Final = 4
STAGES: Final = ("ingest", "detector read", "detect", "gateway")


class Run:
    """The figures of one run."""

    def __init__(self) -> None:
        self.cpu_us_per_trade: float | None = None
        self.published_per_s = 0.0
        self.connections = 0
        self.latencies_ms: list[float] = []
        self.stages_ms: dict[str, list[float]] = {stage: [] for stage in STAGES}


def pct(values: list[float], q: int) -> float:
    """The q-th percentile (inclusive method; one value is its own percentile)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def one_run(args: argparse.Namespace, scratch: Path) -> Run:
    run = Run()
    with local_bus("redis", scratch) as bus, \
            ExchangeProcess(symbols=args.symbols, trades_per_s=args.rate,
                            log_path=scratch / "exchange.log") as exchange:
        pipeline = Pipeline(bus.url, exchange.ws_base_url + "/ws/!miniTicker@arr", scratch,
                            extra_env={**bus.env, "FEED": "agg_trade",
                                       "BINANCE_REST_URL": exchange.rest_url,
                                       "BINANCE_WS_BASE_URL": exchange.ws_base_url,
                                       "TICK_PARTITIONS": str(PARTITIONS),
                                       "LOG_LEVEL": "WARNING"})
        await asyncio.to_thread(pipeline.start)
        client = redis.Redis.from_url(bus.url)
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
                if trades <= 0 and args.rate > 0:
                    raise SystemExit(f"trades: nothing published\n{pipeline.logs()}")
                if trades > 0:
                    run.cpu_us_per_trade = (cpu1 - cpu0) / trades * 1e6
                run.published_per_s = trades / (t1 - t0)
                await jumps(control, pipeline, client, args, run)
        finally:
            await client.aclose()
            await asyncio.to_thread(pipeline.stop)
    return run


async def jumps(control: ExchangeControl, pipeline: Pipeline, client: redis.Redis,
                args: argparse.Namespace, run: Run) -> None:
    """Script ``args.jumps`` moves one after another, each on a symbol of its own."""
    async with connect(pipeline.ws_url, max_size=2**24) as ws:
        await ws.recv()  # history
        for i in range(args.jumps):
            symbol = f"SYM{(i * 31) % args.symbols:03d}USDT"
            # The control call answers once the move's last trade is made, after the trade
            # that fires: awaited first, it would hold the client's reads and add its wait.
            jump = asyncio.create_task(control.jump(
                symbol, pct=JUMP_PCT if i % 2 else -JUMP_PCT, over_ms=JUMP_OVER_MS))
            try:
                alert, received_ms = await alert_for(ws, symbol)
            finally:
                await jump
            run.latencies_ms.append(received_ms - int(str(alert["event_time_ms"])))
            await stages(client, alert, received_ms, run)


async def alert_for(ws: ClientConnection, symbol: str) -> tuple[dict[str, Any], float]:
    """The first alert of ``symbol`` the client receives, and when (ms, this host's clock)."""
    try:
        async with asyncio.timeout(5):
            while True:
                raw = await ws.recv()
                received_ms = time.time() * 1000
                for alert in _live_alerts(json.loads(raw)):
                    if alert["symbol"] == symbol:
                        return alert, received_ms
    except TimeoutError:
        raise SystemExit(f"trades: no alert for the jump of {symbol}") from None


async def stages(client: redis.Redis, alert: dict[str, object], received_ms: float,
                 run: Run) -> None:
    """Where the milliseconds of one alert went, from the entries' ids (see the module
    docstring); an alert whose entries are not found adds nothing."""
    symbol, event_ms = str(alert["symbol"]), int(str(alert["event_time_ms"]))
    detected_ms = int(str(alert["detected_at_ms"]))
    stream = ticks_stream(partition_of(symbol, PARTITIONS))
    ticks_ms = alerts_ms = None
    rows: Any = await client.xrange(stream, f"{event_ms - 1}-0", f"{detected_ms}-0")
    for entry_id, fields in rows:
        if any(t.symbol == symbol and t.event_time_ms == event_ms
               for t in decode_ticks(fields[b"d"])):
            ticks_ms = int(entry_id.split(b"-")[0])
            break
    rows = await client.xrevrange(ALERTS_STREAM, count=50)
    for entry_id, fields in rows:
        if decode_alert(fields[b"d"]).id == alert["id"]:
            alerts_ms = int(entry_id.split(b"-")[0])
            break
    if ticks_ms is None or alerts_ms is None:
        return
    for stage, ms in zip(STAGES, (ticks_ms - event_ms, detected_ms - ticks_ms,
                                  alerts_ms - detected_ms, received_ms - alerts_ms), strict=True):
        run.stages_ms[stage].append(ms)


def describe(run: Run) -> str:
    breakdown = ", ".join(f"{stage} {statistics.median(ms):.1f}/{max(ms):.0f}"
                          for stage, ms in run.stages_ms.items() if ms)
    return (f"trade → client p50 {pct(run.latencies_ms, 50):.1f} ms, p99 "
            f"{pct(run.latencies_ms, 99):.1f} ms over {len(run.latencies_ms)} jumps; stages "
            f"median/max ms: {breakdown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=20_000, help="trades/s the exchange sends")
    parser.add_argument("--symbols", type=int, default=650)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--jumps", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if args.jumps < 1 or args.runs < 1:
        parser.error("--jumps and --runs must be at least 1")
    runs: list[Run] = []
    for n in range(args.runs):
        with tempfile.TemporaryDirectory() as scratch:
            run = asyncio.run(one_run(args, Path(scratch)))
        runs.append(run)
        cpu = ("" if run.cpu_us_per_trade is None else
               f", ingest {run.cpu_us_per_trade:.2f} µs CPU/trade "
               f"(→ {1e6 / run.cpu_us_per_trade:,.0f} trades/s per core)")
        print(f"trades run {n + 1}: {run.published_per_s:,.0f} trades/s published on "
              f"{run.connections} connections{cpu}; {describe(run)}", flush=True)
    cpus = [run.cpu_us_per_trade for run in runs if run.cpu_us_per_trade is not None]
    cpu = ("" if not cpus else f"ingest {statistics.median(cpus):.2f} µs CPU/trade → "
           f"{1e6 / statistics.median(cpus):,.0f} trades/s on one core; ")
    p50 = statistics.median(pct(run.latencies_ms, 50) for run in runs)
    p99 = statistics.median(pct(run.latencies_ms, 99) for run in runs)
    stage_medians = ", ".join(
        f"{stage} {statistics.median(statistics.median(r.stages_ms[stage]) for r in runs):.1f}"
        for stage in STAGES if all(r.stages_ms[stage] for r in runs))
    print(f"trades (median of {len(runs)} runs, {args.rate:,.0f} trades/s over {args.symbols} "
          f"symbols): {cpu}trade → WebSocket client p50 {p50:.1f} ms, p99 {p99:.1f} ms "
          f"({args.jumps} jumps a run; stage medians ms: {stage_medians}; {os.cpu_count()} "
          f"cores shared by the exchange, the three services, Redis and this client)")


if __name__ == "__main__":
    main()
