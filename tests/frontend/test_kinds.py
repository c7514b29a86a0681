"""Alerts of every rule kind on the page, in headless Chromium against the real gateway:
each row names its kind with a badge and shows the kind's figures (the liquidated sum as a
lower bound, the funding rate and the countdown to the next funding, the volume and its
ratio to the baseline), only price alerts draw a price path, and the kind filter hides and
shows kinds, kept across reloads like the other filters."""

from __future__ import annotations

import re

from playwright.async_api import Browser, Locator, expect

from common.bus.redis_streams import RedisTransport
from tests.support.gateway import publish, running_gateway
from tests.support.notify import kind_alert
from tests.support.page import (
    FAKE_NOTIFICATIONS_JS,
    ROWS,
    live_alert,
    new_context,
    now_ms,
    open_probe,
    row_count_is,
)
from tests.support.servers import RedisServer

PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2,
         "is_mobile": True, "has_touch": True}


def row_of(rows: Locator, alert_id: str) -> Locator:
    return rows.page.locator(f'{ROWS}[data-id="{alert_id}"]')


async def test_each_kind_has_its_badge_its_figures_and_only_price_a_path(
        redis_server: RedisServer, bus: RedisTransport, browser: Browser) -> None:
    now = now_ms()
    price = live_alert("SOLUSDT", 3.1, event_time_ms=now - 40_000)
    path = [(now - 50_000, 97_500.0), (now - 30_000, 97_000.0)]
    liquidation = kind_alert("liquidation", "BTCUSDT", event_time_ms=now - 30_000, path=path,
                             notional_usdt=2_468_000.0, liquidations=5)
    funding = kind_alert("funding", "ETHUSDT", event_time_ms=now - 20_000,
                         next_funding_ms=now + (3 * 3600 + 12 * 60 + 40) * 1000)
    volume = kind_alert("volume", "XRPUSDT", event_time_ms=now - 10_000, path=path)
    await publish(bus, price, liquidation, funding, volume)
    async with running_gateway(redis_server.url) as gw:
        probe = await open_probe(await new_context(browser), f"http://127.0.0.1:{gw.port}/")
        page = probe.page
        await row_count_is(page, 4)
        rows = page.locator(ROWS)

        price_row = row_of(rows, price.id)
        await expect(price_row.locator(".kind-badge")).to_have_count(0)
        await expect(price_row.locator(".col-change .figure")).to_have_text("+3.10 %")
        await expect(price_row.locator(".col-shape svg.spark")).to_have_count(1)

        liq = row_of(rows, liquidation.id)
        await expect(liq.locator(".kind-badge")).to_have_text("liquidation")
        # Rounded down: "≥ $2.4M" is true of 2.468 M.
        await expect(liq.locator(".col-change .figure")).to_have_text("≥ $2.4M")
        await expect(liq.locator(".figure-note")).to_have_text("longs liquidated · 5 orders")
        title = await liq.locator(".col-change").get_attribute("title") or ""
        assert "at most one liquidation per symbol per second" in title
        await expect(liq.locator(".col-move")).to_have_text("▼ longs")
        await expect(liq.locator(".col-shape svg")).to_have_count(0)

        fund = row_of(rows, funding.id)
        await expect(fund.locator(".kind-badge")).to_have_text("funding")
        await expect(fund.locator(".col-change .figure")).to_have_text("+0.2100 %")
        await expect(fund.locator(".figure-note")).to_have_text(
            "next funding in 3 h 12 min")
        await expect(fund.locator(".col-move")).to_have_text("▲ longs pay")
        await expect(fund.locator(".col-window")).to_have_text("–")

        vol = row_of(rows, volume.id)
        await expect(vol.locator(".kind-badge")).to_have_text("volume")
        await expect(vol.locator(".col-change .figure")).to_have_text("$5.1M")
        await expect(vol.locator(".figure-note")).to_have_text("7.3× its mean ($699k) over 1 h")
        await expect(vol.locator(".col-shape svg")).to_have_count(0)
        await expect(vol.locator(".col-shape .no-shape")).to_have_attribute(
            "title", re.compile("volume alert: no price path"))
        assert probe.console_errors == []

        # On a phone the cards of every kind still fit the screen's width.
        phone = await open_probe(await new_context(browser, **PHONE),
                                 f"http://127.0.0.1:{gw.port}/")
        await row_count_is(phone.page, 4)
        for row in (price, liquidation, funding, volume):
            card = row_of(phone.page.locator(ROWS), row.id)
            await expect(card.locator(".col-change .figure")).to_be_visible()
        width = await phone.page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways at phone width ({width}px)"


async def test_the_countdown_to_the_next_funding_counts_down(
        redis_server: RedisServer, bus: RedisTransport, browser: Browser) -> None:
    now = now_ms()
    soon = kind_alert("funding", "ETHUSDT", event_time_ms=now - 1000,
                      next_funding_ms=now + 62_500)
    await publish(bus, soon)
    async with running_gateway(redis_server.url) as gw:
        probe = await open_probe(await new_context(browser), f"http://127.0.0.1:{gw.port}/")
        note = probe.page.locator(f"{ROWS} .figure-note")
        await expect(note).to_have_text("next funding in 1 min")
        await expect(note).to_have_text(re.compile(r"next funding in [0-9]+ s"),
                                        timeout=8000)


async def test_the_kind_filter_hides_and_shows_kinds_and_is_kept_across_reloads(
        redis_server: RedisServer, bus: RedisTransport, browser: Browser) -> None:
    now = now_ms()
    board = [live_alert("SOLUSDT", 3.1, event_time_ms=now - 40_000),
             kind_alert("liquidation", "BTCUSDT", event_time_ms=now - 30_000),
             kind_alert("funding", "ETHUSDT", event_time_ms=now - 20_000),
             kind_alert("volume", "XRPUSDT", event_time_ms=now - 10_000)]
    await publish(bus, *board)
    async with running_gateway(redis_server.url) as gw:
        probe = await open_probe(await new_context(browser), f"http://127.0.0.1:{gw.port}/")
        page = probe.page
        await row_count_is(page, 4)
        everything = ["XRPUSDT", "ETHUSDT", "BTCUSDT", "SOLUSDT"]
        assert await probe.visible_symbols() == everything
        await expect(page.locator("#filter-kind")).to_have_value("all")

        for kind, symbols in (("liquidation", ["BTCUSDT"]), ("funding", ["ETHUSDT"]),
                              ("volume", ["XRPUSDT"]), ("price", ["SOLUSDT"])):
            await page.select_option("#filter-kind", kind)
            assert await probe.visible_symbols() == symbols, kind
        await expect(page.locator("#summary")).to_have_text("Showing 1 of 4 alerts")
        await expect(page.locator("#active-filters")).to_have_text("(1 active)")

        # The minimum change is a price move's: it leaves the other kinds alone.
        await page.select_option("#filter-kind", "all")
        await page.fill("#filter-min-change", "5")
        assert await probe.visible_symbols() == ["XRPUSDT", "ETHUSDT", "BTCUSDT"]
        await page.fill("#filter-min-change", "")

        await page.select_option("#filter-kind", "funding")
        await page.reload()
        await row_count_is(page, 4)
        await expect(page.locator("#filter-kind")).to_have_value("funding")
        assert await probe.visible_symbols() == ["ETHUSDT"]
        await page.select_option("#filter-kind", "all")
        assert await probe.visible_symbols() == everything
        assert probe.console_errors == []


async def test_a_live_alert_of_another_kind_notifies_and_is_announced_with_its_figures(
        redis_server: RedisServer, bus: RedisTransport, browser: Browser) -> None:
    async with running_gateway(redis_server.url) as gw:
        context = await new_context(browser)
        await context.add_init_script(FAKE_NOTIFICATIONS_JS)
        probe = await open_probe(context, f"http://127.0.0.1:{gw.port}/")
        page = probe.page
        await page.get_by_role("switch", name="Desktop notifications").click()
        await publish(bus, kind_alert("liquidation", "BTCUSDT"))
        await row_count_is(page, 1)
        await expect(page.locator("#announcer")).to_have_text(
            "BTCUSDT longs liquidated, at least $2.4M")
        now = now_ms()
        await publish(bus, kind_alert("funding", "ETHUSDT", event_time_ms=now,
                                      next_funding_ms=now + (3 * 3600 + 12 * 60 + 40) * 1000))
        await row_count_is(page, 2)
        notifications = await page.evaluate("window.__probe.notifications")
        assert notifications == [
            {"title": "BTCUSDT ▼ liquidation ≥ $2.4M", "body": "longs liquidated · 5 orders"},
            {"title": "ETHUSDT ▲ funding +0.2100 %", "body": "next funding in 3 h 12 min"}]
        assert probe.console_errors == []
