"""The page in a real (headless) Chromium: history, live alerts on top, links, status."""

from __future__ import annotations

from playwright import async_api as playwright_api

from common.bus.redis_streams import RedisTransport
from tests.support.gateway import make_alert, publish, running_gateway
from tests.support.prerequisites import CHROMIUM_ARGS, chromium_path
from tests.support.servers import RedisServer


async def test_page_shows_history_then_live_alerts_newest_first(
        redis_server: RedisServer, bus: RedisTransport) -> None:
    chromium = chromium_path()
    old = [make_alert("BTCUSDT", change_pct=2.345), make_alert("ETHUSDT", change_pct=-3.0)]
    await publish(bus, *old)
    async with running_gateway(redis_server.url) as gw, \
            playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium,
                                                   args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(f"http://127.0.0.1:{gw.port}/")
            status = page.locator("#status-text")
            await playwright_api.expect(status).to_have_text("live")
            rows = page.locator("#alert-rows tr")
            await playwright_api.expect(rows).to_have_count(2)

            live = make_alert("1000PEPEUSDT", change_pct=5.0)
            await publish(bus, live, live)
            await playwright_api.expect(rows).to_have_count(3)
            assert await rows.evaluate_all("rows => rows.map(r => r.dataset.id)") == [
                live.id, old[1].id, old[0].id]

            first = rows.nth(0)
            link = first.locator("a")
            assert await link.get_attribute("href") == (
                "https://www.tradingview.com/chart/?symbol=BINANCE:1000PEPEUSDT.P")
            assert await link.get_attribute("target") == "_blank"
            assert await link.get_attribute("rel") == "noopener"
            cells = await first.locator("td").all_inner_texts()
            assert cells[1:4] == ["1000PEPEUSDT", "▲ up", "+5.00 %"]
            down = await rows.nth(1).locator("td").all_inner_texts()
            assert down[2:4] == ["▼ down", "-3.00 %"]
            assert await page.locator("#empty").is_hidden()
            assert errors == []
        finally:
            await browser.close()
