"""Competing consumption on Kafka (the detector): a consumer-group member with manual
commits and the contract's replay → pending → new order (see ``KafkaGroupConsumer``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from contextlib import suppress
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka import errors as kafka_errors
from aiokafka.structs import TopicPartition

from common.bus.contract import (
    BusUnavailable,
    ConsumerLag,
    Delivery,
    OwnershipLost,
    Record,
    TransportConfigError,
)
from common.bus.kafka.clients import (
    partition_name,
    partition_names,
    start_consumer,
    stop_consumer,
    translated,
)
from common.bus.kafka.config import KafkaConfig, group_member
from common.bus.kafka.group_state import (
    KafkaDelivery,
    PartitionState,
    commit_targets,
    group_lag,
    set_up,
)
from common.bus.kafka.liveness import StallWatch
from common.bus.kafka.tansu import offset_for_time, past_the_end
from common.bus.kafka.topics import Topics

log = logging.getLogger(__name__)

# A commit normally takes a millisecond; one that hangs is retried by the caller instead.
COMMIT_TIMEOUT_S: Final = 5.0
# The group moved on: a commit for it is not ours to make any more.
_GROUP_MOVED: Final = (kafka_errors.CommitFailedError, kafka_errors.IllegalStateError)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: KafkaGroupConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._owner.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self._owner.assigned(set(assigned))


class KafkaGroupConsumer:
    """Group member with the contract's replay → pending → new order.

    Commit: ``ack`` commits exactly ``offset + 1`` of the newest acknowledged record per
    partition (the oldest unacknowledged offset if the caller acknowledged out of order),
    never moving a committed offset back; replayed deliveries are never committed.

    Assignment: for each partition with a committed offset C the windows are rebuilt. The
    record at C − 1 (the last one processed) gives the time t; the consumer seeks to the
    offset for time ``t − rebuild_s`` and delivers ``[that, C)`` flagged ``replay``, then
    everything from C live (records delivered before but never committed included). t is
    ``now`` for a detector that was just restarted; taking it from the log also rebuilds
    the right window after a long downtime, as the Redis transport does. A broker that
    answers ``offsets_for_times`` with timestamp −1 or no offset (``tansu``: see
    ``tansu.offset_for_time``) is read from the beginning instead, skipping records older
    than wanted by their own timestamps.
    Partitions without a rebuild are paused meanwhile, so replay comes first.

    Revocation: the batch in hand is waited for (bounded) and what was acknowledged is
    committed before the partitions go; acknowledgements of deliveries from partitions
    this member no longer owns are no-ops (the new owner gets them again).

    Ownership (``owned``, ``publish``): the group always divides its topics among the
    members (a ``Sharing`` asked for changes nothing here). A member owns the topics of its
    assigned partitions, and none once it stood still for longer than the session timeout
    minus a margin (``StallWatch``: the coordinator has given them away); it then rejoins
    the group and starts again from the committed offsets. ``publish`` checks this just
    before producing; a produce already under way when the process stops is not fenced
    (the alert ids are deterministic: the readers drop the second copy).
    """

    def __init__(self, config: KafkaConfig, topics: Topics, group: str, consumer: str,
                 streams: Sequence[str], *, rebuild_s: float,
                 publish: Callable[[Sequence[Record]], Awaitable[None]]) -> None:
        self._config = config
        self._publish = publish
        self._topics = topics
        self._group = group
        self._name = consumer
        self._streams = list(dict.fromkeys(streams))
        self._rebuild_ms = int(rebuild_s * 1000)
        self._consumer: AIOKafkaConsumer | None = None
        self._start_lock = asyncio.Lock()
        self._epoch = 0
        self._parts: dict[TopicPartition, PartitionState] = {}
        self._rebuilding: set[TopicPartition] = set()
        self._rebuild_progress = 0.0
        self._assigned = asyncio.Event()
        self._acked = asyncio.Condition()
        self._timeout_s = config.timeout_s
        # The batch in hand must be finished within the rebalance (= session) timeout.
        self._revoke_wait_s = min(config.timeout_s, config.kafka.session_timeout_ms / 2000)
        session_ms, heartbeat_ms = (config.kafka.session_timeout_ms,
                                    config.kafka.heartbeat_interval_ms)
        self._watch = StallWatch((session_ms - max(heartbeat_ms, session_ms / 4)) / 1000)
        self._owned: frozenset[str] = frozenset()

    async def _ready(self) -> AIOKafkaConsumer:
        async with self._start_lock:
            if self._consumer is not None:
                return self._consumer
            await self._topics.ensure(self._streams)
            consumer = group_member(self._config, self._group, self._name)
            await start_consumer(consumer, "joining the consumer group", self._timeout_s)
            # Before subscribing: the assignment callback works on self._consumer.
            self._consumer = consumer
            consumer.subscribe(self._streams, listener=_Listener(self))
            self._watch.start()
            return consumer

    async def close(self) -> None:
        """Commit what was acknowledged and leave the group (its partitions move now)."""
        consumer, self._consumer = self._consumer, None
        self._watch.stop()
        self._owned = frozenset()
        if consumer is None:
            return
        offsets = commit_targets(self._parts)
        if offsets:
            with suppress(BusUnavailable, TransportConfigError, *_GROUP_MOVED):
                async with translated("committing", COMMIT_TIMEOUT_S):
                    await consumer.commit(offsets)
        await stop_consumer(consumer, self._timeout_s)

    # -- rebalance ---------------------------------------------------------------------------

    async def revoked(self, revoked: set[TopicPartition]) -> None:
        """Finish the batch in hand, commit what was acknowledged, forget the partitions."""
        mine = {tp: self._parts[tp] for tp in revoked if tp in self._parts}
        if any(state.unacked for state in mine.values()):
            log.info("partitions %s revoked: waiting up to %.1fs for the batch in hand",
                     partition_names(mine), self._revoke_wait_s)
            with suppress(TimeoutError):
                async with self._acked:
                    await asyncio.wait_for(self._acked.wait_for(
                        lambda: not any(state.unacked for state in mine.values())),
                        self._revoke_wait_s)
        offsets = commit_targets(mine)
        consumer = self._consumer
        if offsets and consumer is not None:
            try:
                async with translated("committing on revocation", COMMIT_TIMEOUT_S):
                    await consumer.commit(offsets)
            except (BusUnavailable, TransportConfigError, *_GROUP_MOVED) as exc:
                log.warning("could not commit revoked partitions (they will be delivered "
                            "again to their next owner): %s", exc)
        self._epoch += 1
        for tp in revoked:
            self._parts.pop(tp, None)
            self._rebuilding.discard(tp)

    async def assigned(self, assigned: set[TopicPartition]) -> None:
        """Set up each new partition: replay up to its committed offset, or start live.

        The fetcher reads new partitions at once, and a ``fetch`` may run while this waits
        for the committed offsets: the partitions stay paused, and unknown to ``fetch``,
        until each is set up, or their first records would reach the caller live, before
        the windows were rebuilt (and the replay after them could no longer count)."""
        consumer = self._consumer
        self._forget_partitions()
        if consumer is None:
            return
        consumer.pause(*assigned)
        parts: dict[TopicPartition, PartitionState] = {}
        rebuilding: set[TopicPartition] = set()
        for tp in sorted(assigned):
            parts[tp] = state = await set_up(consumer, tp, self._epoch,
                                             rebuild=self._rebuild_ms > 0,
                                             timeout_s=self._timeout_s)
            if state.phase == "probe":
                rebuilding.add(tp)
        self._parts, self._rebuilding = parts, rebuilding
        self._pause_for_rebuild(consumer)
        log.info("assigned %s%s", partition_names(self._parts) or "no partitions",
                 f"; rebuilding {partition_names(self._rebuilding)}" if self._rebuilding else "")
        self._assigned.set()

    def _pause_for_rebuild(self, consumer: AIOKafkaConsumer) -> None:
        if self._rebuilding:
            self._rebuild_progress = time.monotonic()
            consumer.resume(*self._rebuilding)
            consumer.pause(*(tp for tp in self._parts if tp not in self._rebuilding))
        else:
            consumer.resume(*self._parts)

    # -- reading -----------------------------------------------------------------------------

    async def fetch(self, count: int, block_ms: int) -> list[Delivery]:
        consumer = await self._ready()
        if self._watch.stalled():
            self._lapse(consumer)
            return []
        try:
            return await self._fetch(consumer, count, block_ms)
        finally:
            self._owned = frozenset() if self._watch.stalled() else self._assigned_topics()

    def _lapse(self, consumer: AIOKafkaConsumer) -> None:
        """Stood still past the session: own nothing, and rejoin the group (its answer is
        the next assignment, with a rebuild of every partition in it)."""
        log.warning("this member stood still for longer than the session timeout: its "
                    "partitions %s may belong to another member now; rejoining the group",
                    partition_names(self._parts) or "(none)")
        self._forget_partitions()
        self._owned = frozenset()
        self._assigned.clear()
        consumer.unsubscribe()
        consumer.subscribe(self._streams, listener=_Listener(self))
        self._watch.reset()

    def _forget_partitions(self) -> None:
        """A new epoch with no partition: acknowledgements of older deliveries are no-ops."""
        self._epoch += 1
        self._parts.clear()
        self._rebuilding.clear()

    def _assigned_topics(self) -> frozenset[str]:
        return frozenset(tp.topic for tp in self._parts)

    async def _fetch(self, consumer: AIOKafkaConsumer, count: int, block_ms: int
                     ) -> list[Delivery]:
        await self._topics.ensure(self._streams)
        if not self._assigned.is_set():
            # The first join takes a rebalance; waiting for it keeps "replay first" true.
            with suppress(TimeoutError):
                await asyncio.wait_for(self._assigned.wait(),
                                       max(block_ms / 1000, self._timeout_s))
            if not self._assigned.is_set():
                return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block_ms / 1000
        while True:
            wait_s = deadline - loop.time()
            if self._rebuilding:
                # A rebuild in progress is not "nothing arrived": keep reading while it moves.
                stalled_at = self._rebuild_progress + self._timeout_s
                wait_s = max(wait_s, stalled_at - time.monotonic())
                if wait_s <= 0:
                    self._give_up_rebuild(consumer)
                    wait_s = 0
            async with translated("fetching", wait_s + self._timeout_s):
                batches = await consumer.getmany(timeout_ms=max(0, int(wait_s * 1000)),
                                                 max_records=count)
            deliveries = await self._deliveries(consumer, batches)
            if deliveries or wait_s <= 0:
                if not deliveries:
                    async with translated("checking positions", self._timeout_s):
                        gone = await past_the_end(consumer, list(self._parts))
                    for tp in gone:
                        self._parts[tp] = PartitionState(self._epoch, None)
                        if tp in self._rebuilding:
                            self._rebuild_done(consumer, tp, self._parts[tp])
                return deliveries

    async def _deliveries(self, consumer: AIOKafkaConsumer,
                          batches: dict[TopicPartition, list[Any]]) -> list[Delivery]:
        replayed: list[Delivery] = []
        live: list[Delivery] = []
        for tp, records in batches.items():
            state = self._parts.get(tp)
            if state is None:
                # Fetched as its assignment is being set up: leave it to the setup.
                with suppress(kafka_errors.IllegalStateError):
                    consumer.seek(tp, records[0].offset)
                continue
            if state.phase == "probe":
                records = await self._probe(consumer, tp, state, records)
            for record in records:
                if state.phase == "replay" and record.offset < state.replay_until:
                    self._rebuild_progress = time.monotonic()
                    if record.timestamp >= state.replay_from_ms:
                        replayed.append(self._delivery(tp, record, replay=True))
                    continue
                if state.phase != "live":
                    self._rebuild_done(consumer, tp, state)
                if record.offset < state.next_offset:
                    # The log went back (a broker that lost its data): follow it.
                    log.warning("%s went back from offset %d to %d (the broker lost its log?); "
                                "following it", partition_name(tp), state.next_offset,
                                record.offset)
                    state.committed = None
                    state.unacked.clear()
                state.next_offset = record.offset + 1
                state.unacked.add(record.offset)
                live.append(self._delivery(tp, record))
        for tp in list(self._rebuilding):
            state = self._parts[tp]
            if state.phase == "replay" and await consumer.position(tp) >= state.replay_until:
                self._rebuild_done(consumer, tp, state)
        return replayed + live

    async def _probe(self, consumer: AIOKafkaConsumer, tp: TopicPartition, state: PartitionState,
                     records: list[Any]) -> list[Any]:
        """The record before the committed offset dates the rebuild; seek to its start.

        Returns the records that are still to be handed out from this batch."""
        first = records[0]
        if first.offset >= state.replay_until:
            # The last processed record is gone (retention): nothing left to replay.
            self._rebuild_done(consumer, tp, state)
            return records
        self._rebuild_progress = time.monotonic()
        cutoff = first.timestamp - self._rebuild_ms
        try:
            async with translated("looking up offsets by time", self._timeout_s):
                start = await offset_for_time(consumer, tp, cutoff, first.offset)
        except BusUnavailable:
            consumer.seek(tp, state.replay_until - 1)  # probe again on the next fetch
            raise
        state.phase = "replay"
        state.replay_from_ms = cutoff
        consumer.seek(tp, start)
        return []

    def _rebuild_done(self, consumer: AIOKafkaConsumer, tp: TopicPartition,
                      state: PartitionState) -> None:
        state.phase = "live"
        self._rebuilding.discard(tp)
        if not self._rebuilding:
            consumer.resume(*self._parts)

    def _give_up_rebuild(self, consumer: AIOKafkaConsumer) -> None:
        log.warning("rebuild of %s made no progress for %.0fs; continuing without it",
                    partition_names(self._rebuilding), self._timeout_s)
        for tp in list(self._rebuilding):
            state = self._parts[tp]
            consumer.seek(tp, state.replay_until)
            self._rebuild_done(consumer, tp, state)

    def _delivery(self, tp: TopicPartition, record: Any, *, replay: bool = False
                  ) -> KafkaDelivery:
        return KafkaDelivery(tp.topic, f"{tp.partition}:{record.offset}", record.value or b"",
                             int(record.timestamp), replay=replay, partition=tp.partition,
                             offset=record.offset, epoch=self._epoch)

    # -- acknowledgement ---------------------------------------------------------------------

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        touched: dict[TopicPartition, PartitionState] = {}
        mine: list[Delivery] = []
        for delivery in deliveries:
            if delivery.replay or delivery.acked or not isinstance(delivery, KafkaDelivery):
                continue
            tp = delivery.topic_partition
            state = self._parts.get(tp)
            if state is None or state.epoch != delivery.epoch:
                delivery.acked = True  # not ours any more: the new owner gets it again
                continue
            state.unacked.discard(delivery.offset)
            touched[tp] = state
            mine.append(delivery)
        if not touched:
            return
        async with self._acked:
            self._acked.notify_all()
        offsets = commit_targets(touched)
        consumer = self._consumer
        if offsets and consumer is not None:
            try:
                async with translated("committing", min(self._timeout_s, COMMIT_TIMEOUT_S)):
                    await consumer.commit(offsets)
            except BusUnavailable as exc:
                if isinstance(exc.__cause__, _GROUP_MOVED):
                    # A rebalance is under way: the revocation commits what was acked.
                    log.info("commit deferred to the rebalance: %s", exc.__cause__)
                else:
                    # tansu after a restart answers "unknown topic" until it is re-created.
                    self._topics.suspect()
                    raise
            else:
                for tp, offset in offsets.items():
                    state = self._parts.get(tp)
                    if state is not None:
                        state.committed = max(offset, state.committed or 0)
        for delivery in mine:
            delivery.acked = True

    def owned(self) -> frozenset[str]:
        return self._owned

    async def publish(self, records: Sequence[Record], *, sources: Collection[str]) -> None:
        """Produce only while assigned every source and not stalled past the session."""
        lost = (frozenset(sources) if self._watch.stalled()
                else frozenset(sources) - self._assigned_topics())
        if lost:
            raise OwnershipLost(lost)
        await self._publish(records)

    async def lag(self) -> dict[str, ConsumerLag]:
        """Per stream: end offsets minus what the group has taken (behind), and what was
        handed out but not acknowledged (pending; known for this member's partitions)."""
        consumer = await self._ready()
        async with translated("reading consumer lag", self._timeout_s):
            return await group_lag(consumer, self._streams, self._parts)
