"""Bus helpers shared by the transport suites: Kafka clients configured as the tests' broker
needs, numbered records, a consumer drained or crashed."""

from __future__ import annotations

from common.bus import Delivery, GroupConsumer, Record
from common.bus.kafka.transport import KafkaGroupConsumer, KafkaTransport
from common.settings import KafkaSettings, load_settings
from tests.support.servers import KAFKA_TEST_ENV, KafkaBroker


def kafka_test_settings(**overrides: object) -> KafkaSettings:
    """The settings the tests give every Kafka client (see ``KAFKA_TEST_ENV``)."""
    values: dict[str, object] = {k.removeprefix("KAFKA_").lower(): v
                                 for k, v in KAFKA_TEST_ENV.items()}
    values.update(overrides)
    return load_settings(KafkaSettings, **values)


def kafka_transport(broker: KafkaBroker, **overrides: object) -> KafkaTransport:
    return KafkaTransport(broker.url, timeout_s=3, settings=kafka_test_settings(**overrides))


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
    does after the session timeout (a test cannot wait for that); on Redis nothing to do."""
    if isinstance(consumer, KafkaGroupConsumer):
        await consumer.close()
