"""``python -m ingestor`` as a real process, configured only through its environment."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from common.schemas import FUNDING, PRICE
from fake_exchange import FakeExchange, drifting_market
from tests.support.exchange import ExchangeProcess
from tests.support.ingestor import read_entries, read_ticks, wait_until
from tests.support.processes import service_env
from tests.support.servers import RedisServer
from tools.redis_server import free_port

pytestmark = pytest.mark.usefixtures("ws_client")

ROOT = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def ingestor_process(log_path: Path,
                           **env: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """``python -m ingestor`` with this environment, its output in ``log_path``; killed
    on the way out if the test did not stop it."""
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ingestor", cwd=ROOT, env=service_env(**env),
            stdout=log_file, stderr=log_file)
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def scraped(text: str, name: str, labels: str = "") -> float:
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix)]
    assert values, f"no sample {prefix!r}"
    return values[0]


async def test_service_publishes_serves_metrics_and_stops_on_sigterm(
        redis_server: RedisServer, tmp_path: Path) -> None:
    port = free_port()
    async with FakeExchange(drifting_market(100, start_ms=1_700_000_000_000),
                            interval_s=0.02) as ex:
        log_path = tmp_path / "ingestor.log"
        async with ingestor_process(
                log_path, BUS_URL=redis_server.url, BINANCE_WS_URL=ex.url(),
                INGESTOR_METRICS_PORT=str(port), METRICS_HOST="127.0.0.1",
                TICK_PARTITIONS="3", LOG_FORMAT="json") as process:
            async def landed_everywhere() -> bool:
                entries = await read_entries(redis_server.url, 3)
                return all(len(entries[p]) >= 3 for p in range(3))

            await wait_until(landed_everywhere, timeout=15, what="ticks in all 3 partitions")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                health = await http.get("/healthz")
                scrape = await http.get("/metrics")
            assert health.status_code == 200
            assert scraped(scrape.text, "ingestor_ticks_published_total") > 0
            assert "process_resident_memory_bytes" in scrape.text

            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), 10)
            assert code == 0, log_path.read_text()
            assert time.monotonic() - started < 4
    logs = log_path.read_text()
    assert '"logger":"ingestor.feed"' in logs  # LOG_FORMAT=json reached the process
    assert "ingestor stopped" in logs


async def test_hostile_frames_are_counted_and_skipped_and_the_good_ticks_published(
        redis_server: RedisServer, tmp_path: Path) -> None:
    """Each hostile frame, repeated: the process stays up and publishes the good entries.

    With no scenario the fake's frames hold two entries, ZZPAD0USDT (good) and ZZPAD1USDT
    (made hostile); too_deep loses its whole frame."""
    port, rounds = free_port(), 3
    entry_kinds = {"tiny_price": "bad_price", "huge_event_time": "bad_event_time",
                   "future_event_time": "event_time_ahead"}
    async with FakeExchange([], interval_s=0.02) as ex:
        log_path = tmp_path / "ingestor.log"
        async with ingestor_process(
                log_path, BUS_URL=redis_server.url, BINANCE_WS_URL=ex.url(),
                INGESTOR_METRICS_PORT=str(port), METRICS_HOST="127.0.0.1",
                TICK_PARTITIONS="1", STALE_AFTER_S="60") as process:
            await ex.wait_for_connections(1, timeout=15)
            for _ in range(rounds):
                for kind in (*entry_kinds, "too_deep"):
                    await ex.send_malformed(kind)

            async def all_good_ticks_landed() -> bool:
                assert process.returncode is None, log_path.read_text()[-3000:]
                ticks = await read_ticks(redis_server.url, 1)
                return len(ticks) >= len(entry_kinds) * rounds

            await wait_until(all_good_ticks_landed, timeout=15, what="the good entries")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                assert (await http.get("/healthz")).status_code == 200
                scrape = (await http.get("/metrics")).text
            ticks = await read_ticks(redis_server.url, 1)
            assert {t.symbol for t in ticks} == {"ZZPAD0USDT"}
            assert len(ticks) == len(entry_kinds) * rounds
            malformed = "ingestor_malformed_frames_total"
            assert scraped(scrape, malformed, 'kind="too_deep"') == rounds
            for kind in entry_kinds.values():
                assert scraped(scrape, malformed, f'kind="{kind}"') == rounds
            assert scraped(scrape, "ingestor_bad_entries_total") == len(entry_kinds) * rounds
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 10) == 0, log_path.read_text()
    logs = log_path.read_text()
    assert "too_deep" in logs
    assert "this clock is behind, check NTP" in logs


@pytest.mark.parametrize(("variable", "value"), [("STALE_AFTER_S", "abc"),
                                               ("WS_CLIENT", "aiohttp")])
def test_bad_setting_exits_2_naming_the_variable(variable: str, value: str) -> None:
    env = service_env(**{variable: value}, INGESTOR_METRICS_PORT=str(free_port()))
    result = subprocess.run([sys.executable, "-m", "ingestor"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert variable in result.stderr


async def test_the_trade_level_feed_as_real_processes(redis_server: RedisServer,
                                                      tmp_path: Path) -> None:
    """``FEED=agg_trade`` from the environment against ``python -m fake_exchange``: the
    board listed over REST, sharded at 200 streams, every kind of tick on the bus."""
    port = free_port()
    with ExchangeProcess(symbols=650, trades_per_s=5000,
                         log_path=tmp_path / "exchange.log") as exchange:
        log_path = tmp_path / "ingestor.log"
        async with exchange.control() as control, ingestor_process(
                log_path, BUS_URL=redis_server.url, FEED="agg_trade",
                BINANCE_REST_URL=exchange.rest_url, BINANCE_WS_BASE_URL=exchange.ws_base_url,
                INGESTOR_METRICS_PORT=str(port), METRICS_HOST="127.0.0.1",
                FLUSH_MS="5") as process:
            async def kinds_landed() -> bool:
                assert process.returncode is None, log_path.read_text()[-3000:]
                return {t.kind for t in await read_ticks(redis_server.url, 4)} >= {
                    PRICE, FUNDING}
            await wait_until(kinds_landed, timeout=20, what="trades and mark prices")
            stats = await control.stats()
            assert sorted(c.streams for c in stats.connections if c.open) == [52, 200, 200, 200]
            assert stats.rate_violations == 0
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                scrape = (await http.get("/metrics")).text
            assert scraped(scrape, "ingestor_connections_open") == 4
            assert scraped(scrape, "ingestor_symbols_listed") == 650
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 10) == 0, log_path.read_text()
    assert "board: 650 symbols on 4 connections" in log_path.read_text()
