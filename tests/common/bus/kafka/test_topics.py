"""Topics: created when missing with the configured partitions and retention, left alone
when they exist, waited for (not created) by readers, created on first use after an outage."""

from __future__ import annotations

import time

from aiokafka.admin import AIOKafkaAdminClient

from common.bus import Delivery, Record, Retention
from common.bus.kafka.topics import COUNT_CAPPED_RETENTION_MS
from common.bus.kafka.transport import KafkaTransport
from tests.support.bus import drain, eventually, kafka_transport, partitions_of, records
from tests.support.servers import KafkaBroker

STREAMS = ["ticks.0", "ticks.1"]


async def test_topics_are_created_with_the_configured_partitions_and_retention(
        kafka_broker: KafkaBroker, admin: AIOKafkaAdminClient) -> None:
    bus = kafka_transport(kafka_broker, topic_partitions=3, replication_factor=1)
    try:
        await bus.declare(STREAMS, Retention(max_age_s=900))
        await bus.declare(["alerts"], Retention(max_len=10_000))
        assert await partitions_of(admin) == {"ticks.0": 3, "ticks.1": 3, "alerts": 3}
        ticks = bus.topics.new_topic("ticks.0")
        assert (ticks.num_partitions, ticks.replication_factor) == (3, 1)
        assert ticks.topic_configs == {"retention.ms": "900000"}
        assert bus.topics.new_topic("alerts").topic_configs == {
            "retention.ms": str(COUNT_CAPPED_RETENTION_MS)}
        await bus.declare(STREAMS, Retention(max_age_s=900))  # existing: left as they are
        # Records go to crc32(key) % partitions: one key, one partition, in order.
        await bus.publish([Record("alerts", "BTCUSDT", f"b{i}".encode()) for i in range(5)]
                          + [Record("alerts", "ETHUSDT", f"e{i}".encode()) for i in range(5)])
        reader = bus.broadcast_reader("alerts")
        by_partition: dict[str, set[str]] = {}
        for delivery in await reader.backlog(10):
            partition = delivery.position.split(":")[0]
            by_partition.setdefault(delivery.payload.decode()[0], set()).add(partition)
        assert all(len(partitions) == 1 for partitions in by_partition.values())
    finally:
        await bus.close()


async def test_a_topic_the_broker_made_with_more_partitions_is_still_one_log(
        bus: KafkaTransport, kafka_broker: KafkaBroker, admin: AIOKafkaAdminClient) -> None:
    # tansu creates a topic it is merely asked about, with four partitions.
    await admin.describe_topics(["ticks.0"])
    assert (await partitions_of(admin))["ticks.0"] == 4
    await bus.publish([Record("ticks.0", f"SYM{i}", f"m{i}".encode()) for i in range(20)])
    consumer = bus.group_consumer("g", "c", ["ticks.0"], rebuild_s=60)
    got = await drain(consumer, 20)
    assert [d.payload for d in got] == [f"m{i}".encode() for i in range(20)]
    assert {d.position.split(":")[0] for d in got} == {"0"}


async def test_a_reader_waits_for_its_topic_without_creating_it(
        bus: KafkaTransport, admin: AIOKafkaAdminClient) -> None:
    reader = bus.broadcast_reader("alerts")
    assert await reader.backlog(10) == []
    assert await reader.read(10, 50) == []
    assert "alerts" not in await partitions_of(admin)  # left to the writer, with its retention
    await bus.declare(["alerts"], Retention(max_len=100))
    await bus.publish(records("alerts", 2))
    seen: list[Delivery] = []
    deadline = time.monotonic() + 10
    while len(seen) < 2 and time.monotonic() < deadline:
        seen += await reader.read(10, 100)
    assert [d.payload for d in seen] == [b"m0", b"m1"]  # all of it: it is all new


async def test_declare_while_the_broker_is_down_leaves_creation_to_first_use(
        kafka_broker: KafkaBroker) -> None:
    kafka_broker.stop()
    bus = kafka_transport(kafka_broker)
    try:
        await bus.declare(STREAMS, Retention(max_age_s=900))  # no error: services start
        assert await bus.ping() is False
        kafka_broker.start()
        await eventually(lambda: bus.publish(records("ticks.0", 1)))
        assert bus.topics.new_topic("ticks.0").topic_configs == {"retention.ms": "900000"}
        assert await bus.ping() is True
    finally:
        await bus.close()
