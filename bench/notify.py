"""Notifier delivery: alert written → accepted by the fake Telegram and webhook servers,
under budget (p50/p99), and a 1,000-alert burst to five channels (time to drain, requests
each fake server received, 429 answers).

Run: ``python -m bench.notify`` (``--runs 3 --alerts 20 --burst 1000``).

Every part is a process of its own: a Redis server, the fake APIs (``python -m
fake_notify``), the notifier (``python -m notifier``); this process writes the alerts. An
alert's ``detected_at_ms`` is the wall clock just before its ``XADD`` and the fake stamps
each request with the wall clock on arrival (one host, one clock), so a latency is
arrival − write. Under budget means one alert every 1.2 s: Telegram allows one message a
second per chat. The burst is drained when every (alert, channel) is on
``notifications.delivered`` and nothing is pending.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from common.bus import Record
from common.bus.redis_streams import RedisConfig, RedisTransport
from common.partitioning import ALERTS_STREAM, NOTIFICATIONS_LEDGER_STREAM, NOTIFIER_GROUP
from common.schemas import Alert, alert_id, encode_alert
from fake_notify.notify_config import notify_config
from tools.redis_server import free_port, start_redis_server, wait_for_port

LATENCY_CHANNELS = ["tg", "hooks"]
BURST_CHANNELS = ["tg", "discord", "slack", "ntfy", "hooks"]
UNDER_BUDGET_S = 1.2
SYMBOL = re.compile(r"LAT\d{3}USDT")


def alert(symbol: str, change_pct: float) -> Alert:
    now_ms = int(time.time() * 1000)
    return Alert(id=alert_id(symbol, 60, now_ms), symbol=symbol,
                 direction="up" if change_pct > 0 else "down", change_pct=change_pct,
                 price=101.0, base_price=100.0, window_s=60, threshold_pct=2.0,
                 event_time_ms=now_ms, detected_at_ms=now_ms, source="mini_ticker",
                 rule="default")


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        child = subprocess.Popen(args, env={**os.environ, **env}, stdout=out,
                                 stderr=subprocess.STDOUT)
    try:
        yield child
    finally:
        child.terminate()
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def wait_ok(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not ready")
        time.sleep(0.05)


def received(fake_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{fake_url}/_fake/received?bodies=1", timeout=10) as answer:
        listing: dict[str, Any] = json.load(answer)
    return listing


@contextlib.contextmanager
def stack(work: Path, channels: list[str]) -> Iterator[tuple[str, str]]:
    """Redis, the fakes and the notifier, fresh; yields (redis url, fake url)."""
    redis_port, fake_port, metrics_port = free_port(), free_port(), free_port()
    server = start_redis_server(redis_port, work / f"redis-{redis_port}", appendonly=False)
    try:
        fake_url = f"http://127.0.0.1:{fake_port}"
        with process([sys.executable, "-m", "fake_notify", "--port", str(fake_port)], {},
                     work / "fake.log"):
            wait_for_port("127.0.0.1", fake_port)
            text, secrets = notify_config(fake_url, channels)
            config = work / "notify.toml"
            config.write_text(text)
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
            env = {"BUS_URL": redis_url, "NOTIFY_CONFIG": str(config), "LOG_LEVEL": "WARNING",
                   "NOTIFIER_METRICS_PORT": str(metrics_port), "METRICS_HOST": "127.0.0.1",
                   "READ_BLOCK_MS": "100", **secrets}
            with process([sys.executable, "-m", "notifier"], env, work / "notifier.log"):
                wait_ok(f"http://127.0.0.1:{metrics_port}/healthz")
                time.sleep(0.5)  # the consumer group is created on the first read
                yield redis_url, fake_url
    finally:
        server.terminate()
        server.wait()


async def publish(bus: RedisTransport, alerts: list[Alert]) -> None:
    await bus.publish([Record(ALERTS_STREAM, a.symbol, encode_alert(a)) for a in alerts])


async def latency_run(work: Path, count: int) -> tuple[list[float], list[float]]:
    """Telegram's and the webhook's delays (ms), one alert every UNDER_BUDGET_S."""
    with stack(work, LATENCY_CHANNELS) as (redis_url, fake_url):
        bus = RedisTransport(RedisConfig(redis_url))
        written: dict[str, int] = {}
        try:
            await bus.ping()  # connected before the first alert is stamped
            for i in range(count):
                one = alert(f"LAT{i:03d}USDT", 2.5 + i % 5 * 0.1)
                written[one.symbol] = one.detected_at_ms
                await publish(bus, [one])
                await asyncio.sleep(UNDER_BUDGET_S)
            await asyncio.sleep(1.0)
        finally:
            await bus.close()
        rows = received(fake_url)["received"]
    telegram, webhook = [], []
    for row in rows:
        if row["api"] == "telegram" and (found := SYMBOL.search(row["body"])):
            telegram.append(row["wall_ms"] - written[found.group()])
        elif row["api"] == "webhook":
            webhook.append(row["wall_ms"] - json.loads(row["body"])["alert"]["detected_at_ms"])
    return telegram, webhook


async def burst_run(work: Path, count: int) -> tuple[float, Counter[str], Counter[str], int]:
    """Seconds to drain, requests per fake API, 429s per fake API, 429s after the first."""
    with stack(work, BURST_CHANNELS) as (redis_url, fake_url):
        alerts = [alert(f"B{i:04d}USDT", (2.0 + i % 17 * 0.3) * (1 if i % 3 else -1))
                  for i in range(count)]
        client = aioredis.from_url(redis_url)
        bus = RedisTransport(RedisConfig(redis_url))
        try:
            await bus.ping()
            started = time.perf_counter()
            await publish(bus, alerts)
            want = count * len(BURST_CHANNELS)
            while True:
                done = await client.xlen(NOTIFICATIONS_LEDGER_STREAM)
                pending = (await client.xpending(ALERTS_STREAM, NOTIFIER_GROUP))["pending"]
                if done >= want and pending == 0:
                    break
                await asyncio.sleep(0.01)
            drained_s = time.perf_counter() - started
        finally:
            await client.aclose()
            await bus.close()
        listing = received(fake_url)
    rows = listing["received"]
    per_api = Counter(row["api"] for row in rows)
    limited = Counter(row["api"] for row in rows if row["status"] == 429)
    statuses = [row["status"] for row in rows]
    after_first = statuses[statuses.index(429) + 1:].count(429) if 429 in statuses else 0
    return drained_s, per_api, limited, after_first


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--alerts", type=int, default=20, help="under-budget alerts per run")
    parser.add_argument("--burst", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-notify-") as tmp:
        work = Path(tmp)
        lat = [asyncio.run(latency_run(work, args.alerts)) for _ in range(args.runs)]
        bursts = [asyncio.run(burst_run(work, args.burst)) for _ in range(args.runs)]
    for name, index in (("telegram", 0), ("webhook", 1)):
        p50 = statistics.median(percentile(run[index], 50) for run in lat)
        p99 = statistics.median(percentile(run[index], 99) for run in lat)
        print(f"notify latency  {name:8s} alert written → accepted: p50 {p50:6.1f} ms  "
              f"p99 {p99:6.1f} ms  (median of {args.runs} runs of {args.alerts} alerts)")
    drain = statistics.median(run[0] for run in bursts)
    print(f"notify burst    {args.burst} alerts to {len(BURST_CHANNELS)} channels: drained in "
          f"{drain:.2f} s (median of {args.runs}; runs "
          + ", ".join(f"{run[0]:.2f}" for run in bursts) + ")")
    for _, per_api, limited, after_first in bursts:
        print("  requests per fake server: " + ", ".join(
            f"{api} {n}" for api, n in sorted(per_api.items()))
            + f"; 429 answers: {sum(limited.values())} ({after_first} after the first)")


if __name__ == "__main__":
    main()
