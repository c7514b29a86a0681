"""Broadcast readers hold a consumer only while they read."""

from __future__ import annotations

from common.bus.kafka.transport import KafkaTransport
from tests.support.bus import records


async def test_a_reader_holds_a_consumer_only_while_it_reads(bus: KafkaTransport) -> None:
    await bus.publish(records("alerts", 3))
    readers = [bus.broadcast_reader("alerts") for _ in range(5)]
    for reader in readers:
        assert [d.payload for d in await reader.backlog(2)] == [b"m1", b"m2"]
    assert bus._readers == []  # five backlogs (a detector's start, admin requests): no consumer
    await bus.publish(records("alerts", 1, start=3))
    assert [d.payload for d in await readers[0].read(10, 500)] == [b"m3"]
    assert bus._readers == [readers[0]]
    await readers[0].close()
    assert bus._readers == []
