"""Kafka implementation of the bus contract (aiokafka), chosen by ``BUS_URL=kafka://host:port``.

The transport is assembled from one module per role: ``config`` (brokers, ``KAFKA_*``,
SASL/SSL), ``topics`` (admin client, creation, retention), ``producer``, ``group`` (the
detector's consumer-group member), ``broadcast`` (readers with no group), ``clients`` (error
translation shared by all of them) and ``tansu`` (where the local broker differs from
Kafka). Clients are made lazily, so a service starts (and reports itself not ready) while
the brokers are still down, as on Redis.

Failures. Every broker failure reaches the caller as ``BusUnavailable`` (the services wait
and retry) or is retried inside; a setting or a permission the broker refuses is a
``TransportConfigError``. A broker that lost its state (the in-memory ``tansu`` after a
restart) is recovered from: declared topics are checked at most once a second and created
again when missing, consumers follow logs whose offsets went back, and a producer that
broke is replaced.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from common.bus.contract import BusUnavailable, Record, Retention, Sharing, TransportConfigError
from common.bus.kafka.broadcast import KafkaBroadcastReader
from common.bus.kafka.clients import quiet_library_logs, translated
from common.bus.kafka.config import KafkaConfig
from common.bus.kafka.group import KafkaGroupConsumer
from common.bus.kafka.producer import Producer
from common.bus.kafka.topics import Topics

if TYPE_CHECKING:
    from common.settings import BaseServiceSettings

log = logging.getLogger(__name__)

PING_TIMEOUT_S: Final = 2.0


def from_settings(settings: BaseServiceSettings) -> KafkaTransport:
    """The registry's entry: ``KAFKA_*`` are read here, once, at start."""
    return KafkaTransport(KafkaConfig.from_settings(settings))


class KafkaTransport:
    """The bus on Kafka, as its config says; it reads no setting itself."""

    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        self.topics = Topics(config)
        self._producer = Producer(config, self.topics)
        self._consumers: list[KafkaGroupConsumer] = []
        self._readers: list[KafkaBroadcastReader] = []  # those holding a consumer now
        quiet_library_logs()

    async def start(self) -> None:
        """Nothing to do: clients connect on first use, so a service can start (and say it
        is not ready) while the brokers are down, instead of crash-looping."""

    async def close(self) -> None:
        consumers, self._consumers = list(self._consumers), []
        for consumer in consumers:
            await consumer.close()
        for reader in list(self._readers):  # each one leaves the list as it closes
            await reader.close()
        await self._producer.close()
        await self.topics.close()

    async def ping(self) -> bool:
        """A metadata request with a short timeout: True when a broker answers now."""
        timeout_s = min(self.config.timeout_s, PING_TIMEOUT_S)
        try:
            admin = await self.topics.admin(timeout_s)
            async with translated("ping", timeout_s):
                await admin.list_topics()
        except (BusUnavailable, TransportConfigError):
            return False
        return True

    async def declare(self, streams: Sequence[str], retention: Retention) -> None:
        """Create the topics now if the brokers answer, else on first use (a service
        must be able to start while Kafka is down, as it can with Redis)."""
        self.topics.keep(streams, retention)
        try:
            await self.topics.ensure(streams, force=True)
        except BusUnavailable as exc:
            log.warning("topics %s will be created on first use: %s", ", ".join(streams), exc)

    async def publish(self, records: Sequence[Record]) -> None:
        await self._producer.publish(records)

    def group_consumer(self, group: str, consumer: str, streams: Sequence[str], *,
                       rebuild_s: float, sharing: Sharing | None = None) -> KafkaGroupConsumer:
        """A vanished member's partitions go to the others after
        ``KAFKA_SESSION_TIMEOUT_MS``, from its last committed offset. The group always
        divides the partitions among its members, so ``sharing`` changes nothing here."""
        member = KafkaGroupConsumer(self.config, self.topics, group, consumer, streams,
                                    rebuild_s=rebuild_s, publish=self.publish)
        self._consumers.append(member)
        return member

    def broadcast_reader(self, stream: str) -> KafkaBroadcastReader:
        return KafkaBroadcastReader(self.config, self.topics, stream, self._readers)
