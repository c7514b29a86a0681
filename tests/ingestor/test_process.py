"""``python -m ingestor`` as a real process, configured only through its environment."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from fake_exchange import FakeExchange, drifting_market
from tests.support.ingestor import read_entries, wait_until
from tests.support.processes import service_env
from tests.support.servers import RedisServer
from tools.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]


async def test_service_publishes_serves_metrics_and_stops_on_sigterm(
        redis_server: RedisServer, tmp_path: Path) -> None:
    port = free_port()
    async with FakeExchange(drifting_market(100, start_ms=1_700_000_000_000),
                            interval_s=0.02) as ex:
        env = service_env(BUS_URL=redis_server.url, BINANCE_WS_URL=ex.url(),
                          INGESTOR_METRICS_PORT=str(port), METRICS_HOST="127.0.0.1",
                          TICK_PARTITIONS="3", LOG_FORMAT="json")
        log_path = tmp_path / "ingestor.log"
        with log_path.open("wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ingestor", cwd=ROOT, env=env,
                stdout=log_file, stderr=log_file)
        try:
            async def landed_everywhere() -> bool:
                entries = await read_entries(redis_server.url, 3)
                return all(len(entries[p]) >= 3 for p in range(3))

            await wait_until(landed_everywhere, timeout=15, what="ticks in all 3 partitions")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                health = await http.get("/healthz")
                scrape = await http.get("/metrics")
            assert health.status_code == 200
            published = [line for line in scrape.text.splitlines()
                         if line.startswith("ingestor_ticks_published_total ")]
            assert published
            assert float(published[0].split()[1]) > 0
            assert "process_resident_memory_bytes" in scrape.text

            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), 10)
            assert code == 0, log_path.read_text()
            assert time.monotonic() - started < 4
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    logs = log_path.read_text()
    assert '"logger":"ingestor.feed"' in logs  # LOG_FORMAT=json reached the process
    assert "ingestor stopped" in logs


def test_bad_setting_exits_2_naming_the_variable() -> None:
    env = service_env(STALE_AFTER_S="abc", INGESTOR_METRICS_PORT=str(free_port()))
    result = subprocess.run([sys.executable, "-m", "ingestor"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert "STALE_AFTER_S" in result.stderr
