"""The rules stream's one answer to every edge: the pure decisions, then ``load`` and
``follow`` on fakeredis, a real Redis server and a real Kafka-protocol broker (tansu)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator

import fakeredis
import msgspec
import pytest

from common import rules_stream
from common.bus import BroadcastReader, BusUnavailable, Delivery, Record, Transport
from common.bus.redis_streams import RedisConfig, RedisTransport
from common.partitioning import RULES_STREAM
from common.rule_model import Rule
from common.rules_stream import EntryError, RulesView, judge, read_entry
from common.schemas import RuleSet, encode_rule_set
from tests.support.bus import kafka_transport
from tests.support.servers import KafkaBroker, RedisServer


def rule_set(version: int, name: str = "default", *, window_s: int = 60) -> RuleSet:
    return RuleSet(rules=[Rule(name=name, window_s=window_s)], updated_at_ms=1,
                   updated_by=f"writer of {name}", version=version, change_id=name)


def payload(version: int, name: str = "default") -> bytes:
    return encode_rule_set(rule_set(version, name))


def delivery(data: bytes, position: int) -> Delivery:
    return Delivery(RULES_STREAM, f"{position}-0", data, 1)


TORN = payload(5, "torn")[:-7]
NOT_MSGPACK = b"\xc1 not msgpack"
# msgpack, but a rule set this version does not accept (an unknown field of a rule).
UNKNOWN_FIELD = msgspec.msgpack.encode({
    "rules": [{"name": "x", "window_s": 60, "threshold_up_pct": 2.0, "sparkle": True}],
    "updated_at_ms": 1, "updated_by": "future", "version": 9})
NO_RULES = msgspec.msgpack.encode({"rules": [], "updated_at_ms": 1, "updated_by": "x",
                                   "version": 9})
UNVERSIONED = msgspec.msgpack.encode({"rules": [{"name": "old"}], "updated_at_ms": 1,
                                      "updated_by": "detector of old"})


def names(rule_sets: list[RuleSet]) -> list[str]:
    return [r.rules[0].name for r in rule_sets]


# --- pure --------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "kind"), [
    (payload(0, "zero"), "unversioned"),
    (payload(-1, "negative"), "unversioned"),
    (UNVERSIONED, "unversioned"),
    (TORN, "undecodable"),
    (NOT_MSGPACK, "undecodable"),
    (b"", "undecodable"),
    (UNKNOWN_FIELD, "invalid"),
    (NO_RULES, "invalid"),
])
def test_an_entry_no_reader_may_apply_is_refused_by_kind(data: bytes, kind: str) -> None:
    with pytest.raises(EntryError) as refused:
        read_entry(data)
    assert refused.value.kind == kind


def test_a_valid_entry_reads_back() -> None:
    assert read_entry(payload(1, "one")) == rule_set(1, "one")


def test_the_first_entry_of_a_version_wins_and_later_same_or_lower_ones_are_ignored() -> None:
    entries = [payload(1, "a"), payload(2, "b"), payload(2, "c"), payload(1, "d"), TORN,
               payload(0, "zero"), payload(4, "after-a-gap"), payload(3, "stale"),
               payload(4, "also-four")]
    judged = judge(delivery(data, i) for i, data in enumerate(entries))
    assert [(row.entry.rules[0].name if row.entry else None, row.applied) for row in judged] == [
        ("a", True), ("b", True), ("c", False), ("d", False), (None, False), (None, False),
        ("after-a-gap", True), ("stale", False), ("also-four", False)]
    assert [row.error.kind for row in judged if row.error] == ["undecodable", "unversioned"]
    winner = rules_stream.in_force(judged)
    assert winner is not None
    assert winner.rules[0].name == "after-a-gap"
    # A writer reading back: "b" won version 2, "c" lost it to "b", "zz" is not there yet.
    assert rules_stream.in_force_after(judged, "b") == rule_set(2, "b")
    assert rules_stream.in_force_after(judged, "c") == rule_set(2, "b")
    assert rules_stream.in_force_after(judged, "also-four") == rule_set(4, "after-a-gap")
    assert rules_stream.in_force_after(judged, "zz") is None


def test_judging_from_a_rule_set_in_force() -> None:
    judged = judge([delivery(payload(3, "three"), 1), delivery(payload(4, "four"), 2)],
                   current=rule_set(3, "held"))
    assert [row.applied for row in judged] == [False, True]


def test_a_view_counts_and_logs_what_it_skips_and_never_raises(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="common.rules_stream")
    view = RulesView()
    applied = view.take(delivery(data, i) for i, data in enumerate(
        [TORN, payload(1, "one"), NOT_MSGPACK, UNKNOWN_FIELD, payload(0, "zero"),
         payload(1, "two"), payload(3, "three")]))
    assert names(applied) == ["one", "three"]
    assert view.current == rule_set(3, "three")
    assert view.skipped == {"undecodable": 2, "invalid": 1, "unversioned": 1}
    messages = [r.getMessage() for r in caplog.records]
    assert sum("skipped" in m for m in messages) == 4
    assert any("version 1, by writer of two) ignored: version 1 is in force" in m
               for m in messages)
    assert any("version 3 follows version 1" in m for m in messages)


def test_the_next_version_is_one_above_the_one_in_force_with_a_fresh_id() -> None:
    first = rules_stream.next_version(None, [Rule()], by="me", change="seed")
    assert (first.version, first.updated_by, first.change) == (1, "me", "seed")
    second = rules_stream.next_version(rule_set(7), [Rule()], by="me", change="x")
    assert second.version == 8
    assert len({first.change_id, second.change_id}) == 2


# --- fakeredis -----------------------------------------------------------------------------


@pytest.fixture
async def fake_bus() -> AsyncIterator[RedisTransport]:
    bus = RedisTransport(RedisConfig("redis://fake"), client=fakeredis.FakeAsyncRedis())
    await bus.start()
    yield bus
    await bus.close()


async def put(bus: Transport, *entries: bytes) -> None:
    await bus.publish([Record(RULES_STREAM, "rules", data) for data in entries])


async def next_of(changes: AsyncGenerator[RuleSet, None], timeout_s: float = 5) -> RuleSet:
    return await asyncio.wait_for(anext(changes), timeout_s)


async def test_load_holds_the_winner_of_the_kept_entries(fake_bus: RedisTransport) -> None:
    reader = fake_bus.broadcast_reader(RULES_STREAM)
    empty = await rules_stream.load(reader)
    assert (empty.current, empty.loaded) == (None, True)
    await put(fake_bus, payload(0, "zero"), TORN)
    assert (await rules_stream.load(reader)).current is None  # nothing valid: seed it
    await rules_stream.write(fake_bus, rule_set(1, "seed-a"))
    await rules_stream.write(fake_bus, rule_set(1, "seed-b"))  # a second detector seeding
    view = await rules_stream.load(reader)
    assert view.current == rule_set(1, "seed-a")
    assert view.skipped == {"unversioned": 1, "undecodable": 1}
    await reader.close()


async def test_follow_yields_each_rule_set_that_comes_into_force(
        fake_bus: RedisTransport) -> None:
    await put(fake_bus, payload(1, "one"), payload(2, "two"))
    reader = fake_bus.broadcast_reader(RULES_STREAM)
    view = await rules_stream.load(reader)
    stopping = asyncio.Event()
    changes = rules_stream.follow(reader, view, block_ms=20, stopping=stopping)
    async with contextlib.aclosing(changes):
        await put(fake_bus, payload(2, "late-two"), TORN, payload(0, "zero"),
                  payload(1, "stale"), payload(5, "five"))
        assert (await next_of(changes)).rules[0].name == "five"
        await put(fake_bus, payload(5, "also-five"), payload(6, "six"))
        assert (await next_of(changes)).rules[0].name == "six"
        assert view.current == rule_set(6, "six")
        stopping.set()
        with pytest.raises(StopAsyncIteration):
            await next_of(changes, 1)
    assert view.skipped == {"undecodable": 1, "unversioned": 1}


async def test_follow_of_an_unloaded_view_starts_with_the_kept_winner(
        fake_bus: RedisTransport) -> None:
    await put(fake_bus, payload(1, "one"), payload(2, "two"), payload(2, "loser"))
    view = RulesView()
    changes = rules_stream.follow(fake_bus.broadcast_reader(RULES_STREAM), view, block_ms=20)
    async with contextlib.aclosing(changes):
        assert (await next_of(changes)).rules[0].name == "two"
        await put(fake_bus, payload(3, "three"))
        assert (await next_of(changes)).rules[0].name == "three"


class FlakyReader:
    """The bus goes away for a few reads, as it does when Redis restarts."""

    def __init__(self, inner: BroadcastReader, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    async def backlog(self, count: int) -> list[Delivery]:
        return await self.inner.backlog(count)

    async def read(self, count: int, block_ms: int) -> list[Delivery]:
        if self.failures:
            self.failures -= 1
            raise BusUnavailable("redis: connection refused")
        return await self.inner.read(count, block_ms)

    async def close(self) -> None:
        await self.inner.close()


async def test_follow_waits_out_a_bus_outage_and_stops_during_one(
        fake_bus: RedisTransport) -> None:
    reader = FlakyReader(fake_bus.broadcast_reader(RULES_STREAM), failures=3)
    view = await rules_stream.load(reader)
    stopping = asyncio.Event()
    changes = rules_stream.follow(reader, view, block_ms=20, stopping=stopping)
    async with contextlib.aclosing(changes):
        await put(fake_bus, payload(1, "one"))
        assert (await next_of(changes)).rules[0].name == "one"
        assert reader.failures == 0
        reader.failures = 1_000
        pending = asyncio.ensure_future(next_of(changes))
        await asyncio.sleep(0.3)
        stopping.set()  # during the outage's backoff: ends without waiting it out
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(pending, 1)


async def test_confirm_tells_a_writer_whether_it_won_its_version(
        fake_bus: RedisTransport) -> None:
    await rules_stream.write(fake_bus, rule_set(1, "first"))
    await rules_stream.write(fake_bus, rule_set(1, "second"))
    assert await rules_stream.confirm(fake_bus, "first", 1) == rule_set(1, "first")
    assert await rules_stream.confirm(fake_bus, "second", 1) == rule_set(1, "first")
    with pytest.raises(TimeoutError):
        await rules_stream.confirm(fake_bus, "never-written", 0.2)


# --- real servers --------------------------------------------------------------------------


async def two_writers_one_version(bus: Transport, other: Transport) -> None:
    """Two writers of version 2 at once, a reader that follows and one that starts after:
    all three hold the first entry of version 2 on the stream."""
    await rules_stream.write(bus, rule_set(1, "seed"))
    follower = bus.broadcast_reader(RULES_STREAM)
    view = await rules_stream.load(follower)
    changes = rules_stream.follow(follower, view, block_ms=50)
    try:
        async with contextlib.aclosing(changes):
            await asyncio.gather(rules_stream.write(bus, rule_set(2, "left", window_s=30)),
                                 rules_stream.write(other, rule_set(2, "right", window_s=30)))
            followed = await next_of(changes, 10)
            judged = await rules_stream.kept(bus)
            first_of_two = next(row.entry for row in judged
                                if row.entry is not None and row.entry.version == 2)
            assert followed == first_of_two
            assert await rules_stream.confirm(other, "left", 5) == first_of_two
            assert await rules_stream.confirm(other, "right", 5) == first_of_two
            late = other.broadcast_reader(RULES_STREAM)
            try:
                assert (await rules_stream.load(late)).current == first_of_two
            finally:
                await late.close()
            await put(bus, TORN)
            await rules_stream.write(other, rule_set(3, "three"))
            assert (await next_of(changes, 10)).rules[0].name == "three"
            assert view.skipped == {"undecodable": 1}
    finally:
        await follower.close()


async def race_two_writers(one: Transport, two: Transport) -> None:
    for bus in (one, two):
        await bus.start()
    try:
        await two_writers_one_version(one, two)
    finally:
        await one.close()
        await two.close()


async def test_two_writers_of_one_version_on_a_real_redis(redis_server: RedisServer) -> None:
    config = RedisConfig(redis_server.url, timeout_s=3)
    await race_two_writers(*(RedisTransport(config) for _ in range(2)))


async def test_two_writers_of_one_version_on_kafka(kafka_broker: KafkaBroker) -> None:
    await race_two_writers(*(kafka_transport(kafka_broker) for _ in range(2)))
