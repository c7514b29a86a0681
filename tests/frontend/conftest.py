"""Browser fixtures for the page tests: the system Chromium and a bus to publish alerts on.
The instruments the tests use live in ``tests/support/page.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright

from common.bus.redis_streams import RedisTransport
from tests.support.gateway import open_bus
from tests.support.prerequisites import CHROMIUM_ARGS, chromium_path
from tests.support.servers import RedisServer


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = chromium_path()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable,
                                                    args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def bus(redis_server: RedisServer) -> AsyncIterator[RedisTransport]:
    transport = await open_bus(redis_server.url)
    yield transport
    await transport.close()
