"""The transport's one producer: ``acks=all``, idempotent unless switched off, replaced
when it broke.

Partitioning: with one partition per topic (the default) a stream is one ordered log,
exactly like a Redis stream, so the partitioning by symbol stays the ingestor's
``crc32(symbol) % TICK_PARTITIONS``, identical on both transports. With more partitions a
record goes to ``crc32(key) % KAFKA_TOPIC_PARTITIONS`` (order is then kept per key: per
symbol for ``alerts``; a ``ticks`` entry is keyed by its first symbol, so keep ticks at one
partition per topic and scale them with ``TICK_PARTITIONS``). The configured count, not
the topic's actual one, decides where records go: a broker that auto-creates topics with
its own default (``tansu`` makes four) cannot scatter a stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Final
from zlib import crc32

from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors

from common.bus.contract import BusUnavailable, Record, TransportConfigError
from common.bus.kafka.clients import bounded, translated
from common.bus.kafka.config import KafkaConfig
from common.bus.kafka.topics import Topics

log = logging.getLogger(__name__)

# Consecutive failed publishes after which the producer is replaced even if it looks fine.
PRODUCER_REBUILD_AFTER: Final = 3


class StablePartitioner:
    """``crc32(key) % KAFKA_TOPIC_PARTITIONS``, whatever count the topic really has."""

    def __init__(self, partitions: int) -> None:
        self._partitions = partitions

    def __call__(self, key: bytes | None, all_partitions: list[int],
                 available: list[int]) -> int:
        ordered = sorted(all_partitions)
        spread = min(self._partitions, len(ordered))
        if spread <= 1 or key is None:
            return ordered[0]
        return ordered[crc32(key) % spread]


class Producer:
    """Made on first publish, so a service starts while the brokers are down."""

    def __init__(self, config: KafkaConfig, topics: Topics) -> None:
        self._config = config
        self._topics = topics
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._failures = 0

    async def publish(self, records: Sequence[Record]) -> None:
        """Send every record and wait for all of them (``acks=all``).

        All records are handed to the producer before the first one is awaited, so one call
        becomes one batch per partition (``linger_ms`` 0 costs no batching here). On failure
        any subset may have been written, as the contract allows; after a failure the broker
        itself reported, or a few in a row, the producer is replaced, since an idempotent
        producer whose broker lost its state stays broken.
        """
        if not records:
            return
        await self._topics.ensure({record.stream for record in records})
        producer = await self._client()
        futures: list[asyncio.Future[Any]] = []
        try:
            async with translated("publishing", self._config.timeout_s):
                for record in records:
                    futures.append(await producer.send(
                        record.stream, record.payload, key=record.key.encode()))
                await asyncio.wait(futures)
                for future in futures:
                    future.result()
        except BusUnavailable as exc:
            self._failures += 1
            answered = isinstance(exc.__cause__, kafka_errors.BrokerResponseError)
            if isinstance(exc.__cause__, kafka_errors.UnknownTopicOrPartitionError):
                self._topics.suspect()
            if answered or self._failures >= PRODUCER_REBUILD_AFTER:
                self._failures = 0
                log.warning("replacing the kafka producer after: %s", exc)
                await self._replace(producer)
            raise
        self._failures = 0

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await bounded(producer.stop(), self._config.timeout_s, "producer stop")

    async def _client(self) -> AIOKafkaProducer:
        config = self._config
        async with self._lock:
            if self._producer is None:
                kafka = config.kafka
                producer = AIOKafkaProducer(
                    acks="all",
                    enable_idempotence=kafka.idempotence,
                    linger_ms=kafka.linger_ms,
                    max_batch_size=kafka.batch_bytes,
                    max_request_size=max(kafka.batch_bytes, 1024 * 1024),
                    partitioner=StablePartitioner(kafka.topic_partitions),
                    request_timeout_ms=config.request_timeout_ms,
                    **config.client_options(),
                )
                try:
                    async with translated("starting the producer", config.timeout_s):
                        await producer.start()
                except BusUnavailable as exc:
                    await bounded(producer.stop(), config.timeout_s, "producer stop")
                    refused = exc.__cause__
                    if kafka.idempotence and isinstance(
                            refused, kafka_errors.BrokerResponseError):
                        # tansu, for one, has no idempotent producer (see tansu.py).
                        raise TransportConfigError(
                            f"kafka refused an idempotent producer ({refused!r}); set "
                            "KAFKA_IDEMPOTENCE=false for a broker without it") from exc
                    raise
                except BaseException:
                    await bounded(producer.stop(), config.timeout_s, "producer stop")
                    raise
                self._producer = producer
            return self._producer

    async def _replace(self, producer: AIOKafkaProducer) -> None:
        """Drop a producer that failed; the next publish makes a fresh one."""
        async with self._lock:
            if self._producer is producer:
                self._producer = None
        await bounded(producer.stop(), self._config.timeout_s, "producer stop")
