"""The bus every end-to-end scenario runs on: a Redis server, or a Kafka-protocol broker
(each scenario runs on both unless it is about one of them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.servers import KAFKA_TEST_ENV, Bus, KafkaBroker, RedisServer


@pytest.fixture(params=["redis", "kafka"])
def bus(request: pytest.FixtureRequest) -> Bus:
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return Bus("redis", server.url, {})
    broker: KafkaBroker = request.getfixturevalue("kafka_broker")
    return Bus("kafka", broker.url, dict(KAFKA_TEST_ENV))


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """Where the scenario's processes write their logs (shown when it fails)."""
    path = tmp_path / "logs"
    path.mkdir()
    return path
