from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from common.bus.redis_streams import RedisTransport
from tests.support.gateway import open_bus
from tests.support.servers import RedisServer


@pytest.fixture
async def bus(redis_server: RedisServer) -> AsyncIterator[RedisTransport]:
    transport = await open_bus(redis_server.url)
    yield transport
    await transport.close()
