"""The page's features in headless Chromium against the real gateway (in-process, on a real
Redis-compatible server), with alerts written onto the bus exactly as the detector does:
filters, sound, notifications, rows, keyboard use, and screenshots."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime
from zoneinfo import ZoneInfo

from playwright.async_api import Browser, Locator, async_playwright, expect

from common.bus import Record, Retention
from common.bus.redis_streams import RedisTransport
from common.partitioning import RULES_STREAM
from common.rule_model import Rule
from common.schemas import RuleSet, encode_rule_set
from tests.support.gateway import publish, running_gateway
from tests.support.page import (
    ARTIFACTS,
    FAKE_NOTIFICATIONS_JS,
    INSTRUMENT_JS,
    ROWS,
    PageProbe,
    live_alert,
    new_context,
    now_ms,
    open_probe,
    row_count_is,
)
from tests.support.prerequisites import CHROMIUM_ARGS, chromium_path
from tests.support.servers import RedisServer


async def announce_rules(bus: RedisTransport, *rules: Rule) -> None:
    """As a detector announces the rules it applies on start."""
    rule_set = RuleSet(rules=list(rules), updated_at_ms=now_ms(), updated_by="test",
                       version=1)
    await bus.declare([RULES_STREAM], Retention(max_len=100))
    await bus.publish([Record(RULES_STREAM, "rules", encode_rule_set(rule_set))])


async def test_each_filter_narrows_the_list_and_is_kept_across_reloads(
        redis_server: RedisServer, bus: RedisTransport, browser: Browser) -> None:
    board = [live_alert("BTCUSDT", 2.5, ago_s=50), live_alert("ETHUSDT", -3.4, ago_s=40),
             live_alert("SOLUSDT", 5.1, ago_s=30), live_alert("DOGEUSDT", -2.1, ago_s=20),
             live_alert("BTCUSDT", -2.2, ago_s=10)]
    await publish(bus, *board)
    async with running_gateway(redis_server.url) as gw:
        context = await new_context(browser)
        probe = await open_probe(context, f"http://127.0.0.1:{gw.port}/")
        page = probe.page
        await row_count_is(page, 5)
        everything = ["BTCUSDT", "DOGEUSDT", "SOLUSDT", "ETHUSDT", "BTCUSDT"]
        assert await probe.visible_symbols() == everything

        await page.select_option("#filter-direction", "up")
        assert await probe.visible_symbols() == ["SOLUSDT", "BTCUSDT"]
        await expect(page.locator("#summary")).to_have_text("Showing 2 of 5 alerts")
        await page.select_option("#filter-direction", "down")
        assert await probe.visible_symbols() == ["BTCUSDT", "DOGEUSDT", "ETHUSDT"]
        await page.select_option("#filter-direction", "all")

        await page.fill("#filter-min-change", "3")
        assert await probe.visible_symbols() == ["SOLUSDT", "ETHUSDT"]
        await page.fill("#filter-min-change", "")

        await page.fill("#filter-symbol", "btc")
        assert await probe.visible_symbols() == ["BTCUSDT", "BTCUSDT"]
        await page.fill("#filter-symbol", "zzz")
        await expect(page.locator("#empty")).to_have_text("No alerts match the filters.")
        await page.fill("#filter-symbol", "")

        # Filters combine, and survive a reload.
        await page.select_option("#filter-direction", "down")
        await page.fill("#filter-min-change", "2.15")
        await page.fill("#filter-symbol", "T")
        assert await probe.visible_symbols() == ["BTCUSDT", "ETHUSDT"]
        await page.reload()
        await row_count_is(page, 5)
        await expect(page.locator("#filter-direction")).to_have_value("down")
        await expect(page.locator("#filter-min-change")).to_have_value("2.15")
        await expect(page.locator("#filter-symbol")).to_have_value("T")
        assert await probe.visible_symbols() == ["BTCUSDT", "ETHUSDT"]
        await page.select_option("#filter-direction", "all")
        await page.fill("#filter-min-change", "")
        await page.fill("#filter-symbol", "")

        # Per-symbol mute hides every alert of the symbol, kept across reloads.
        await page.get_by_role("button", name="Mute BTCUSDT").first.click()
        assert await probe.visible_symbols() == ["DOGEUSDT", "SOLUSDT", "ETHUSDT"]
        await page.reload()
        await row_count_is(page, 5)
        assert await probe.visible_symbols() == ["DOGEUSDT", "SOLUSDT", "ETHUSDT"]
        unmute = page.get_by_role("button", name="Unmute BTCUSDT")
        await expect(unmute).to_be_visible()
        await unmute.click()
        assert await probe.visible_symbols() == everything
        await expect(page.locator("#muted-symbols")).to_be_hidden()
        assert probe.console_errors == []
        await context.close()


async def test_live_alerts_chime_history_and_hidden_ones_do_not_and_mute_persists(
        redis_server: RedisServer, bus: RedisTransport, browser: Browser) -> None:
    await publish(bus, live_alert("BTCUSDT", 2.5, ago_s=30), live_alert("ETHUSDT", -2.5, ago_s=20))
    async with running_gateway(redis_server.url) as gw:
        # Chromium's default policy, as on a desktop: no sound before the viewer interacts.
        context = await new_context(browser)
        probe = await open_probe(context, f"http://127.0.0.1:{gw.port}/")
        page = probe.page
        await row_count_is(page, 2)
        hint = page.locator("#audio-hint")
        await expect(hint).to_be_visible()
        await expect(hint).to_contain_text("Click to enable sound")
        assert await probe.oscillators() == 0  # the history is silent

        # Blocked: a live alert is listed but cannot sound, and is not played later either.
        await publish(bus, live_alert("SOLUSDT", 3.0))
        await row_count_is(page, 3)
        assert await probe.oscillators() == 0

        await page.get_by_role("button", name="Click to enable sound").click()
        await expect(hint).to_be_hidden()
        assert await probe.oscillators() == 0
        await publish(bus, live_alert("XRPUSDT", 3.1))
        await row_count_is(page, 4)
        await wait_until_chimes(probe, 1)

        # Filtered out or of a muted symbol: listed (hidden), silent.
        await page.select_option("#filter-direction", "down")
        chimes = await probe.oscillators()
        await publish(bus, live_alert("ADAUSDT", 2.2))
        await row_count_is(page, 5)
        await page.get_by_role("button", name="Mute ETHUSDT").click()
        await publish(bus, live_alert("ETHUSDT", -4.0))
        await row_count_is(page, 6)
        await asyncio.sleep(0.3)
        assert await probe.oscillators() == chimes
        await page.select_option("#filter-direction", "all")
        await page.get_by_role("button", name="Unmute ETHUSDT").click()

        # Mute: nothing sounds, and the choice survives a reload.
        sound = page.get_by_role("switch", name="Sound")
        await expect(sound).to_have_attribute("aria-checked", "true")
        await sound.click()
        await expect(sound).to_have_attribute("aria-checked", "false")
        await asyncio.sleep(0.3)
        chimes = await probe.oscillators()
        await publish(bus, live_alert("DOTUSDT", 2.6))
        await row_count_is(page, 7)
        await asyncio.sleep(0.3)
        assert await probe.oscillators() == chimes

        await page.reload()
        await row_count_is(page, 7)
        await expect(sound).to_have_attribute("aria-checked", "false")
        await expect(hint).to_be_hidden()  # muted: nothing to enable
        await page.locator("h1").click()
        await publish(bus, live_alert("LTCUSDT", -2.6))
        await row_count_is(page, 8)
        await asyncio.sleep(0.3)
        assert await probe.oscillators() == 0

        await sound.click()  # unmute: a user gesture, so the context may start at once
        await expect(sound).to_have_attribute("aria-checked", "true")
        await expect(hint).to_be_hidden()
        await publish(bus, live_alert("LINKUSDT", 2.9))
        await row_count_is(page, 9)
        await wait_until_chimes(probe, 1)
        await context.close()


async def wait_until_chimes(probe: PageProbe, at_least: int) -> None:
    for _ in range(40):
        if await probe.oscillators() >= at_least:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} oscillators started")


async def test_desktop_notifications_are_asked_for_on_a_click_and_shown_for_live_alerts(
        redis_server: RedisServer, bus: RedisTransport, browser: Browser) -> None:
    async with running_gateway(redis_server.url) as gw:
        context = await new_context(browser)
        await context.add_init_script(FAKE_NOTIFICATIONS_JS)
        probe = await open_probe(context, f"http://127.0.0.1:{gw.port}/")
        page = probe.page
        switch = page.get_by_role("switch", name="Desktop notifications")
        await expect(switch).to_have_attribute("aria-checked", "false")
        await publish(bus, live_alert("BTCUSDT", 2.5))
        await row_count_is(page, 1)
        assert await page.evaluate("window.__probe.permissionRequests") == 0
        assert await page.evaluate("window.__probe.notifications") == []

        await switch.click()
        await expect(switch).to_have_attribute("aria-checked", "true")
        assert await page.evaluate("window.__probe.permissionRequests") == 1
        await publish(bus, live_alert("ETHUSDT", -3.25))
        await row_count_is(page, 2)
        notifications = await page.evaluate("window.__probe.notifications")
        assert [n["title"] for n in notifications] == ["ETHUSDT ▼ -3.25 %"]
        assert notifications[0]["body"] == "100 → 96.75 within 60 s"

        await switch.click()
        await expect(switch).to_have_attribute("aria-checked", "false")
        await publish(bus, live_alert("SOLUSDT", 2.5))
        await row_count_is(page, 3)
        assert len(await page.evaluate("window.__probe.notifications")) == 1
        await context.close()


async def age_shown(age: Locator, event_time_ms: int) -> str:
    """The age a row shows, checked against the wall clock: at most a second of rounding
    down and a second of the page's once-a-second refresh behind it."""
    shown = await age.text_content() or ""
    seconds = re.fullmatch(r"(\d+) s ago", shown)
    assert seconds is not None, shown
    behind = (time.time() * 1000 - event_time_ms) / 1000 - int(seconds[1])
    assert -0.5 <= behind <= 2.5, shown
    return shown


async def test_a_row_shows_local_time_a_ticking_age_the_move_and_the_chart_link(
        redis_server: RedisServer, bus: RedisTransport, browser: Browser) -> None:
    with_path = live_alert("1000PEPEUSDT", -3.456, ago_s=12, base_price=0.0123456, points=40)
    without_path = live_alert("BTCUSDT", 2.5, ago_s=5, points=0)
    await publish(bus, with_path, without_path)
    zone = "America/New_York"
    async with running_gateway(redis_server.url) as gw:
        context = await new_context(browser, timezone_id=zone, locale="en-GB")
        probe = await open_probe(context, f"http://127.0.0.1:{gw.port}/")
        page = probe.page
        await row_count_is(page, 2)
        row = page.locator(f'{ROWS}[data-id="{with_path.id}"]')
        local = datetime.fromtimestamp(with_path.event_time_ms / 1000, ZoneInfo(zone))
        await expect(row.locator(".col-time")).to_have_text(local.strftime("%H:%M:%S"))
        await expect(row.locator(".col-move")).to_have_text("▼ down")
        await expect(row.locator(".col-change")).to_have_text("-3.46 %")
        await expect(row.locator(".col-price")).to_have_text(
            str(float(f"{with_path.price:.10g}")))
        await expect(row.locator(".col-base")).to_have_text("0.0123456")
        await expect(row.locator(".col-window")).to_have_text("60 s")
        link = row.get_by_role("link", name="1000PEPEUSDT")
        assert await link.get_attribute("href") == (
            "https://www.tradingview.com/chart/?symbol=BINANCE:1000PEPEUSDT.P")
        assert await link.get_attribute("target") == "_blank"
        assert "noopener" in (await link.get_attribute("rel") or "").split()

        # The age is the alert's, counted from its event time (however long the start took).
        age = row.locator(".col-age")
        first = await age_shown(age, with_path.event_time_ms)
        await expect(age).not_to_have_text(first, timeout=3000)  # it ticks
        await age_shown(age, with_path.event_time_ms)

        # The path as a sparkline: one vertex per point, ending at the alert's price level.
        points = await row.locator("svg.spark polyline").get_attribute("points")
        assert points is not None
        assert len(points.split()) == 40
        ys = [float(p.split(",")[1]) for p in points.split()]
        assert ys[-1] > ys[0]  # a fall ends lower on screen (larger y)
        no_path = page.locator(f'{ROWS}[data-id="{without_path.id}"]')
        assert await no_path.locator("svg").count() == 0
        await expect(no_path.locator(".col-shape")).to_have_text("–")
        await expect(no_path.locator(".col-move")).to_have_text("▲ up")

        # A live alert is announced to screen readers.
        await publish(bus, live_alert("ETHUSDT", 3.1))
        await expect(page.locator("#announcer")).to_have_text("ETHUSDT up 3.10 %")
        await expect(page.locator("#announcer")).to_have_attribute("aria-live", "polite")
        assert probe.console_errors == []
        assert probe.foreign_requests() == []
        await context.close()


async def test_everything_is_reachable_and_usable_by_keyboard(
        redis_server: RedisServer, bus: RedisTransport, browser: Browser) -> None:
    await publish(bus, live_alert("BTCUSDT", 2.5, ago_s=3))
    async with running_gateway(redis_server.url) as gw:
        context = await new_context(browser)
        probe = await open_probe(context, f"http://127.0.0.1:{gw.port}/")
        page = probe.page
        await row_count_is(page, 1)
        order = []
        for _ in range(10):
            await page.keyboard.press("Tab")
            order.append(await page.evaluate(
                "(() => { const e = document.activeElement;"
                " return e.id || e.getAttribute('aria-label') || e.textContent.trim(); })()"))
            outline = await page.evaluate(
                "getComputedStyle(document.activeElement).outlineStyle")
            assert outline == "solid", f"no visible focus on {order[-1]}"
        # The first key press also let the browser start audio: the hint is gone.
        await expect(page.locator("#audio-hint")).to_be_hidden()
        assert order == ["filter-kind", "filter-direction", "filter-min-change",
                         "filter-symbol", "sound-toggle", "sound-test", "notify-toggle", "max-rows",
                         "BTCUSDT", "Mute BTCUSDT"]

        await page.focus("#sound-toggle")
        await page.keyboard.press("Space")
        await expect(page.locator("#sound-toggle")).to_have_attribute("aria-checked", "false")
        await page.keyboard.press("Enter")
        await expect(page.locator("#sound-toggle")).to_have_attribute("aria-checked", "true")
        await page.focus("#filter-symbol")
        await page.keyboard.type("eth")
        await expect(page.locator("#empty")).to_be_visible()
        await page.fill("#filter-symbol", "")
        await page.get_by_role("button", name="Mute BTCUSDT").focus()
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("button", name="Unmute BTCUSDT")).to_be_visible()
        await context.close()


async def test_screenshots_in_light_and_dark_and_at_phone_width(
        redis_server: RedisServer, bus: RedisTransport) -> None:
    board = [("BTCUSDT", 2.31, 64000.0), ("ETHUSDT", -2.84, 3100.0), ("SOLUSDT", 4.12, 150.0),
             ("1000PEPEUSDT", -5.6, 0.0123), ("DOGEUSDT", 2.05, 0.162), ("ARBUSDT", -2.4, 0.74),
             ("SUIUSDT", 3.3, 3.9), ("XRPUSDT", 2.2, 0.52), ("INJUSDT", -3.05, 21.4),
             ("OPUSDT", 2.7, 1.62)]
    alerts = [live_alert(symbol, pct, ago_s=600 - 55 * i, base_price=price, rule="default")
              for i, (symbol, pct, price) in enumerate(board)]
    await publish(bus, *alerts)
    await announce_rules(bus, Rule(window_s=60, threshold_up_pct=2.0, threshold_down_pct=2.0,
                                   cooldown_s=60))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shots = {
        "page-light.png": {"color_scheme": "light", "viewport": {"width": 1280, "height": 720}},
        "page-dark.png": {"color_scheme": "dark", "viewport": {"width": 1280, "height": 720}},
        "page-phone-light.png": {"color_scheme": "light", "viewport": {"width": 390,
                                 "height": 844}, "device_scale_factor": 2, "is_mobile": True,
                                 "has_touch": True},
        "page-phone-dark.png": {"color_scheme": "dark", "viewport": {"width": 390,
                                "height": 844}, "device_scale_factor": 2, "is_mobile": True,
                                "has_touch": True},
        # The chart panel open on the first alert, TradingView unreachable (as offline).
        "page-chart-dark.png": {"color_scheme": "dark", "viewport": {"width": 1280,
                                "height": 720}},
    }
    async with running_gateway(redis_server.url) as gw, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path(),
                                                   args=CHROMIUM_ARGS)
        for name, options in shots.items():
            context = await browser.new_context(**options)  # type: ignore[arg-type]
            await context.add_init_script(INSTRUMENT_JS)
            await context.route("https://s.tradingview.com/**",
                                lambda route: route.abort("internetdisconnected"))
            page = await context.new_page()
            await page.goto(f"http://127.0.0.1:{gw.port}/")
            await row_count_is(page, len(board))
            await expect(page.locator("#status-text")).to_have_text("live")
            await expect(page.locator("#rule-text")).to_have_text(
                "±2 % within 60 s · cooldown 60 s")
            # Phone: the essentials stay, the rest steps aside; nothing scrolls sideways.
            if "phone" in name:
                first = page.locator(ROWS).first
                for column in (".col-symbol", ".col-move", ".col-change", ".col-shape",
                               ".col-age"):
                    await expect(first.locator(column)).to_be_visible()
                await expect(first.locator(".col-base")).to_be_hidden()
                width = await page.evaluate("document.documentElement.scrollWidth")
                assert width <= 390, f"the page scrolls sideways at phone width ({width}px)"
                # The controls fold behind one button; the light shot shows them open.
                await expect(page.locator("#filter-symbol")).to_be_hidden()
                if "light" in name:
                    await page.get_by_role("button", name="Filters and settings").click()
                    await expect(page.locator("#filter-symbol")).to_be_visible()
            if "chart" in name:
                await page.locator(ROWS).first.click()
                await expect(page.locator("#chart-panel iframe")).to_have_count(1)
                await page.wait_for_timeout(500)  # the frame's (error) page paints
            await page.screenshot(path=str(ARTIFACTS / name), full_page="chart" not in name)
            await context.close()
        await browser.close()
    for name in shots:
        assert (ARTIFACTS / name).stat().st_size > 20_000, name
