"""The Keep setting in headless Chromium against the real gateway (on a real
Redis-compatible server): the list holds at most Keep rows, and older alerts are loaded on
request up to it, again after a lower Keep trimmed some and a higher one made room."""

from __future__ import annotations

from playwright.async_api import Browser, expect

from common.bus.redis_streams import RedisTransport
from tests.support.gateway import publish, running_gateway
from tests.support.page import (
    ROWS,
    live_alert,
    new_context,
    now_ms,
    open_probe,
    row_count_is,
)
from tests.support.servers import RedisServer


async def test_the_list_is_capped_and_takes_a_burst(
        redis_server: RedisServer, bus: RedisTransport, browser: Browser) -> None:
    async with running_gateway(redis_server.url) as gw:
        context = await new_context(browser)
        probe = await open_probe(context, f"http://127.0.0.1:{gw.port}/")
        page = probe.page
        await expect(page.locator("#status-text")).to_have_text("live")
        assert await page.locator("#alerts").get_attribute("data-max-rows") == "200"
        await expect(page.locator("#max-rows")).to_have_value("200")
        start = 1_780_000_000_000
        burst = [live_alert(f"S{i:03d}USDT", 2.0 + i % 7 / 10, event_time_ms=start + i * 10)
                 for i in range(250)]
        await publish(bus, *burst)
        # The newest arrives last: once it is listed, the whole burst is in.
        await expect(page.locator(f'{ROWS}[data-id="{burst[-1].id}"]')).to_have_count(1)
        await row_count_is(page, 200)
        newest_first = [a.id for a in reversed(burst)][:200]
        assert await probe.row_ids() == newest_first
        await expect(page.locator("#summary")).to_have_text("200 alerts")

        await page.select_option("#max-rows", "50")
        await row_count_is(page, 50)
        assert await probe.row_ids() == newest_first[:50]
        await page.reload()
        await expect(page.locator("#max-rows")).to_have_value("50")
        await context.close()


async def test_older_alerts_are_loaded_on_request_silently_and_in_order(
        redis_server: RedisServer, bus: RedisTransport, browser: Browser) -> None:
    start = now_ms() - 600_000
    alerts = [live_alert(f"O{i:03d}USDT", 2.5 if i % 3 else -2.5, event_time_ms=start + i * 1000)
              for i in range(80)]
    await publish(bus, *alerts)
    async with running_gateway(redis_server.url, history_size=30) as gw:
        context = await new_context(browser)
        probe = await open_probe(context, f"http://127.0.0.1:{gw.port}/")
        page = probe.page
        await page.locator("h1").click()
        await row_count_is(page, 30)
        older = page.get_by_role("button", name="Load older alerts")
        await older.click()
        await row_count_is(page, 80)
        assert await probe.row_ids() == [a.id for a in reversed(alerts)]
        await expect(older).to_be_hidden()
        await expect(page.locator("#older-note")).to_have_text("That is all the gateway holds.")
        assert await probe.oscillators() == 0
        assert probe.console_errors == []
        await context.close()


async def test_older_alerts_come_back_after_keep_is_lowered_then_raised(
        redis_server: RedisServer, bus: RedisTransport, browser: Browser) -> None:
    """"That is all" is said of the oldest row: once a lower Keep trimmed rows, there is
    something older again, and asking for it brings the trimmed rows back."""
    start = now_ms() - 600_000
    alerts = [live_alert(f"K{i:03d}USDT", 2.5, event_time_ms=start + i * 1000)
              for i in range(80)]
    newest_first = [a.id for a in reversed(alerts)]
    await publish(bus, *alerts)
    async with running_gateway(redis_server.url, history_size=30) as gw:
        context = await new_context(browser)
        probe = await open_probe(context, f"http://127.0.0.1:{gw.port}/")
        page = probe.page
        older = page.get_by_role("button", name="Load older alerts")
        note = page.locator("#older-note")
        await row_count_is(page, 30)
        await older.click()
        await row_count_is(page, 80)
        await expect(note).to_have_text("That is all the gateway holds.")

        await page.select_option("#max-rows", "50")
        await row_count_is(page, 50)
        await expect(older).to_be_hidden()  # the list is full
        await expect(note).to_be_hidden()  # and it is no longer all the gateway holds
        await page.select_option("#max-rows", "100")
        await expect(older).to_be_visible()
        await older.click()
        await row_count_is(page, 80)
        assert await probe.row_ids() == newest_first
        await expect(older).to_be_hidden()
        await expect(note).to_have_text("That is all the gateway holds.")
        assert await probe.oscillators() == 0
        assert probe.console_errors == []
        await context.close()
