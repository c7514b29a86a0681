"""What a group member keeps per assigned partition: where replay ends, what it handed
out, what is still unacknowledged, and so which offset to commit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from aiokafka.structs import TopicPartition

from common.bus.contract import Delivery


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
