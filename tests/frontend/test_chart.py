"""The chart panel and the page's Content-Security-Policy, in headless Chromium against the
real gateway. TradingView is made unreachable in every test (requests to it fail as on a
machine without internet), so the tests mean the same here and on a connected CI runner."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from playwright.async_api import Browser, BrowserContext, Route, expect

from common.bus.redis_streams import RedisTransport
from gateway.page import CONTENT_SECURITY_POLICY
from tests.support.gateway import publish, running_gateway
from tests.support.page import ROWS, live_alert, new_context, open_probe, row_count_is
from tests.support.servers import RedisServer

CHART = "https://www.tradingview.com/chart/?symbol=BINANCE:{}.P"


async def unreachable_tradingview(browser: Browser) -> tuple[BrowserContext, list[str]]:
    """A context in which every TradingView request fails like a network without internet;
    returns the URLs that were attempted."""
    context = await new_context(browser)
    attempted: list[str] = []

    async def refuse(route: Route) -> None:
        attempted.append(route.request.url)
        await route.abort("internetdisconnected")

    for host in ("s.tradingview.com", "www.tradingview.com"):
        await context.route(f"https://{host}/**", refuse)
    return context, attempted


async def test_a_click_opens_the_chart_beside_the_list_esc_closes_it_and_modifier_clicks_open_tabs(
        redis_server: RedisServer, bus: RedisTransport, browser: Browser) -> None:
    btc, pepe = live_alert("BTCUSDT", 2.5, ago_s=30), live_alert("1000PEPEUSDT", -3.1, ago_s=20)
    await publish(bus, btc, pepe)
    async with running_gateway(redis_server.url) as gw:
        context, attempted = await unreachable_tradingview(browser)
        probe = await open_probe(context, f"http://127.0.0.1:{gw.port}/")
        page = probe.page
        await row_count_is(page, 2)
        panel = page.locator("#chart-panel")
        await expect(panel).to_be_hidden()

        # A click anywhere on a row: the panel, with TradingView's advanced chart widget.
        await page.locator(f'{ROWS}[data-id="{pepe.id}"] .col-change').click()
        await expect(panel).to_be_visible()
        await expect(panel.locator(".chart-title")).to_have_text("1000PEPEUSDT")
        frame = panel.locator("iframe")
        src = await frame.get_attribute("src")
        assert src is not None
        parts = urlsplit(src)
        assert (parts.scheme, parts.netloc, parts.path) == (
            "https", "s.tradingview.com", "/widgetembed/")
        query = parse_qs(parts.query)
        assert query["symbol"] == ["BINANCE:1000PEPEUSDT.P"]
        assert query["interval"] == ["15"]
        fallback = panel.get_by_role("link", name="Open 1000PEPEUSDT on TradingView (new tab)")
        assert await fallback.get_attribute("href") == CHART.format("1000PEPEUSDT")
        assert await fallback.get_attribute("target") == "_blank"
        await expect(page.locator(f'{ROWS}[data-id="{pepe.id}"]')).to_have_class("selected")

        # A plain click on a symbol: the panel switches to it, no tab opens.
        link = page.get_by_role("link", name="BTCUSDT", exact=True)
        await link.click()
        await expect(panel.locator(".chart-title")).to_have_text("BTCUSDT")
        assert parse_qs(urlsplit(await frame.get_attribute("src") or "").query)["symbol"] == [
            "BINANCE:BTCUSDT.P"]
        assert len(context.pages) == 1
        await expect(page.locator(f'{ROWS}[data-id="{pepe.id}"]')).not_to_have_class("selected")

        # TradingView is unreachable, and the page does not care: the list stays live.
        assert any(url.startswith("https://s.tradingview.com/widgetembed/") for url in attempted)
        await publish(bus, live_alert("SOLUSDT", 4.0))
        await row_count_is(page, 3)
        await page.select_option("#filter-direction", "down")
        assert await probe.visible_symbols() == ["1000PEPEUSDT"]
        await page.select_option("#filter-direction", "all")

        # Esc closes it and gives the focus back to the symbol that opened it.
        await page.keyboard.press("Escape")
        await expect(panel).to_be_hidden()
        assert await panel.locator("iframe").count() == 0
        assert await page.evaluate("document.activeElement.textContent") == "BTCUSDT"
        await expect(page.locator(f"{ROWS}.selected")).to_have_count(0)

        # Keyboard: Enter on the focused symbol opens it too; the close button closes it.
        await page.keyboard.press("Enter")
        await expect(panel).to_be_visible()
        await panel.get_by_role("button", name="Close the chart").click()
        await expect(panel).to_be_hidden()

        # Ctrl-, Shift- and middle-click: the browser's new tab (or window), never the panel.
        await page.evaluate("""() => {
            window.__clicks = [];
            for (const type of ["click", "auxclick"]) {
                window.addEventListener(type, (event) => window.__clicks.push(
                    [event.target.href, event.defaultPrevented]));
            }
        }""")
        for click in ({"modifiers": ["Control"]}, {"modifiers": ["Shift"]},
                      {"button": "middle"}):
            async with context.expect_page() as opened:
                await link.click(**click)
            tab = await opened.value
            await expect(panel).to_be_hidden()
            await tab.close()
        # Each reached the browser as a link to the chart, not held back by the page.
        assert await page.evaluate("window.__clicks") == [[CHART.format("BTCUSDT"), False]] * 3
        assert await probe.csp_violations() == []
        assert probe.console_errors == []
        await context.close()


async def test_the_page_is_served_with_a_strict_csp_that_its_own_parts_satisfy(
        redis_server: RedisServer, bus: RedisTransport, browser: Browser) -> None:
    await publish(bus, live_alert("BTCUSDT", 2.5, ago_s=5))
    async with running_gateway(redis_server.url) as gw:
        for path in ("/", "/index.html", "/app.js", "/style.css", "/chart-panel.js"):
            response = await gw.http.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert response.headers["x-content-type-options"] == "nosniff"
        directives = dict(d.strip().split(" ", 1) for d in CONTENT_SECURITY_POLICY.split(";"))
        assert directives["default-src"] == "'none'"
        assert directives["script-src"] == directives["style-src"] == "'self'"
        assert directives["connect-src"] == "'self'"
        assert directives["frame-src"] == "https://s.tradingview.com"
        assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
        # A conditional request (304) carries it too.
        etag = (await gw.http.get("/app.js")).headers["etag"]
        again = await gw.http.get("/app.js", headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert again.headers["content-security-policy"] == CONTENT_SECURITY_POLICY

        context, _ = await unreachable_tradingview(browser)
        probe = await open_probe(context, f"http://127.0.0.1:{gw.port}/")
        page = probe.page
        await row_count_is(page, 1)
        await expect(page.locator("#status-text")).to_have_text("live")  # ws: to itself
        await page.locator(ROWS).first.click()
        await expect(page.locator("#chart-panel iframe")).to_have_count(1)
        assert await probe.csp_violations() == []  # nothing of the page's own is refused

        # What the policy is for: anything else is refused and reported.
        await page.evaluate("""() => {
            const script = document.createElement("script");
            script.textContent = "window.__injected = true";
            document.body.append(script);
            const frame = document.createElement("iframe");
            frame.src = "https://example.com/";
            document.body.append(frame);
            const style = document.createElement("style");
            style.textContent = "body { display: none }";
            document.head.append(style);
            try { new WebSocket("ws://example.com/"); } catch (error) {}
        }""")
        await page.wait_for_function("window.__probe.cspViolations.length >= 4")
        refused = {v["directive"] for v in await probe.csp_violations()}
        assert refused == {"script-src-elem", "frame-src", "style-src-elem", "connect-src"}
        assert await page.evaluate("window.__injected") is None
        await expect(page.locator("body")).to_be_visible()
        assert probe.foreign_requests() == [
            url for url in probe.requests if url.startswith("https://s.tradingview.com/")]
        await context.close()
