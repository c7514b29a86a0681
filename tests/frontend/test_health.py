"""The page's header tells the truth about the pipeline (real Chromium, every part a real
process): stop the ingestor, the detector, the exchange in turn and the header turns amber
or red with the reason within the threshold, and green again after recovery; a page that
lost its socket says it cannot know."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from fake_exchange import FakeExchange, drifting_market
from tests.support.page import ARTIFACTS, new_context, open_probe
from tests.support.processes import Pipeline, running
from tests.support.servers import RedisServer

pytestmark = pytest.mark.e2e

SYMBOLS = 30
STALE_S = 2.0
DETECTOR_STALE_S = 2.0
CHECK_S = 0.25
# Seen within the threshold, give or take one check and the page's own tick.
WITHIN_MS = int((STALE_S + 4 * CHECK_S + 0.5) * 1000)
RECOVERY_MS = 20_000
ENV = {"TICK_PARTITIONS": "2", "HEALTH_FEED_STALE_S": str(STALE_S), "HEALTH_FEED_DOWN_S": "120",
       "HEALTH_DETECTOR_STALE_S": str(DETECTOR_STALE_S), "HEALTH_CHECK_S": str(CHECK_S),
       "DETECTOR_HEARTBEAT_S": "0.25"}


async def shows(page: Page, level: str, reason: str | re.Pattern[str] = "",
                timeout_ms: int = RECOVERY_MS) -> None:
    health = page.locator("#health")
    await expect(health).to_have_attribute("data-level", level, timeout=timeout_ms)
    await expect(health).to_have_class(re.compile(rf"\bhealth-{level}\b"))
    if reason:
        await expect(health.locator(".health-reason")).to_contain_text(reason,
                                                                        timeout=timeout_ms)


async def green(page: Page) -> None:
    await shows(page, "ok")
    await expect(page.locator("#health .health-text")).to_have_text(
        re.compile(rf"^watching {SYMBOLS} symbols · data \d+\.\d s old$"))
    await expect(page.locator("#health .health-reason")).to_have_text("")


async def test_the_header_turns_amber_or_red_with_the_reason_and_green_after_recovery(
        redis_server: RedisServer, browser: Browser, tmp_path: Path) -> None:
    async with FakeExchange(drifting_market(SYMBOLS, change_ratio=1.0), interval_s=0.25,
                            wall_clock=True) as exchange:
        pipeline = Pipeline(redis_server.url, exchange.url("!miniTicker@arr"), tmp_path,
                            extra_env=ENV)
        async with running(pipeline):
            context = await new_context(browser)
            probe = await open_probe(context, pipeline.http("/"))
            page = probe.page
            await expect(page.locator("#status-text")).to_have_text("live")
            await green(page)

            # The ingestor stops: nothing new on the bus, the data ages.
            ingestor = pipeline.services["ingestor"]
            assert await asyncio.to_thread(ingestor.stop) == 0
            await shows(page, "warn", "exchange feed stale for", WITHIN_MS)
            # The age counts on while nothing new arrives.
            text = page.locator("#health .health-text")
            before = await text.text_content()
            await expect(text).not_to_have_text(before or "", timeout=3000)
            ingestor.start()
            await green(page)

            # The detector stops: its heartbeats stop.
            detector = pipeline.services["detector"]
            assert await asyncio.to_thread(detector.stop) == 0
            await shows(page, "down", "no detector consuming",
                        int((DETECTOR_STALE_S + 4 * CHECK_S + 0.5) * 1000))
            ARTIFACTS.mkdir(exist_ok=True)
            await page.locator("header").screenshot(path=str(ARTIFACTS / "health-down.png"))
            await expect(page.locator("#health .health-text")).to_have_text(
                re.compile(rf"^watching {SYMBOLS} symbols"))
            detector.start()
            await green(page)

            # The exchange goes silent on an open connection (the ingestor keeps it).
            exchange.stall()
            started = time.monotonic()
            await shows(page, "warn", "exchange feed stale for", WITHIN_MS)
            assert time.monotonic() - started >= STALE_S - 0.5
            await page.locator("header").screenshot(path=str(ARTIFACTS / "health-warn.png"))
            exchange.resume()
            await green(page)
            await page.locator("header").screenshot(path=str(ARTIFACTS / "health-ok.png"))
            assert probe.console_errors == []

            # The page loses its socket: it cannot know, and says so, counting.
            gateway = pipeline.services["gateway"]
            assert await asyncio.to_thread(gateway.stop) == 0
            await expect(page.locator("#status-text")).to_have_text("offline")
            await shows(page, "unknown", "not connected for")
            await expect(page.locator("#health .health-text")).to_have_text(
                "pipeline state unknown")
            reason = page.locator("#health .health-reason")
            first = await reason.text_content()
            await expect(reason).not_to_have_text(first or "", timeout=3000)
            await page.locator("header").screenshot(path=str(ARTIFACTS / "health-unknown.png"))
            gateway.start()
            await expect(page.locator("#status-text")).to_have_text("live", timeout=RECOVERY_MS)
            await green(page)
            await context.close()
