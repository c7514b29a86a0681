"""``GATEWAY_WORKERS``: several worker processes of ``python -m gateway`` on one port, each
a whole gateway, supervised by the parent (``gateway.workers``)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from common.bus.redis_streams import RedisTransport
from tests.support.gateway import assert_silent, ids, make_alert, publish, receive, receive_alerts
from tests.support.processes import assert_config_failure, run_to_exit, service_env
from tests.support.prometheus import promtool_binary
from tests.support.servers import RedisServer
from tests.support.workers import GatewayPool, connect_to_every_worker, worker_of

WORKERS = 3


@pytest.fixture
async def pool(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[GatewayPool]:
    gateway = GatewayPool(redis_server.url, tmp_path, workers=WORKERS)
    await gateway.start()
    try:
        yield gateway
    except BaseException:
        print(gateway.service.output())
        raise
    finally:
        gateway.kill()


async def close_all(clients: dict[int, list[ClientConnection]]) -> None:
    await asyncio.gather(*(ws.close() for c in clients.values() for ws in c))


async def closed_code(ws: ClientConnection, timeout_s: float = 10.0) -> int | None:
    """The close code the server sent (``None``: the connection just broke)."""
    async def read_until_closed() -> None:
        async with asyncio.timeout(timeout_s):
            while True:
                await ws.recv()

    with pytest.raises(ConnectionClosed) as closed:
        await read_until_closed()
    return None if closed.value.rcvd is None else closed.value.rcvd.code


async def test_every_worker_delivers_every_alert_exactly_once(
        pool: GatewayPool, bus: RedisTransport) -> None:
    clients = await connect_to_every_worker(pool.ws_url, WORKERS, per_worker=2)
    sockets = [ws for c in clients.values() for ws in c]
    try:
        for ws in sockets:
            assert (await receive(ws))["type"] == "history"
        alerts = [make_alert(symbol) for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")]
        await publish(bus, *alerts)
        received = await asyncio.gather(*(receive_alerts(ws, len(alerts)) for ws in sockets))
        for got in received:
            assert ids(got) == [a.id for a in alerts]
        await asyncio.gather(*(assert_silent(ws, 0.5) for ws in sockets))

        # /metrics on the shared port answers for every worker, whichever takes the scrape.
        for _ in range(3):
            metrics = await pool.metrics()
            for worker, held in clients.items():
                assert metrics[("gateway_clients_connected", str(worker))] == len(held)
                assert metrics[("gateway_deliveries_total", str(worker))] == (
                    len(alerts) * len(held))
                assert metrics[("gateway_alerts_received_total", str(worker))] == len(alerts)
            assert ("gateway_clients_connected", "") not in metrics
        # ... in a form Prometheus accepts: each family once, all its workers' samples in it.
        checked = await asyncio.to_thread(
            subprocess.run, [promtool_binary(), "check", "metrics"], capture_output=True,
            input=await asyncio.to_thread(pool.metrics_text), text=True, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    finally:
        await close_all(clients)
    assert pool.stop() == 0


async def test_sigterm_drains_every_worker_and_browsers_see_1012(pool: GatewayPool) -> None:
    clients = await connect_to_every_worker(pool.ws_url, WORKERS)
    pids = pool.pids()
    assert len(pids) == WORKERS
    for ws in (ws for c in clients.values() for ws in c):
        await receive(ws)
    process = pool.service.process
    assert process is not None
    process.send_signal(signal.SIGTERM)
    codes = await asyncio.gather(*(closed_code(ws) for c in clients.values() for ws in c))
    assert set(codes) == {1012}  # service restart: browsers reconnect, elsewhere if need be
    code = await asyncio.to_thread(process.wait, 15)
    assert code == 0, pool.service.output()
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    log = pool.service.output()
    assert all(f"gateway worker {i} stopped" in log for i in range(WORKERS))
    assert log.rstrip().endswith("gateway stopped")


async def test_ctrl_c_in_a_terminal_drains_every_worker_once(pool: GatewayPool) -> None:
    """SIGINT to the whole foreground process group, as a terminal sends it: only the
    parent gets it (the workers have groups of their own) and forwards it once, so the
    workers drain instead of taking the forwarded signal as a second, forcing one."""
    clients = await connect_to_every_worker(pool.ws_url, WORKERS)
    for ws in (ws for c in clients.values() for ws in c):
        await receive(ws)
    process = pool.service.process
    assert process is not None
    os.killpg(process.pid, signal.SIGINT)
    codes = await asyncio.gather(*(closed_code(ws) for c in clients.values() for ws in c))
    assert set(codes) == {1012}
    assert await asyncio.to_thread(process.wait, 15) == 0, pool.service.output()
    assert "second signal" not in pool.service.output()


async def test_a_killed_worker_is_restarted_and_the_others_notice_nothing(
        pool: GatewayPool, bus: RedisTransport) -> None:
    clients = await connect_to_every_worker(pool.ws_url, WORKERS)
    for ws in (ws for c in clients.values() for ws in c):
        await receive(ws)
    first = make_alert("BTCUSDT")
    await publish(bus, first)
    for ws in (ws for c in clients.values() for ws in c):
        assert ids(await receive_alerts(ws, 1)) == [first.id]

    victim = 1
    killed = pool.pids()[victim]
    os.kill(killed, signal.SIGKILL)
    assert {await closed_code(ws) for ws in clients.pop(victim)} == {None}
    missed = make_alert("ETHUSDT")
    await publish(bus, missed)
    for ws in (ws for c in clients.values() for ws in c):
        assert ids(await receive_alerts(ws, 1)) == [missed.id]  # still served, in order

    async with asyncio.timeout(20):
        while pool.starts(victim) < 2:
            await asyncio.sleep(0.05)
    assert pool.pids()[victim] != killed
    assert (f"gateway worker {victim} (pid {killed}) was killed by SIGKILL; starting it "
            "again") in pool.service.output()
    await pool.wait_ready(workers={victim})
    # The browser of the dead worker resumes on the new one and gets exactly what it missed.
    async with asyncio.timeout(20):
        while True:
            ws = await connect(f"{pool.ws_url}?since={first.id}")
            if worker_of(ws) == victim:
                break
            await ws.close()
    try:
        resumed = await receive(ws)
        assert resumed["type"] == "history"
        assert resumed.get("resumed") is True
        assert ids(resumed["alerts"]) == [missed.id]
        await assert_silent(ws)
    finally:
        await ws.close()
        await close_all(clients)
    assert pool.stop() == 0  # a restarted worker is not a failed gateway


@pytest.mark.parametrize(("variable", "values"), [
    ("GATEWAY_WORKERS", {"GATEWAY_WORKERS": "0"}),
    ("GATEWAY_WORKERS", {"GATEWAY_WORKERS": "many"}),
    # Checked by the bus backend, in the parent: before any worker exists.
    ("KAFKA_SSL_CAFILE", {"BUS_URL": "kafka://127.0.0.1:1", "KAFKA_SSL_CAFILE": "/nowhere"}),
])
async def test_a_bad_setting_exits_2_before_any_worker_starts(
        tmp_path: Path, variable: str, values: dict[str, str]) -> None:
    env = service_env(**{"GATEWAY_WORKERS": "2", "GATEWAY_HOST": "127.0.0.1",
                         "GATEWAY_PORT": "0", **values})
    code, stderr = await run_to_exit("gateway", env, tmp_path)
    assert_config_failure(code, stderr, "gateway", variable)
    assert "started (pid" not in stderr


async def test_a_taken_port_exits_2_before_any_worker_starts(
        redis_server: RedisServer, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = service_env(GATEWAY_WORKERS="2", GATEWAY_HOST="127.0.0.1",
                          GATEWAY_PORT=str(port), BUS_URL=redis_server.url)
        code, stderr = await run_to_exit("gateway", env, tmp_path)
    assert_config_failure(code, stderr, "gateway", "GATEWAY_PORT")
    assert "started (pid" not in stderr


async def test_workers_stop_by_themselves_when_the_parent_is_killed(pool: GatewayPool) -> None:
    pids = pool.pids()
    pool.kill()  # SIGKILL: nobody forwards anything
    async with asyncio.timeout(20):
        while any(_alive(pid) for pid in pids.values()):
            await asyncio.sleep(0.1)
    log = pool.service.output()
    assert log.count("the gateway's parent process is gone: stopping this worker") == WORKERS


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_second_gateway_on_the_same_port_exits_2_instead_of_sharing_it(
        pool: GatewayPool, redis_server: RedisServer, tmp_path: Path) -> None:
    """The workers' sockets share the port with each other (SO_REUSEPORT), never with a
    gateway started by mistake on the same one."""
    env = service_env(GATEWAY_WORKERS="2", GATEWAY_HOST="127.0.0.1",
                      GATEWAY_PORT=str(pool.port), BUS_URL=redis_server.url)
    code, stderr = await run_to_exit("gateway", env, tmp_path)
    assert_config_failure(code, stderr, "gateway", "GATEWAY_PORT")
    assert "started (pid" not in stderr
    await pool.wait_ready()  # the first one serves on
