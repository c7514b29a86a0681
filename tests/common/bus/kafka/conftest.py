from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from common.bus.kafka.transport import KafkaTransport
from tests.support.bus import kafka_transport
from tests.support.servers import KafkaBroker


@pytest.fixture
async def bus(kafka_broker: KafkaBroker) -> AsyncIterator[KafkaTransport]:
    transport = kafka_transport(kafka_broker)
    yield transport
    await transport.close()


@pytest.fixture
async def admin(kafka_broker: KafkaBroker) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.url.removeprefix("kafka://"))
    await client.start()
    yield client
    await client.close()
