"""A broker that restarts with its memory wiped (the in-memory tansu) is recovered from."""

from __future__ import annotations

import asyncio
import time

from aiokafka.admin import AIOKafkaAdminClient

from common.bus import Delivery, Retention
from common.bus.kafka.transport import KafkaTransport
from tests.support.bus import committed, drain, eventually, partitions_of, records
from tests.support.servers import KafkaBroker

STREAMS = ["ticks.0", "ticks.1"]


async def test_a_broker_restart_that_loses_everything_is_recovered_from(
        bus: KafkaTransport, kafka_broker: KafkaBroker, admin: AIOKafkaAdminClient) -> None:
    await bus.declare(STREAMS, Retention(max_age_s=900))
    consumer = bus.group_consumer("g", "c", STREAMS, rebuild_s=60)
    reader = bus.broadcast_reader("alerts")
    await bus.publish(records("ticks.0", 3) + records("alerts", 2))
    await consumer.ack(await drain(consumer, 3))
    assert len(await reader.backlog(10)) == 2
    kafka_broker.restart()
    await asyncio.sleep(1.5)  # past the topic re-check interval

    # The producer keeps working; the declared topics come back as they were declared.
    await eventually(lambda: bus.publish(records("ticks.0", 2, start=10)
                                         + records("alerts", 1, start=10)))
    live: list[Delivery] = []
    deadline = time.monotonic() + 30
    while {d.payload for d in live} != {b"m10", b"m11"} and time.monotonic() < deadline:
        batch = await eventually(lambda: consumer.fetch(100, 100))
        await eventually(lambda batch=batch: consumer.ack(batch))  # type: ignore[misc]
        live.extend(d for d in batch if not d.replay)
    assert {d.payload for d in live} == {b"m10", b"m11"}
    # Back, by the transport or (asked by a consumer first) with the broker's defaults.
    assert {"ticks.0", "ticks.1", "alerts"} <= set(await partitions_of(admin))
    seen: list[Delivery] = []
    deadline = time.monotonic() + 20
    while not seen and time.monotonic() < deadline:
        seen = await eventually(lambda: reader.read(10, 200))
    assert [d.payload for d in seen] == [b"m10"]
    assert await committed(kafka_broker, "g", "ticks.0") == 2
