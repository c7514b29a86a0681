"""The Redis backend behind Sentinel, on real servers (a master, a replica, three
Sentinels): writes and reads go on across a kill -9 of the master once a replica is
promoted, a failed-over master that is still alive gets no more writes, and a demoted
master's ``READONLY`` is ``BusUnavailable`` like a dead one's refusal."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import TypeVar

import pytest

from common.bus import BusUnavailable, Record, create_transport
from common.bus.redis_sentinel import MASTER_CHECK_S, SentinelTransport
from common.settings import BaseServiceSettings, load_settings
from tests.support.servers import SentinelCluster

STREAM = "ticks.0"
T = TypeVar("T")


@pytest.fixture
async def transport(sentinel_cluster: SentinelCluster) -> AsyncIterator[SentinelTransport]:
    settings = load_settings(BaseServiceSettings, bus_url=sentinel_cluster.url, bus_timeout_s=2)
    bus = create_transport(settings)
    assert isinstance(bus, SentinelTransport)
    await bus.start()
    yield bus
    await bus.close()


def record(payload: str) -> Record:
    return Record(STREAM, "k", payload.encode())


async def until_available(call: Callable[[], Awaitable[T]], timeout_s: float = 20.0) -> T:
    """``call()`` retried on ``BusUnavailable``, as the services do."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await call()
        except BusUnavailable:
            assert time.monotonic() < deadline, f"the bus stayed unavailable for {timeout_s}s"
            await asyncio.sleep(0.05)


async def test_writes_and_reads_go_on_across_a_master_kill(
        sentinel_cluster: SentinelCluster, transport: SentinelTransport) -> None:
    group = transport.group_consumer("detector", "d1", [STREAM], rebuild_s=0)
    reader = transport.broadcast_reader(STREAM)
    await reader.backlog(0)
    before = [f"before-{i}" for i in range(50)]
    await transport.publish([record(p) for p in before])
    delivered = await group.fetch(100, 100)
    assert [d.payload.decode() for d in delivered] == before
    await group.ack(delivered)
    assert [d.payload.decode() for d in await reader.read(100, 100)] == before
    # Replicated for certain (the entries and the group's acknowledgements) before the kill.
    assert await transport.client.execute_command(  # type: ignore[no-untyped-call]
        "WAIT", 1, 5000) == 1

    old = await asyncio.to_thread(sentinel_cluster.kill_master)
    killed_at = time.monotonic()
    with pytest.raises(BusUnavailable):
        await transport.publish([record("during")])
    assert not await transport.ping()
    await until_available(lambda: transport.publish([record("after-0")]))
    failover_s = time.monotonic() - killed_at
    assert await asyncio.to_thread(sentinel_cluster.master_port) != old
    after = ["after-0"] + [f"after-{i}" for i in range(1, 50)]
    await transport.publish([record(p) for p in after[1:]])
    assert await transport.ping()

    got: list[str] = []
    while len(got) < len(after):
        batch = await until_available(lambda: group.fetch(100, 200))
        assert batch, f"the group got only {got}"
        got.extend(d.payload.decode() for d in batch)
        await group.ack(batch)
    # Acknowledged and replicated before the kill: never delivered again.
    assert got == after, got
    read = await until_available(lambda: reader.read(100, 200))
    assert [d.payload.decode() for d in read] == after
    print(f"kill -9 of the master -> writes accepted again: {failover_s:.2f}s")
    assert failover_s < 15


async def test_a_failed_over_master_that_lives_on_gets_no_more_writes(
        sentinel_cluster: SentinelCluster, transport: SentinelTransport) -> None:
    """A manual failover (or a blip) leaves the old master up, still a master for seconds
    until the Sentinels demote it, and what it takes then is lost: the client moves to the
    promoted replica within about ``MASTER_CHECK_S``."""
    await transport.publish([record("first")])
    old = await asyncio.to_thread(sentinel_cluster.master_port)
    setup = sentinel_cluster.setup
    assert setup is not None
    with setup.sentinel_client() as sentinel:
        await asyncio.to_thread(sentinel.execute_command, "SENTINEL", "FAILOVER",
                                setup.master_name)
    new = await asyncio.to_thread(sentinel_cluster.wait_for_failover, old)
    moved_at = time.monotonic()
    with setup.data_client(new) as promoted:
        while True:
            marker = f"marker-{time.monotonic()}"
            await until_available(partial(transport.publish, [record(marker)]))
            entries = await asyncio.to_thread(promoted.xrange, STREAM)
            if marker in {fields["d"] for _, fields in entries}:
                break
            assert time.monotonic() - moved_at < MASTER_CHECK_S + 2.0, \
                "writes still go to the old master"
            await asyncio.sleep(0.1)


async def test_a_demoted_master_is_unavailable_not_an_error(
        sentinel_cluster: SentinelCluster, transport: SentinelTransport) -> None:
    group = transport.group_consumer("detector", "d1", [STREAM], rebuild_s=0)
    await transport.publish([record("first")])
    assert len(await group.fetch(10, 10)) == 1
    setup = sentinel_cluster.setup
    assert setup is not None
    master, replica = setup.data_ports
    with setup.data_client(master) as client:  # demoted under the client's feet
        await asyncio.to_thread(client.execute_command, "REPLICAOF", "127.0.0.1", str(replica))
    with pytest.raises(BusUnavailable):
        await transport.publish([record("second")])
    with pytest.raises(BusUnavailable):
        await group.fetch(10, 10)  # XREADGROUP writes too (the group's state)


async def test_a_master_without_replicas_to_write_to_is_unavailable_until_one_is_back(
        sentinel_cluster: SentinelCluster, transport: SentinelTransport) -> None:
    """With ``min-replicas-to-write`` (what bounds the writes a partitioned master takes)
    the master refuses writes while no replica is in reach: waited out like an outage."""
    setup = sentinel_cluster.setup
    assert setup is not None
    master, replica = setup.data_ports
    with setup.data_client(master) as client:
        await asyncio.to_thread(client.config_set, "min-replicas-max-lag", "1")
        await asyncio.to_thread(client.config_set, "min-replicas-to-write", "1")
    await transport.publish([record("replicated")])
    process = setup.processes.pop(replica)
    process.kill()
    await asyncio.to_thread(process.wait)
    deadline = time.monotonic() + 10
    with pytest.raises(BusUnavailable, match="NOREPLICAS"):  # noqa: PT012
        while True:  # the master notices within min-replicas-max-lag
            await transport.publish([record("refused")])
            assert time.monotonic() < deadline, "writes were still taken without a replica"
            await asyncio.sleep(0.1)
    await asyncio.to_thread(setup.restart_node, replica)
    await until_available(lambda: transport.publish([record("taken again")]))
