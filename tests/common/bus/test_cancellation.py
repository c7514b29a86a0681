"""Cancelling a service's reading loop always ends it, whatever the bus client does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import fakeredis
import pytest

from common.bus.redis_streams import RedisConfig, RedisTransport
from tests.support.servers import RedisServer

STREAMS = ["ticks.0", "ticks.1"]


@pytest.fixture(params=["fakeredis", "real"])
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[RedisTransport]:
    if request.param == "fakeredis":
        bus = RedisTransport(RedisConfig("redis://fake"), client=fakeredis.FakeAsyncRedis())
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        bus = RedisTransport(RedisConfig(server.url, timeout_s=3))
    yield bus
    await bus.close()


async def test_a_reading_loop_always_stops_when_cancelled(transport: RedisTransport) -> None:
    """A cancel that lands as a blocking read times out must still end the reader's loop
    (a swallowed one hangs the service's shutdown)."""
    reader = transport.broadcast_reader("alerts")
    await reader.backlog(1)
    consumer = transport.group_consumer("g", "c", STREAMS, rebuild_s=60)
    await consumer.fetch(10, 10)

    async def forever(read: Callable[[], Awaitable[object]]) -> None:
        while True:
            await read()

    for read in (lambda: reader.read(10, 20), lambda: consumer.fetch(10, 20)):
        for delay in (0, 0.001, 0.01, 0.019, 0.02, 0.021, 0.039, 0.04, 0.041):
            task = asyncio.create_task(forever(read))
            await asyncio.sleep(delay)
            task.cancel()
            await asyncio.wait([task], timeout=2)
            assert task.cancelled(), f"cancel after {delay}s was lost: {task}"
