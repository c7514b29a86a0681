"""Broadcast readers (the gateway's, the detector's rules reader): plain consumers with no
group, each reading every partition of a topic from its own positions."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka import errors as kafka_errors
from aiokafka.structs import TopicPartition

from common.bus.contract import BusUnavailable, Delivery
from common.bus.kafka.clients import start_consumer, stop_consumer, translated
from common.bus.kafka.config import KafkaConfig
from common.bus.kafka.tansu import log_bounds, past_the_end
from common.bus.kafka.topics import Topics


class KafkaBroadcastReader:
    """Every partition of one topic from this reader's own positions (no group).

    ``backlog(N)`` seeks each partition to ``end − N`` and reads up to the end offsets taken
    at that moment, so it returns exactly the newest N (oldest first, merged by timestamp
    across partitions); ``read`` continues after them. A reader holds a consumer only while
    it reads: ``backlog`` keeps just the positions, so a reader used for its backlog alone
    (the detector's start, an admin request) holds no connection afterwards. A topic that
    does not exist yet is waited for, not created (its writers know how it is kept), and
    read from its beginning once it appears. Offsets out of range (a log that was trimmed,
    or a broker that lost it) restart from the beginning of what is there.
    """

    def __init__(self, config: KafkaConfig, topics: Topics, stream: str,
                 open_readers: list[KafkaBroadcastReader]) -> None:
        self._config = config
        self._topics = topics
        self._stream = stream
        # The transport's list of readers holding a consumer, which it closes on close.
        self._open_readers = open_readers
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self._partitions: list[TopicPartition] = []
        # Where reading continues while no consumer is open; None: at the end of the log.
        self._positions: dict[TopicPartition, int] | None = None
        self._carry: list[Delivery] = []
        self._timeout_s = config.timeout_s

    async def _partition_count(self) -> int:
        counts = await self._topics.ensure([self._stream], create=False)
        return counts[self._stream]

    async def _open(self, partitions: int) -> AIOKafkaConsumer:
        """The consumer, on every partition, positioned where this reader left off."""
        consumer = self._consumer
        if consumer is None:
            config = self._config
            consumer = AIOKafkaConsumer(
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=config.kafka.fetch_max_wait_ms,
                request_timeout_ms=config.request_timeout_ms,
                **config.client_options(),
            )
            await start_consumer(consumer, "starting a reader", self._timeout_s)
            self._consumer = consumer
            self._open_readers.append(self)
            self._partitions = []
        if len(self._partitions) != partitions:
            await self._assign(consumer, partitions)
        return consumer

    async def _assign(self, consumer: AIOKafkaConsumer, partitions: int) -> None:
        """(Re)assign every partition, keeping the positions of those already read; a
        partition that appeared later is all new, so it is read from its beginning."""
        positions = dict(self._positions or {})
        for tp in self._partitions:
            with suppress(kafka_errors.KafkaError, AssertionError):
                positions[tp] = await consumer.position(tp)
        self._partitions = [TopicPartition(self._stream, p) for p in range(partitions)]
        consumer.assign(self._partitions)
        async with translated("positioning a reader", self._timeout_s * 2):
            for tp in self._partitions:
                # Let the reset that assign() started finish, or it could undo a seek.
                await consumer.position(tp)
            if self._positions is None and not positions:  # never read: from the end
                _, end = await log_bounds(consumer, self._partitions, self._timeout_s)
                positions = end
            for tp in self._partitions:
                if tp in positions:
                    consumer.seek(tp, positions[tp])
                else:
                    await consumer.seek_to_beginning(tp)
        self._positions = None

    async def _release(self) -> None:
        """Close the consumer, keeping where reading continues."""
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        with suppress(ValueError):
            self._open_readers.remove(self)
        positions: dict[TopicPartition, int] = {}
        for tp in self._partitions:
            with suppress(kafka_errors.KafkaError, AssertionError):
                positions[tp] = await consumer.position(tp)
        self._positions = positions
        await stop_consumer(consumer, self._timeout_s)

    async def close(self) -> None:
        """Close the consumer (a later read opens one again, from where this one was)."""
        async with self._lock:
            await self._release()

    async def backlog(self, count: int) -> list[Delivery]:
        async with self._lock:
            partitions = await self._partition_count()
            if not partitions:  # no topic yet: whatever it will hold is new
                self._positions = {}
                return []
            consumer = await self._open(partitions)
            tps = self._partitions
            newest: list[Delivery] = []
            carry: list[Delivery] = []
            async with translated("reading the backlog", self._timeout_s * 3):
                begin, end = await log_bounds(consumer, tps, self._timeout_s)
                start = {tp: max(begin[tp], end[tp] - max(count, 0)) for tp in tps}
                for tp in tps:
                    consumer.seek(tp, start[tp])
                waiting = {tp for tp in tps if end[tp] > start[tp]}
                while waiting:
                    batches = await consumer.getmany(*waiting,
                                                     timeout_ms=int(self._timeout_s * 1000))
                    if not batches:
                        raise BusUnavailable(f"kafka: no backlog of {self._stream} arrived")
                    for tp, records in batches.items():
                        for record in records:
                            target = newest if record.offset < end[tp] else carry
                            target.append(_broadcast_delivery(tp, record))
                        if await consumer.position(tp) >= end[tp]:
                            waiting.discard(tp)
                for tp in tps:
                    consumer.seek(tp, end[tp])
            await self._release()
        newest.sort(key=_arrival_order)
        self._carry = sorted(carry, key=_arrival_order)
        return newest[-count:] if count > 0 else []

    async def read(self, count: int, block_ms: int) -> list[Delivery]:
        if self._carry:
            taken, self._carry = self._carry[:count], self._carry[count:]
            return taken
        async with self._lock:
            partitions = await self._partition_count()
            if not partitions:
                if self._positions is None:
                    self._positions = {}  # the topic will be new: read all of it
                await asyncio.sleep(block_ms / 1000)
                return []
            consumer = await self._open(partitions)
            async with translated("reading", block_ms / 1000 + self._timeout_s):
                batches = await consumer.getmany(timeout_ms=block_ms, max_records=count)
                if not batches:
                    await past_the_end(consumer, self._partitions)
        deliveries = [_broadcast_delivery(tp, record)
                      for tp, records in batches.items() for record in records]
        deliveries.sort(key=_arrival_order)
        return deliveries


def _broadcast_delivery(tp: TopicPartition, record: Any) -> Delivery:
    return Delivery(tp.topic, f"{tp.partition}:{record.offset}", record.value or b"",
                    int(record.timestamp))


def _arrival_order(delivery: Delivery) -> tuple[int, int, int]:
    partition, offset = delivery.position.split(":")
    return delivery.timestamp_ms, int(partition), int(offset)
