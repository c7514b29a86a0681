"""Where the local broker, ``tansu``, differs from Kafka, and how the transport copes.

``binance-alerter up --bus kafka`` and the tests run ``tansu`` (in memory). The transport
must be right on real Kafka and on it; what it does differently for tansu is collected
here, either as the code itself or as a pointer to the one line that handles it:

- **End offsets.** ListOffsets answers with the last *batch*'s base offset + 1, not the
  log's end: ``log_bounds`` confirms an end by fetching the last record (the high
  watermark of a fetch is exact), and ``fetched_end`` prefers a fetch's high watermark.
- **A log lost by a restart.** A fetch past the end of a log answers nothing, for ever,
  instead of OffsetOutOfRange: ``past_the_end`` compares positions with the high
  watermark and moves such partitions to their beginning. The broker also forgets every
  topic; the transport checks its topics every second and re-creates them
  (``topics.Topics.ensure``), and a commit or publish that hears "unknown topic" asks for
  that check at once (``Topics.suspect``).
- **Offsets by time.** ``offsets_for_times`` answers timestamp −1 (offset 0 or −1):
  ``offset_for_time`` then reads from the log's beginning, and the group consumer skips
  records older than the rebuild span by their own timestamps.
- **Fetch wait.** A fetch waiting for data is not woken when data arrives, only when
  ``KAFKA_FETCH_MAX_WAIT_MS`` expires (Kafka answers at once): ``up`` sets 10 ms
  (``tools/launcher.py``'s ``TANSU_ENV``), and so do the tests.
- **No idempotent producer.** Refused with a broker error: ``KAFKA_IDEMPOTENCE=false``
  (``up`` sets it; ``producer.Producer`` names the switch in its error).
- **Topics it is only asked about** are created with four partitions: the topic listing
  names no topic (``Topics.ensure``), and records go to the *configured* partition count
  whatever the topic has (``producer.StablePartitioner``).
- **Groups.** A new group's first join is held for half the session timeout, and the
  first member of a group cannot leave it (its generation is 0), so a restarted member
  waits for the old session to expire: ``up`` uses 3 s sessions.
"""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from common.bus.kafka.clients import partition_names

log = logging.getLogger(__name__)


def fetched_end(consumer: AIOKafkaConsumer, tp: TopicPartition, listed: int) -> int:
    """A partition's end: the last fetch's high watermark when it is past the listed one."""
    return max(listed, consumer.highwater(tp) or 0)


async def log_bounds(consumer: AIOKafkaConsumer, tps: list[TopicPartition], timeout_s: float
                     ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """First and next offset of each partition's log.

    The end offset is confirmed by fetching the last record (real Kafka agrees with itself;
    the extra fetch is one round trip). Leaves the consumer positioned anywhere: callers
    seek afterwards."""
    begin = await consumer.beginning_offsets(tps)
    end = await consumer.end_offsets(tps)
    for tp in tps:
        if end[tp] > begin[tp]:
            consumer.seek(tp, end[tp] - 1)
            await consumer.getmany(tp, timeout_ms=int(timeout_s * 1000), max_records=1)
            end[tp] = fetched_end(consumer, tp, end[tp])
    return begin, end


async def past_the_end(consumer: AIOKafkaConsumer, tps: list[TopicPartition]
                       ) -> list[TopicPartition]:
    """Partitions whose position is past the end of their log, moved to its beginning.

    That happens when the broker lost the log (an in-memory broker restarted). Kafka
    answers such a fetch with OffsetOutOfRange, which the consumer's reset policy
    handles; tansu answers with nothing, so the last fetch's high watermark is compared
    with the position instead."""
    gone = []
    for tp in tps:
        end = consumer.highwater(tp)
        if end is not None and await consumer.position(tp) > end:
            gone.append(tp)
    if gone:
        log.warning("%s: the broker's log ends before our position (it lost its data?); "
                    "reading it from its beginning", partition_names(gone))
        await consumer.seek_to_beginning(*gone)
    return gone


async def offset_for_time(consumer: AIOKafkaConsumer, tp: TopicPartition, time_ms: int,
                          last: int) -> int:
    """Where to read from to see every record since ``time_ms``, given the offset of a
    record known to be at or after it (``last``).

    Kafka answers the offset for the time; nothing that recent leaves ``last`` itself; an
    answer without a time or an offset (tansu's timestamp −1) means the beginning of the
    log, the caller then skipping older records by their timestamps."""
    found = (await consumer.offsets_for_times({tp: time_ms})).get(tp)
    if found is None:
        return last
    if found.offset is None or found.offset < 0 or found.timestamp < 0:
        return int((await consumer.beginning_offsets([tp]))[tp])
    return min(int(found.offset), last)
