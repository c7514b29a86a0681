"""Redis group consumers that divide their streams through leases (``Sharing``), on a real
server: balanced shares, joining, handing over, a stalled and a dead member, the fenced
publish, the takeover order and a name used twice. Leases of 1 s keep it short."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from common.bus import Delivery, OwnershipLost, Record, Sharing, TransportConfigError
from common.bus.redis_leases import LeaseKeys, quota, renew_interval, safety_margin
from common.bus.redis_shared import SharedRedisGroupConsumer
from common.bus.redis_streams import RedisConfig, RedisTransport
from tests.support.bus import records
from tests.support.servers import RedisServer

LEASE_S = 1.0
ROUND_S = renew_interval(LEASE_S)
KEYS = LeaseKeys("g")


def streams(count: int) -> list[str]:
    return [f"ticks.{p}" for p in range(count)]


@dataclass
class Member:
    """A group member in a process of its own: its own connection, a fetch loop."""

    transport: RedisTransport
    consumer: SharedRedisGroupConsumer
    got: list[Delivery] = field(default_factory=list)
    running: bool = True  # False: stalled (stops calling fetch)
    task: asyncio.Task[None] | None = None

    async def kill(self) -> None:
        """Gone at once: no more renewals, no hand-over."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.transport.client.aclose()

    async def loop(self) -> None:
        while True:
            if not self.running:
                await asyncio.sleep(0.02)
                continue
            batch = await self.consumer.fetch(100, 50)
            self.got.extend(batch)
            await self.consumer.ack(batch)


@pytest.fixture
async def members(redis_server: RedisServer) -> AsyncIterator[list[Member]]:
    made: list[Member] = []
    yield made
    for member in made:
        await member.transport.close()


def join(made: list[Member], server: RedisServer, name: str, count: int) -> Member:
    transport = RedisTransport(RedisConfig(server.url, timeout_s=3))
    consumer = transport.group_consumer("g", name, streams(count), rebuild_s=60,
                                        sharing=Sharing(LEASE_S))
    assert isinstance(consumer, SharedRedisGroupConsumer)
    member = Member(transport, consumer)
    made.append(member)
    return member


@asynccontextmanager
async def looping(*members: Member) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as tasks:
        for member in members:
            member.task = tasks.create_task(member.loop())
        try:
            yield
        finally:
            for member in members:
                if member.task is not None:
                    member.task.cancel()


async def until(condition: object, timeout_s: float = 10) -> float:
    """Seconds until ``condition()`` holds (checked every 10 ms); fails after the timeout."""
    assert callable(condition)
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, "condition not met in time"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def balanced(members: Iterable[Member], total: int) -> bool:
    owned = [m.consumer.owned() for m in members]
    every = set().union(*owned)
    return len(every) == total == sum(len(o) for o in owned)


def shares(members: Iterable[Member]) -> list[int]:
    return sorted(len(m.consumer.owned()) for m in members)


# -- the share ------------------------------------------------------------------------------

@pytest.mark.parametrize(("total", "members", "expected"), [
    (4, ["a", "b"], [2, 2]),
    (4, ["a", "b", "c"], [2, 1, 1]),
    (6, ["c", "a", "b"], [2, 2, 2]),
    (5, ["b", "a"], [3, 2]),
    (1, ["a", "b"], [1, 0]),
    (0, ["a"], [0]),
])
def test_quota_gives_the_first_names_the_remainder(total: int, members: list[str],
                                                   expected: list[int]) -> None:
    assert [quota(total, members, m) for m in sorted(members)] == expected
    assert sum(expected) == total


def test_a_member_not_yet_listed_counts_as_one_more() -> None:
    assert quota(4, ["a", "b"], "c") == 1
    assert quota(4, ["b", "c"], "a") == 2


def test_a_lease_counts_here_shorter_than_on_the_server() -> None:
    assert safety_margin(1.0) == pytest.approx(0.2)
    assert safety_margin(5.0) == pytest.approx(0.5)
    assert renew_interval(5.0) == 1.0
    assert renew_interval(1.0) == pytest.approx(0.2)


@pytest.mark.parametrize(("total", "count"), [(4, 2), (6, 3)])
async def test_members_get_balanced_shares(redis_server: RedisServer, members: list[Member],
                                           total: int, count: int) -> None:
    group = [join(members, redis_server, f"m{i}", total) for i in range(count)]
    async with looping(*group):
        await until(lambda: balanced(group, total) and shares(group) == [total // count] * count)


async def test_a_joining_member_takes_a_share(redis_server: RedisServer,
                                              members: list[Member]) -> None:
    first = [join(members, redis_server, name, 4) for name in ("a", "b")]
    async with looping(*first):
        await until(lambda: shares(first) == [2, 2])
        third = join(members, redis_server, "c", 4)
        async with looping(third):
            took = await until(lambda: balanced(members, 4) and shares(members) == [1, 1, 2])
            # Never above ⌈4/3⌉ = 2 while it settles, and nothing owned twice.
            for _ in range(20):
                assert balanced(members, 4) or sum(len(m.consumer.owned()) for m in members) < 4
                assert max(shares(members)) <= 2
                await asyncio.sleep(ROUND_S / 4)
    assert took < 4 * ROUND_S + 1
    assert third.consumer.ownership_changes["gained", "rebalanced"] == 1


# -- leaving, stalling, dying ---------------------------------------------------------------

async def test_a_closed_members_streams_are_taken_within_a_round(
        redis_server: RedisServer, members: list[Member]) -> None:
    a, b = join(members, redis_server, "a", 4), join(members, redis_server, "b", 4)
    async with looping(a, b):
        await until(lambda: shares([a, b]) == [2, 2])
        a.running = False
        await a.consumer.close()
        assert a.consumer.owned() == frozenset()
        took = await until(lambda: len(b.consumer.owned()) == 4)
    assert took < ROUND_S + 0.5
    assert b.consumer.ownership_changes["gained", "handed_over"] == 2


async def test_a_stalled_member_stops_owning_before_its_lease_expires(
        redis_server: RedisServer, members: list[Member]) -> None:
    a, b = join(members, redis_server, "a", 2), join(members, redis_server, "b", 2)
    async with looping(a, b):
        await until(lambda: shares([a, b]) == [1, 1])
        (lost,) = a.consumer.owned()
        a.running = False  # a pause: no fetch, so no renewal
        await until(lambda: not a.consumer.owned(), timeout_s=LEASE_S + 1)
        # Not owned here any more while the lease still stands on the server: nobody else
        # can have started on it.
        assert await a.transport.client.pttl(KEYS.lease(lost)) > 0
        assert lost not in b.consumer.owned()
        took = await until(lambda: lost in b.consumer.owned())
        assert took < LEASE_S + ROUND_S + 0.5
        with pytest.raises(OwnershipLost) as raised:
            await a.consumer.publish([Record("alerts", "k", b"late")], sources=[lost])
        assert raised.value.streams == {lost}
        assert await a.transport.client.xlen("alerts") == 0
        await b.consumer.publish([Record("alerts", "k", b"fresh")], sources=[lost])
        assert await b.transport.client.xlen("alerts") == 1


async def test_publish_is_fenced_by_the_lease_on_the_server(
        redis_server: RedisServer, members: list[Member]) -> None:
    """A grant the server forgot (a failover to a replica that missed it) and another
    member got: the publish checks the token there, not only the local view."""
    a = join(members, redis_server, "a", 2)
    async with looping(a):
        await until(lambda: len(a.consumer.owned()) == 2)
        await a.transport.client.set(KEYS.lease("ticks.1"), "b:99", px=5000)
        with pytest.raises(OwnershipLost) as raised:
            await a.consumer.publish(records("alerts", 2), sources=["ticks.0", "ticks.1"])
        assert raised.value.streams == {"ticks.1"}
        assert await a.transport.client.xlen("alerts") == 0
        assert a.consumer.owned() == {"ticks.0"}
        await a.consumer.publish(records("alerts", 2), sources=["ticks.0"])
        assert await a.transport.client.xlen("alerts") == 2


async def test_a_dead_members_streams_are_taken_within_the_lease_and_a_round(
        redis_server: RedisServer, members: list[Member]) -> None:
    a, b = join(members, redis_server, "a", 4), join(members, redis_server, "b", 4)
    async with looping(a, b):
        await until(lambda: shares([a, b]) == [2, 2])
        await a.kill()
        killed = time.monotonic()
        await until(lambda: len(b.consumer.owned()) == 4)
        took = time.monotonic() - killed
    assert took < LEASE_S + ROUND_S + 0.5
    assert b.consumer.ownership_changes["gained", "lease_expired"] == 2
    print(f"takeover after a dead member: {took:.2f}s (lease {LEASE_S}s)")


async def test_the_new_owner_replays_then_takes_the_pending_entries_then_new_ones(
        redis_server: RedisServer, members: list[Member]) -> None:
    a = join(members, redis_server, "a", 1)
    await a.transport.publish(records("ticks.0", 4))
    batch: list[Delivery] = []
    while len(batch) < 4:
        batch += await a.consumer.fetch(100, 50)
    await a.consumer.ack(batch[:2])  # dies with m2, m3 in hand
    await a.kill()
    b = join(members, redis_server, "b", 1)
    await b.transport.publish(records("ticks.0", 1, start=4))
    got: list[Delivery] = []
    started = time.monotonic()
    while len(got) < 5:
        assert time.monotonic() - started < LEASE_S + 3
        got += await b.consumer.fetch(100, 50)
    assert [(d.payload, d.replay) for d in got] == [
        (b"m0", True), (b"m1", True), (b"m2", False), (b"m3", False), (b"m4", False)]
    await b.consumer.ack(got)
    pending = await b.transport.client.xpending("ticks.0", "g")
    assert pending["pending"] == 0


# -- names ----------------------------------------------------------------------------------

async def fetch_while_owning_nothing(consumer: SharedRedisGroupConsumer) -> None:
    for _ in range(100):
        await consumer.fetch(100, 50)
        assert consumer.owned() == frozenset()


async def test_a_name_in_use_by_a_live_member_is_refused(
        redis_server: RedisServer, members: list[Member]) -> None:
    a = join(members, redis_server, "same", 2)
    async with looping(a):
        await until(lambda: len(a.consumer.owned()) == 2)
        twin = join(members, redis_server, "same", 2)
        with pytest.raises(TransportConfigError, match="G_CONSUMER: consumer name 'same' is "
                           "already in use by a live member"):
            await fetch_while_owning_nothing(twin.consumer)
        assert len(a.consumer.owned()) == 2


async def test_a_restarted_member_waits_for_its_dead_predecessor(
        redis_server: RedisServer, members: list[Member]) -> None:
    a = join(members, redis_server, "same", 2)
    async with looping(a):
        await until(lambda: len(a.consumer.owned()) == 2)
        await a.kill()
    again = join(members, redis_server, "same", 2)
    async with looping(again):
        took = await until(lambda: len(again.consumer.owned()) == 2)
    assert took < LEASE_S + ROUND_S + 0.5


async def test_entries_another_member_left_pending_on_an_owned_stream_come_back(
        redis_server: RedisServer, members: list[Member]) -> None:
    """What a member that wrongly believed it owned a stream (a renewal lost in a Redis
    failover) read meanwhile is claimed by the owner after a lease."""
    a = join(members, redis_server, "a", 1)
    async with looping(a):
        await until(lambda: a.consumer.owned() == {"ticks.0"})
        a.running = False
        await asyncio.sleep(0.2)
        await a.transport.publish(records("ticks.0", 2))
        await a.transport.client.xreadgroup("g", "ghost", {"ticks.0": ">"})
        a.running = True
        took = await until(lambda: len(a.got) == 2, timeout_s=LEASE_S + 2)
    assert took > LEASE_S - 0.3  # not before the other could have stopped
    assert [(d.payload, d.replay) for d in a.got] == [(b"m0", False), (b"m1", False)]
    assert (await a.transport.client.xpending("ticks.0", "g"))["pending"] == 0
