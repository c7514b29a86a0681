"""Real servers started by tests on free ports."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tools.kafka_server import find_tansu, start_tansu
from tools.redis_server import (
    SentinelSetup,
    ServerNotFound,
    free_port,
    start_redis_server,
    start_sentinel_setup,
)


@dataclass
class RedisServer:
    """A real Redis-compatible server that a test can stop and restart on the same port."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = start_redis_server(self.port, self.data_dir)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@dataclass
class SentinelCluster:
    """A master, one replica and three Sentinels (``tools.redis_server``), for failovers.

    ``kill_master`` is a kill -9 of whichever node is the master now; ``wait_for_failover``
    returns once every Sentinel names the promoted replica and it says it is the master.
    """

    base_dir: Path
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)
    setup: SentinelSetup | None = None

    @property
    def url(self) -> str:
        return self._setup.url

    @property
    def _setup(self) -> SentinelSetup:
        if self.setup is None:
            raise RuntimeError("the Sentinel cluster is not started")
        return self.setup

    def start(self) -> None:
        self.setup = start_sentinel_setup(self.base_dir, password=self.password,
                                          sentinel_password=self.sentinel_password)

    def master_port(self) -> int:
        return self._setup.master_port()

    def kill_master(self) -> int:
        return self._setup.kill_master()

    def wait_for_failover(self, old_port: int, timeout_s: float = 30.0) -> int:
        return self._setup.wait_for_failover(old_port, timeout_s)

    def stop(self) -> None:
        if self.setup is not None:
            self.setup.stop()
            self.setup = None


# What every Kafka process of the tests needs: tansu has no idempotent producer, and short
# group timings keep rebalances (a restarted or vanished member) within a second or two.
KAFKA_TEST_ENV = {
    "KAFKA_IDEMPOTENCE": "false",
    "KAFKA_SESSION_TIMEOUT_MS": "2000",
    "KAFKA_HEARTBEAT_INTERVAL_MS": "200",
    "KAFKA_FETCH_MAX_WAIT_MS": "10",
}


def tansu_available() -> bool:
    try:
        find_tansu()
    except ServerNotFound:
        return False
    return True


@dataclass
class KafkaBroker:
    """An in-memory Kafka-protocol broker (tansu) on a free port.

    ``restart`` kills it and starts a fresh one on the same port: like a crashed broker
    whose storage is gone, every topic, offset and group is forgotten.
    """

    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = start_tansu(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@dataclass
class Bus:
    """The transport a pipeline runs on: its ``BUS_URL`` and what its processes need
    (the ``bus`` fixture of tests/e2e gives one of each)."""

    name: str
    url: str
    env: dict[str, str]
