"""What a row tells a trader, in headless Chromium against the real gateway: the rule that
fired (table and phone card), a symbol that looks like the link it is, an age precise past a
minute, and the test-sound button."""

from __future__ import annotations

from playwright.async_api import Browser, expect

from common.bus.redis_streams import RedisTransport
from tests.support.gateway import publish, running_gateway
from tests.support.page import ROWS, live_alert, new_context, now_ms, open_probe, row_count_is
from tests.support.servers import RedisServer

PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2,
         "is_mobile": True, "has_touch": True}


async def test_two_rules_firing_on_one_tick_are_two_different_rows_and_cards(
        redis_server: RedisServer, bus: RedisTransport, browser: Browser) -> None:
    tick = now_ms() - 30_000
    fast = live_alert("ETHUSDT", 2.6, window_s=60, event_time_ms=tick, rule="default")
    slow = live_alert("ETHUSDT", 2.6, window_s=300, event_time_ms=tick, rule="slow")
    unnamed = live_alert("BTCUSDT", 2.2, ago_s=40)  # written before rules had names
    await publish(bus, unnamed, fast, slow)
    async with running_gateway(redis_server.url) as gw:
        for options in ({"viewport": {"width": 1280, "height": 720}}, PHONE):
            context = await new_context(browser, **options)
            probe = await open_probe(context, f"http://127.0.0.1:{gw.port}/")
            page = probe.page
            await row_count_is(page, 3)
            headers = await page.locator(".alerts thead th").all_text_contents()
            assert "Rule" in headers
            assert headers.index("Rule") == headers.index("Window") - 1
            cards = {}
            for alert, rule, window in ((fast, "default", "60 s"), (slow, "slow", "300 s"),
                                        (unnamed, "–", "60 s")):
                row = page.locator(f'{ROWS}[data-id="{alert.id}"]')
                for column, text in ((".col-rule", rule), (".col-window", window)):
                    await expect(row.locator(column)).to_be_visible()
                    await expect(row.locator(column)).to_have_text(text)
                await expect(row.locator(".col-time")).to_be_visible()
                cards[alert.id] = await row.inner_text()
            # What a trader sees of the two ETHUSDT alerts differs (and not only in the age).
            assert cards[fast.id] != cards[slow.id]
            assert "slow" in cards[slow.id]
            assert "300 s" in cards[slow.id]
            if options is PHONE:
                width = await page.evaluate("document.documentElement.scrollWidth")
                assert width <= 390, f"the page scrolls sideways at phone width ({width}px)"
            assert probe.console_errors == []
            await context.close()


async def test_a_symbol_looks_like_a_link_to_its_tradingview_chart(
        redis_server: RedisServer, bus: RedisTransport, browser: Browser) -> None:
    alert = live_alert("1000PEPEUSDT", -3.0, ago_s=5, base_price=0.0123)
    await publish(bus, alert)
    async with running_gateway(redis_server.url) as gw:
        context = await new_context(browser, color_scheme="dark")
        probe = await open_probe(context, f"http://127.0.0.1:{gw.port}/")
        page = probe.page
        await row_count_is(page, 1)
        link = page.locator(ROWS).first.get_by_role("link", name="1000PEPEUSDT")
        assert await link.get_attribute("href") == (
            "https://www.tradingview.com/chart/?symbol=BINANCE:1000PEPEUSDT.P")
        style = await link.evaluate("""(a) => {
            const s = getComputedStyle(a);
            const text = getComputedStyle(a.closest("tr").querySelector(".col-price"));
            const accent = getComputedStyle(document.documentElement)
                .getPropertyValue("--accent").trim();
            const probe = document.createElement("span");
            probe.style.color = accent;
            document.body.append(probe);
            const accentColor = getComputedStyle(probe).color;
            probe.remove();
            return { line: s.textDecorationLine, color: s.color, accent: accentColor,
                     plain: text.color, cursor: s.cursor };
        }""")
        assert style["line"] == "underline"
        assert style["color"] == style["accent"] != style["plain"]
        assert style["cursor"] == "pointer"
        await context.close()


async def test_ages_stay_precise_past_a_minute_and_an_hour_and_keep_ticking(
        redis_server: RedisServer, bus: RedisTransport, browser: Browser) -> None:
    start = now_ms()
    minute = live_alert("BTCUSDT", 2.5, event_time_ms=start - 59_000)
    hours = live_alert("ETHUSDT", -2.5, event_time_ms=start - (3 * 3600 + 5 * 60 + 7) * 1000)
    days = live_alert("SOLUSDT", 3.0, event_time_ms=start - (2 * 86400 + 4 * 3600) * 1000)
    await publish(bus, minute, hours, days)
    async with running_gateway(redis_server.url) as gw:
        context = await new_context(browser)
        probe = await open_probe(context, f"http://127.0.0.1:{gw.port}/")
        page = probe.page
        # The page's clock, fixed: Date.now() says what the test says, timers still run.
        await page.clock.set_fixed_time(start / 1000)
        await row_count_is(page, 3)

        def age_of(alert_id: str):  # type: ignore[no-untyped-def]
            return page.locator(f'{ROWS}[data-id="{alert_id}"] .col-age')

        await expect(age_of(minute.id)).to_have_text("59 s ago")
        await expect(age_of(hours.id)).to_have_text("3 h 5 min ago")
        await expect(age_of(days.id)).to_have_text("2 d 4 h ago")
        # Past the minute, the seconds stay: and the age follows the clock, every second.
        for offset_s, text in ((21, "1 min 20 s ago"), (22, "1 min 21 s ago"),
                               (61, "2 min 0 s ago"), (3540, "59 min 59 s ago"),
                               (3541, "1 h 0 min ago")):
            await page.clock.set_fixed_time((start + offset_s * 1000) / 1000)
            await expect(age_of(minute.id)).to_have_text(text, timeout=3000)
        await expect(age_of(hours.id)).to_have_text("4 h 4 min ago")  # 3 h 5 min 7 s + 59 min
        await context.close()


async def test_the_test_sound_button_plays_both_chimes_even_while_muted(
        redis_server: RedisServer, bus: RedisTransport, browser: Browser) -> None:
    async with running_gateway(redis_server.url) as gw:
        context = await new_context(browser)
        probe = await open_probe(context, f"http://127.0.0.1:{gw.port}/")
        page = probe.page
        await expect(page.locator("#status-text")).to_have_text("live")
        assert await probe.oscillators() == 0
        button = page.get_by_role("button", name="Test sound")
        # The browser holds sound back until a gesture: the button's click is one.
        await expect(page.locator("#audio-hint")).to_be_visible()
        await button.click()
        await page.wait_for_function("window.__probe.oscillators >= 4")
        assert await probe.oscillators() == 4  # up (two notes), then down (two notes)
        await expect(page.locator("#audio-hint")).to_be_hidden()

        sound = page.get_by_role("switch", name="Sound")
        await sound.click()
        await expect(sound).to_have_attribute("aria-checked", "false")
        await button.click()
        await page.wait_for_function("window.__probe.oscillators >= 8")
        # Muted still: live alerts stay silent.
        await publish(bus, live_alert("BTCUSDT", 2.5))
        await row_count_is(page, 1)
        await page.wait_for_timeout(300)
        assert await probe.oscillators() == 8
        await expect(sound).to_have_attribute("aria-checked", "false")
        assert probe.console_errors == []
        await context.close()
