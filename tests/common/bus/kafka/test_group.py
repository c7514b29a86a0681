"""The group consumer: offset commits, rebalances, and rebuilds by offsets for a time."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.structs import OffsetAndTimestamp, TopicPartition

from common.bus import Delivery
from common.bus.kafka.group import KafkaGroupConsumer
from common.bus.kafka.group_state import KafkaDelivery, PartitionState
from common.bus.kafka.transport import KafkaTransport
from tests.support.bus import committed, crash, drain, records
from tests.support.servers import KafkaBroker

STREAMS = ["ticks.0", "ticks.1"]


async def test_ack_commits_exactly_offset_plus_one_and_never_goes_back(
        bus: KafkaTransport, kafka_broker: KafkaBroker) -> None:
    await bus.publish(records("ticks.0", 5))
    consumer = bus.group_consumer("g", "c", ["ticks.0"], rebuild_s=60)
    got = await drain(consumer, 5)
    assert [d.position for d in got] == [f"0:{i}" for i in range(5)]
    await consumer.ack(got[3:4])  # out of order: offset 0 is still in hand
    assert await committed(kafka_broker, "g", "ticks.0") is None
    await consumer.ack(got[:3])
    assert await committed(kafka_broker, "g", "ticks.0") == 4  # offset 4 is still in hand
    await consumer.ack(got[:3])  # again: nothing moves
    assert await committed(kafka_broker, "g", "ticks.0") == 4
    await consumer.ack(got)
    assert await committed(kafka_broker, "g", "ticks.0") == 5


async def test_replayed_deliveries_are_not_committed(
        bus: KafkaTransport, kafka_broker: KafkaBroker) -> None:
    await bus.publish(records("ticks.0", 4))
    first = bus.group_consumer("g", "c", ["ticks.0"], rebuild_s=60)
    await first.ack((await drain(first, 4))[:2])
    await crash(first)
    second = bus.group_consumer("g", "c", ["ticks.0"], rebuild_s=60)
    again = await drain(second, 4)
    replayed = [d for d in again if d.replay]
    assert [d.payload for d in replayed] == [b"m0", b"m1"]
    await second.ack(replayed)
    assert not any(d.acked for d in replayed)
    assert await committed(kafka_broker, "g", "ticks.0") == 2


async def test_revocation_waits_for_the_batch_in_hand_and_commits_it(
        bus: KafkaTransport, kafka_broker: KafkaBroker) -> None:
    await bus.publish(records("ticks.0", 5) + records("ticks.1", 5))
    first = bus.group_consumer("g", "first", STREAMS, rebuild_s=60)
    in_hand = await drain(first, 10)
    assert len(in_hand) == 10
    # A second member joins: the first is asked to give up a partition while it still
    # holds its batch; the rebalance waits until the batch is acknowledged.
    second = bus.group_consumer("g", "second", STREAMS, rebuild_s=60)
    joining = asyncio.create_task(drain(second, 0, block_ms=200))
    await asyncio.sleep(0.6)  # the first member's revocation has begun by now, and waits
    assert not joining.done()
    await first.ack(in_hand)
    taken = await joining
    assert all(d.replay for d in taken), "an acknowledged entry was delivered again"
    assert await committed(kafka_broker, "g", "ticks.0") == 5
    assert await committed(kafka_broker, "g", "ticks.1") == 5


async def test_an_unacknowledged_batch_goes_to_the_next_owner(
        bus: KafkaTransport, kafka_broker: KafkaBroker) -> None:
    await bus.publish(records("ticks.0", 3))
    first = bus.group_consumer("g", "first", ["ticks.0"], rebuild_s=60)
    in_hand = await drain(first, 3)
    await crash(first)
    heir = bus.group_consumer("g", "heir", ["ticks.0"], rebuild_s=60)
    again = await drain(heir, 3)
    assert [(d.payload, d.replay) for d in again] == [(b"m0", False), (b"m1", False),
                                                      (b"m2", False)]
    await first.ack(in_hand)  # too late, and not the first member's to commit any more
    assert not any(d.acked for d in again)
    await heir.ack(again)
    assert await committed(kafka_broker, "g", "ticks.0") == 3


class FakeConsumer:
    """Just what the rebuild probe asks of a consumer, answering like a given broker."""

    def __init__(self, answer: OffsetAndTimestamp | None, beginning: int = 0) -> None:
        self.answer = answer
        self.beginning = beginning
        self.seeks: list[int] = []

    async def offsets_for_times(self, query: dict[TopicPartition, int]
                                ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        return dict.fromkeys(query, self.answer)

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, self.beginning)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append(offset)

    def resume(self, *tps: TopicPartition) -> None:
        pass


class FakeRecord:
    def __init__(self, offset: int, timestamp: int) -> None:
        self.offset, self.timestamp = offset, timestamp


@pytest.mark.parametrize(("answer", "start"), [
    (OffsetAndTimestamp(40, 1_000_000 - 60_000), 40),  # real Kafka: the offset for the time
    (OffsetAndTimestamp(0, -1), 7),  # tansu: an offset with an unknown time → from the start
    (OffsetAndTimestamp(-1, -1), 7),
    (None, 99),  # nothing that recent: only the last record itself
])
async def test_the_rebuild_starts_at_the_offset_for_the_time_or_reads_forward(
        bus: KafkaTransport, answer: OffsetAndTimestamp | None, start: int) -> None:
    consumer = KafkaGroupConsumer(bus.config, bus.topics, "g", "c", ["ticks.0"], rebuild_s=60,
                                  publish=bus.publish)
    fake = FakeConsumer(answer, beginning=7)
    tp = TopicPartition("ticks.0", 0)
    state = PartitionState(1, 100, phase="probe", replay_until=100)
    left = await consumer._probe(fake, tp, state, [FakeRecord(99, 1_000_000)])
    assert left == []
    assert fake.seeks == [start]
    assert (state.phase, state.replay_from_ms) == ("replay", 1_000_000 - 60_000)


async def test_replay_skips_records_older_than_the_span_by_their_timestamps(
        bus: KafkaTransport) -> None:
    """tansu answers offsets_for_times with offset 0: the span is cut by timestamps."""
    await bus.publish(records("ticks.0", 3))
    await asyncio.sleep(0.5)
    await bus.publish(records("ticks.0", 3, start=3))
    first = bus.group_consumer("g", "c", ["ticks.0"], rebuild_s=0.3)
    await first.ack(await drain(first, 6))
    await crash(first)
    second = bus.group_consumer("g", "c", ["ticks.0"], rebuild_s=0.3)
    await bus.publish(records("ticks.0", 1, start=6))
    again = await drain(second, 4)
    assert [(d.payload, d.replay) for d in again] == [
        (b"m3", True), (b"m4", True), (b"m5", True), (b"m6", False)]


def _kafka_delivery(offset: int, epoch: int) -> KafkaDelivery:
    return KafkaDelivery("ticks.0", f"0:{offset}", b"", 0, partition=0, offset=offset,
                         epoch=epoch)


def test_commit_targets_follow_the_oldest_unacknowledged_offset() -> None:
    state = PartitionState(1, committed=10, next_offset=15, unacked={12, 14})
    assert state.commit_target() == 12
    state.unacked.clear()
    assert state.commit_target() == 15
    state.committed = 15
    assert state.commit_target() is None
    fresh = PartitionState(1, committed=None)
    assert fresh.commit_target() is None
    assert isinstance(_kafka_delivery(3, 1), Delivery)
