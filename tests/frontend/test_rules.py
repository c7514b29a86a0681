"""The page shows the rules in force (live, as an admin changes them) and escalation levels,
in headless Chromium against the real gateway on a real Redis-compatible server."""

from __future__ import annotations

import msgspec
from playwright.async_api import Browser, expect

from common.bus.redis_streams import RedisTransport
from common.rule_model import Rule, SymbolOverride
from tests.support.admin import AUTH, TOKEN, seed
from tests.support.gateway import publish, running_gateway
from tests.support.page import live_alert, new_context, open_probe
from tests.support.servers import RedisServer


async def test_rules_and_their_changes_are_shown(redis_server: RedisServer,
                                                 bus: RedisTransport, browser: Browser) -> None:
    await seed(bus, Rule())
    async with running_gateway(redis_server.url, admin_token=TOKEN) as gw:
        probe = await open_probe(await new_context(browser), f"http://127.0.0.1:{gw.port}/")
        page = probe.page
        await expect(page.locator("#rule-text")).to_have_text("±2 % within 60 s · cooldown 60 s")
        await expect(page.locator("#rule-label")).to_have_text("Rule")

        fast = Rule(name="fast", window_s=10, threshold_up_pct=1.0, threshold_down_pct=1.5,
                    cooldown_s=30, escalation_step_pct=1.0, min_quote_volume=5e6,
                    deny=["1000*"], overrides=[SymbolOverride(pattern="BTCUSDT")])
        response = await gw.http.post("/api/admin/rules", headers=AUTH,
                                      json=msgspec.to_builtins(fast))
        assert response.status_code == 201, response.text
        await expect(page.locator("#rule-text")).to_have_text(
            "default: ±2 % within 60 s · cooldown 60 s; fast: +1 % / −1.5 % within 10 s · "
            "cooldown 30 s · again every +1 % · 24 h volume ≥ 5M · not 1000* · 1 override")
        await expect(page.locator("#rule-label")).to_have_text("Rules")


async def test_an_escalated_alert_carries_its_level(redis_server: RedisServer,
                                                    bus: RedisTransport,
                                                    browser: Browser) -> None:
    first = live_alert("BTCUSDT", 2.1, ago_s=20)
    second = msgspec.structs.replace(live_alert("BTCUSDT", 4.2, ago_s=10), rule="default",
                                     level=2)
    await publish(bus, first, second)
    async with running_gateway(redis_server.url) as gw:
        probe = await open_probe(await new_context(browser), f"http://127.0.0.1:{gw.port}/")
        rows = probe.page.locator("#alert-rows tr")
        await expect(rows).to_have_count(2)
        badge = rows.nth(0).locator(".col-change .level")
        await expect(badge).to_have_text("×2")
        assert "Escalation 2" in (await badge.get_attribute("title") or "")
        await expect(rows.nth(1).locator(".level")).to_have_count(0)


async def test_each_rule_shows_its_kind_and_thresholds(redis_server: RedisServer,
                                                       bus: RedisTransport,
                                                       browser: Browser) -> None:
    await seed(bus, Rule(),
               Rule(name="cascade", kind="liquidation", window_s=60, cooldown_s=120,
                    min_notional_usdt=1e6, escalation_step_usdt=5e5),
               Rule(name="funding", kind="funding", min_funding_rate_pct=0.1),
               Rule(name="spike", kind="volume", window_s=60, baseline_s=3600,
                    volume_factor=5, min_window_volume_usdt=250_000))
    async with running_gateway(redis_server.url) as gw:
        probe = await open_probe(await new_context(browser), f"http://127.0.0.1:{gw.port}/")
        await expect(probe.page.locator("#rule-text")).to_have_text(
            "default: ±2 % within 60 s · cooldown 60 s; "
            "cascade: liquidations ≥ $1M within 60 s · cooldown 120 s · again every +$500k; "
            "funding: funding |rate| ≥ 0.1 %, once per funding period; "
            "spike: volume ≥ 5× its mean per 60 s over 1 h, at least $250k · cooldown 60 s")
        assert probe.console_errors == []
