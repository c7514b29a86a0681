"""The producer: idempotent unless switched off, bounded failures while the broker is down."""

from __future__ import annotations

import time

import pytest

from common.bus import BusUnavailable, TransportConfigError
from common.bus.kafka.transport import KafkaTransport
from tests.support.bus import drain, kafka_transport, records
from tests.support.servers import KafkaBroker

STREAMS = ["ticks.0", "ticks.1"]


async def test_idempotence_is_on_by_default_and_can_be_switched_off(
        kafka_broker: KafkaBroker) -> None:
    strict = kafka_transport(kafka_broker, idempotence=True)
    try:
        # tansu has no idempotent producer: the error says which switch to use.
        with pytest.raises(TransportConfigError, match="KAFKA_IDEMPOTENCE=false"):
            await strict.publish(records("ticks.0", 1))
    finally:
        await strict.close()
    relaxed = kafka_transport(kafka_broker, idempotence=False)
    try:
        await relaxed.publish(records("ticks.0", 1))
    finally:
        await relaxed.close()


async def test_publish_and_fetch_raise_bus_unavailable_while_the_broker_is_down(
        bus: KafkaTransport, kafka_broker: KafkaBroker) -> None:
    consumer = bus.group_consumer("g", "c", STREAMS, rebuild_s=60)
    await bus.publish(records("ticks.0", 1))
    assert len(await drain(consumer, 1)) == 1
    kafka_broker.stop()
    assert await bus.ping() is False
    started = time.monotonic()
    with pytest.raises(BusUnavailable):
        await bus.publish(records("ticks.0", 1, start=1))
    with pytest.raises(BusUnavailable):
        await consumer.fetch(10, 50)
    assert time.monotonic() - started < 10  # bounded by BUS_TIMEOUT_S (3 s here)
