"""The bus every end-to-end scenario runs on: a Redis server, or a Kafka-protocol broker
(each scenario runs on both unless it is about one of them)."""

from __future__ import annotations

import pytest

from tests.support.servers import KAFKA_TEST_ENV, Bus, KafkaBroker, RedisServer


@pytest.fixture(params=["redis", "kafka"])
def bus(request: pytest.FixtureRequest) -> Bus:
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return Bus("redis", server.url, {})
    broker: KafkaBroker = request.getfixturevalue("kafka_broker")
    return Bus("kafka", broker.url, dict(KAFKA_TEST_ENV))
