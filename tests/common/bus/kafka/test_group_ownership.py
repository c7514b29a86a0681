"""What a Kafka group member owns: its assignment, and nothing once it stood still past the
session timeout (a SIGSTOP: the group gave its partitions away meanwhile)."""

from __future__ import annotations

import asyncio
import time

import pytest

from common.bus import GroupConsumer, OwnershipLost, Record, Sharing
from common.bus.kafka.transport import KafkaTransport
from tests.support.bus import drain, records
from tests.support.servers import KAFKA_TEST_ENV

STREAMS = ["ticks.0", "ticks.1"]
SESSION_S = int(KAFKA_TEST_ENV["KAFKA_SESSION_TIMEOUT_MS"]) / 1000
ALERT = [Record("alerts", "k", b"a")]


async def owned_settles(consumer: GroupConsumer, want: int, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while len(consumer.owned()) != want:
        assert time.monotonic() < deadline, f"owns {sorted(consumer.owned())}"
        await consumer.fetch(100, 100)


async def test_a_member_owns_the_topics_it_is_assigned_and_publishes_only_for_them(
        bus: KafkaTransport) -> None:
    await bus.publish(records("ticks.0", 2) + records("ticks.1", 2))
    first = bus.group_consumer("g", "first", STREAMS, rebuild_s=60, sharing=Sharing(1.5))
    assert first.owned() == frozenset()  # nothing before the group answered
    await owned_settles(first, 2)
    second = bus.group_consumer("g", "second", STREAMS, rebuild_s=60)
    await asyncio.gather(owned_settles(first, 1), owned_settles(second, 1))
    assert first.owned() | second.owned() == set(STREAMS)
    [mine] = first.owned()
    [theirs] = second.owned()
    await first.publish(ALERT, sources=[mine])
    with pytest.raises(OwnershipLost) as lost:
        await first.publish(ALERT, sources=[mine, theirs])
    assert lost.value.streams == {theirs}
    alerts = await bus.broadcast_reader("alerts").backlog(10)
    assert len(alerts) == 1, "a refused publish wrote something"


async def test_a_member_that_stood_still_past_the_session_owns_nothing_then_rejoins(
        bus: KafkaTransport) -> None:
    await bus.publish(records("ticks.0", 3))
    member = bus.group_consumer("g", "paused", ["ticks.0"], rebuild_s=60)
    in_hand = await drain(member, 3)
    assert member.owned() == {"ticks.0"}
    time.sleep(SESSION_S + 0.5)  # the point: the event loop stands still, as under SIGSTOP
    with pytest.raises(OwnershipLost):
        await member.publish(ALERT, sources=["ticks.0"])
    assert await member.fetch(100, 50) == []
    assert member.owned() == frozenset()
    await member.ack(in_hand)  # not its own any more: commits nothing
    # Back in the group, it starts over from the committed offset: all three again.
    again = await drain(member, 3)
    assert member.owned() == {"ticks.0"}
    assert [(d.payload, d.replay) for d in again] == [(b"m0", False), (b"m1", False),
                                                      (b"m2", False)]
    await member.publish(ALERT, sources=["ticks.0"])
