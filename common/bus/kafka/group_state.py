"""What a group member keeps per assigned partition: where replay ends, what it handed
out, what is still unacknowledged, and so which offset to commit and how far behind it is."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Literal

from aiokafka import AIOKafkaConsumer
from aiokafka import errors as kafka_errors
from aiokafka.structs import TopicPartition

from common.bus.contract import BusUnavailable, ConsumerLag, Delivery, TransportConfigError
from common.bus.kafka.clients import partition_name, translated
from common.bus.kafka.tansu import fetched_end

log = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class KafkaDelivery(Delivery):
    """A delivery that remembers where it came from, for the commit."""

    partition: int = 0
    offset: int = 0
    epoch: int = 0

    @property
    def topic_partition(self) -> TopicPartition:
        return TopicPartition(self.stream, self.partition)


Phase = Literal["probe", "replay", "live"]


@dataclass(slots=True)
class PartitionState:
    """What one assigned partition owes: replay up to the committed offset, then commits."""

    epoch: int
    committed: int | None  # the group's committed offset (None: never committed)
    phase: Phase = "live"
    replay_until: int = 0  # records below this offset were processed by an earlier run
    replay_from_ms: int = 0  # replayed records older than this are not needed
    next_offset: int = 0  # one past the last live record handed out
    unacked: set[int] = field(default_factory=set)

    def commit_target(self) -> int | None:
        """Offset to commit: the oldest delivered-but-unacknowledged one, else one past the
        newest handed out; None when that would not move the committed offset forward."""
        target = min(self.unacked) if self.unacked else self.next_offset
        if target <= (self.committed or 0):
            return None
        return target


def commit_targets(parts: dict[TopicPartition, PartitionState]) -> dict[TopicPartition, int]:
    """The offsets to commit for these partitions: those that would move forward."""
    targets = {}
    for tp, state in parts.items():
        target = state.commit_target()
        if target is not None:
            targets[tp] = target
    return targets


async def group_lag(consumer: AIOKafkaConsumer, streams: Sequence[str],
                    parts: dict[TopicPartition, PartitionState]) -> dict[str, ConsumerLag]:
    """Per stream: end offsets minus what the group has taken (behind), and what was handed
    out but not acknowledged (pending; known for the member's own partitions ``parts``)."""
    lags = {stream: ConsumerLag(0, 0) for stream in streams}
    tps = [TopicPartition(stream, p) for stream in streams
           for p in sorted(consumer.partitions_for_topic(stream) or ())]
    if not tps:
        return lags
    ends = await consumer.end_offsets(tps)
    for tp in tps:
        state = parts.get(tp)
        if state is not None:
            ends[tp] = fetched_end(consumer, tp, ends[tp])
            done = max(state.next_offset, state.committed or 0, state.replay_until)
            pending = len(state.unacked)
        else:  # another member's partition: what the group committed
            done, pending = await consumer.committed(tp) or 0, 0
        previous = lags[tp.topic]
        lags[tp.topic] = ConsumerLag(previous.behind + max(0, ends[tp] - done),
                                     previous.pending + pending)
    return lags


async def set_up(consumer: AIOKafkaConsumer, tp: TopicPartition, epoch: int, *,
                 rebuild: bool, timeout_s: float) -> PartitionState:
    """A partition just assigned: live from its committed offset, or (``rebuild``, and
    something was committed) first a probe of the record before it, which dates the
    rebuild (``KafkaGroupConsumer._probe``)."""
    try:
        async with translated("reading the committed offset", timeout_s):
            committed = await consumer.committed(tp)
    except (BusUnavailable, TransportConfigError) as exc:
        log.warning("no committed offset for %s (%s): reading it without a rebuild",
                    partition_name(tp), exc)
        committed = None
    state = PartitionState(epoch, committed, next_offset=committed or 0)
    if not committed or not rebuild:
        return state
    state.phase = "probe"
    state.replay_until = committed
    with suppress(kafka_errors.KafkaError):
        # The fetcher positions new partitions itself; let it finish first, or it could undo
        # the seek.
        async with asyncio.timeout(timeout_s):
            await consumer.position(tp)
    consumer.seek(tp, committed - 1)
    return state
