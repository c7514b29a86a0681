"""Helpers of the bus tests: records to publish, draining a consumer, the Kafka test config
and what a test asks a Kafka broker directly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import fakeredis
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from common.bus import BusUnavailable, ConsumerLag, Delivery, GroupConsumer, Record, Transport
from common.bus.kafka.config import KafkaConfig
from common.bus.kafka.tansu import log_bounds
from common.bus.kafka.transport import KafkaTransport
from common.bus.redis_streams import RedisConfig, RedisTransport
from common.kafka_settings import KafkaSettings
from common.settings import BaseServiceSettings, load_settings
from tests.support.servers import KAFKA_TEST_ENV, KafkaBroker, RedisServer

T = TypeVar("T")


def records(stream: str, count: int, start: int = 0) -> list[Record]:
    return [Record(stream, "k", f"m{i}".encode()) for i in range(start, start + count)]


async def drain(consumer: GroupConsumer, want: int, *, block_ms: int = 50) -> list[Delivery]:
    got: list[Delivery] = []
    for _ in range(50):
        batch = await consumer.fetch(100, block_ms)
        got.extend(batch)
        if len(got) >= want and not batch:
            break
    return got


async def crash(consumer: GroupConsumer) -> None:
    """The consumer's process dies: on Kafka its member leaves the group, as a dead one
    does after the session timeout (a test cannot wait for that); on Redis closing a
    consumer hands nothing back, as a dead one does not."""
    await consumer.close()


async def settled_lag(consumer: GroupConsumer, ready: Callable[[dict[str, ConsumerLag]], bool]
                      ) -> dict[str, ConsumerLag]:
    """Lag once it shows what the test did: Kafka reports a partition's end from the last
    fetch of it, which trails a publish by one fetch."""
    deadline = time.monotonic() + 5
    while True:
        lags = await consumer.lag()
        if ready(lags) or time.monotonic() > deadline:
            return lags
        await asyncio.sleep(0.05)


def fake_redis_transport(settings: BaseServiceSettings) -> RedisTransport:
    """A bus backend for ``register_transport``: Redis semantics on fakeredis."""
    return RedisTransport(RedisConfig.from_settings(settings), client=fakeredis.FakeAsyncRedis())


# -- Kafka ----------------------------------------------------------------------------------

def kafka_test_settings(**overrides: object) -> KafkaSettings:
    """The settings the tests give every Kafka client (see ``KAFKA_TEST_ENV``)."""
    values: dict[str, object] = {k.removeprefix("KAFKA_").lower(): v
                                 for k, v in KAFKA_TEST_ENV.items()}
    values.update(overrides)
    return load_settings(KafkaSettings, **values)


def kafka_transport(broker: KafkaBroker, **overrides: object) -> KafkaTransport:
    config = KafkaConfig.from_url(broker.url, kafka_test_settings(**overrides), timeout_s=3)
    return KafkaTransport(config)


async def partitions_of(admin: AIOKafkaAdminClient) -> dict[str, int]:
    return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(None)}


async def committed(broker: KafkaBroker, group: str, stream: str) -> int | None:
    """The group's committed offset, as a newcomer would find it."""
    probe = AIOKafkaConsumer(bootstrap_servers=broker.url.removeprefix("kafka://"),
                             group_id=group, enable_auto_commit=False)
    await probe.start()
    try:
        offset: int | None = await probe.committed(TopicPartition(stream, 0))
        return offset
    finally:
        await probe.stop()


async def eventually(operation: Callable[[], Awaitable[T]], timeout_s: float = 20) -> T:
    """Retry while the bus is unavailable, as every service does."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await operation()
        except BusUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


# -- either backend --------------------------------------------------------------------------

@dataclass
class RealBus:
    """A transport on a real server of either backend (``name``: redis or kafka), and what
    a test asks that server directly."""

    name: str
    url: str
    transport: Transport

    async def unacknowledged(self, group: str, stream: str) -> int:
        """Entries of ``stream`` (one partition) that ``group`` has not acknowledged: pending
        on Redis; on Kafka, past the group's committed offset."""
        if self.name == "redis":
            client = aioredis.from_url(self.url)
            try:
                return int((await client.xpending(stream, group))["pending"])
            finally:
                await client.aclose()
        probe = AIOKafkaConsumer(bootstrap_servers=self.url.removeprefix("kafka://"),
                                 group_id=group, enable_auto_commit=False)
        await probe.start()
        try:
            tp = TopicPartition(stream, 0)
            probe.assign([tp])
            _, ends = await log_bounds(probe, [tp], timeout_s=5)
            return int(ends[tp] - (await probe.committed(tp) or 0))
        finally:
            await probe.stop()


def real_bus(request: pytest.FixtureRequest) -> RealBus:
    """For a fixture parametrized with ``["redis", "kafka"]``: the bus of that backend,
    on a server of its own (the ``redis_server`` and ``kafka_broker`` fixtures)."""
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return RealBus("redis", server.url, RedisTransport(RedisConfig(server.url, timeout_s=3)))
    broker: KafkaBroker = request.getfixturevalue("kafka_broker")
    return RealBus("kafka", broker.url, kafka_transport(broker))
