"""``python -m gateway`` as an operator runs it: graceful SIGTERM, bad settings."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support.gateway import make_alert, open_bus, publish, receive
from tests.support.servers import RedisServer
from tools.redis_server import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


def gateway_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GATEWAY_", "BUS_", "HISTORY_", "CLIENT_", "MAX_CLIENTS"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(values)
    return env


def start_gateway(tmp_path: Path, **values: str) -> subprocess.Popen[bytes]:
    # cwd is an empty directory so that no stray .env changes the settings.
    return subprocess.Popen([sys.executable, "-m", "gateway"], cwd=tmp_path,
                            env=gateway_env(**values), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


async def test_sigterm_drains_and_exits_zero(redis_server: RedisServer, tmp_path: Path) -> None:
    port = free_port()
    process = start_gateway(tmp_path, BUS_URL=redis_server.url, GATEWAY_HOST="127.0.0.1",
                            GATEWAY_PORT=str(port), SHUTDOWN_TIMEOUT_S="5")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            async with asyncio.timeout(15):
                while True:
                    assert process.poll() is None, process.communicate()[1].decode()
                    try:
                        if (await http.get("/readyz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.05)
        bus = await open_bus(redis_server.url)
        try:
            async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
                await receive(ws)
                alert = make_alert("BTCUSDT")
                await publish(bus, alert)
                assert (await receive(ws))["alert"]["id"] == alert.id
                process.send_signal(signal.SIGTERM)
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 5)
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1012  # service restart: reconnect
        finally:
            await bus.close()
        code = await asyncio.to_thread(process.wait, 8)
        stderr = process.stderr.read().decode() if process.stderr else ""
        assert code == 0, stderr
        assert "gateway stopped" in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize(("name", "value"), [("GATEWAY_PORT", "notaport"),
                                             ("WS_MAX_BUFFERED_BYTES", "0")])
async def test_a_bad_setting_exits_2_naming_the_variable(
        tmp_path: Path, name: str, value: str) -> None:
    process = start_gateway(tmp_path, **{name: value})
    _, stderr = await asyncio.to_thread(process.communicate, timeout=15)
    assert process.returncode == 2
    assert name in stderr.decode()
