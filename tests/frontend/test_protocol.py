"""The page's side of the /ws protocol, against a scripted stub gateway: resuming with
``since``, falling back to the full history on 4400/4404, a connection that goes silent,
busy closes, rules updates, and messages from a newer gateway."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from tests.support.page import (
    alert_document,
    live_alert,
    new_context,
    open_probe,
    wait_until,
)
from tests.support.stub_gateway import running_stub


def alerts(*symbols: str, start_ago_s: float = 30.0) -> list[dict[str, Any]]:
    return [alert_document(live_alert(symbol, 2.5 if i % 2 == 0 else -2.7,
                                      ago_s=start_ago_s - i))
            for i, symbol in enumerate(symbols)]


@pytest.mark.parametrize("mode", ["unknown", "bad"])  # close 4404 / 4400
async def test_a_since_the_gateway_refuses_falls_back_to_the_full_history_once(
        browser: Browser, mode: str) -> None:
    first = alerts("BTCUSDT", "ETHUSDT", "SOLUSDT")
    async with running_stub(alerts=list(first), table_attributes={
            "data-retry-min-ms": "100"}) as stub:
        context = await new_context(browser)
        probe = await open_probe(context, stub.base_url)
        page = probe.page
        await expect(page.locator("#alert-rows tr")).to_have_count(3)
        await expect(page.locator("#status-text")).to_have_text("live")

        stub.since_mode = "unknown" if mode == "unknown" else "bad"
        await stub.close_all(1012, "restart")
        missed = alerts("DOGEUSDT", "XRPUSDT", start_ago_s=5)
        stub.alerts.extend(missed)

        await expect(page.locator("#alert-rows tr")).to_have_count(5)
        await expect(page.locator("#status-text")).to_have_text("live")
        ids = await probe.row_ids()
        assert sorted(ids) == sorted(a["id"] for a in first + missed)
        assert len(ids) == len(set(ids))
        # First connect without since, the refused resume, then the full history.
        assert probe.since_values() == [None, first[-1]["id"], None]
        # What arrived while away stands out and is announced, silently.
        fresh = await page.locator("#alert-rows tr.fresh").evaluate_all(
            "rows => rows.map(r => r.dataset.id)")
        assert sorted(fresh) == sorted(a["id"] for a in missed)
        await expect(page.locator("#announcer")).to_have_text(
            "2 alerts arrived while disconnected")
        assert await probe.oscillators() == 0
        assert probe.console_errors == []
        await context.close()


async def test_resume_shows_missed_alerts_once_and_silently_then_live_ones_chime(
        browser: Browser) -> None:
    first = alerts("BTCUSDT", "ETHUSDT")
    async with running_stub(alerts=list(first), table_attributes={
            "data-retry-min-ms": "1500"}) as stub:
        context = await new_context(browser)
        probe = await open_probe(context, stub.base_url)
        page = probe.page
        await page.locator("body").click()  # the user gesture that lets audio start
        await expect(page.locator("#alert-rows tr")).to_have_count(2)

        await stub.close_all(1013, "too slow")
        await expect(page.locator("#status-text")).to_have_text("offline")
        await expect(page.locator("#status-detail")).to_contain_text("too slow")
        missed = alerts("SOLUSDT", "BNBUSDT", "XRPUSDT", start_ago_s=4)
        stub.alerts.extend(missed)

        await expect(page.locator("#alert-rows tr")).to_have_count(5, timeout=10_000)
        await expect(page.locator("#status-text")).to_have_text("live")
        assert probe.since_values() == [None, first[-1]["id"]]
        ids = await probe.row_ids()
        assert ids == [a["id"] for a in reversed(first + missed)]  # newest event first
        assert await page.locator("#alert-rows tr.fresh").count() == 3
        await expect(page.locator("#announcer")).to_have_text(
            "3 alerts arrived while disconnected")
        assert await probe.oscillators() == 0

        live = alerts("ADAUSDT", start_ago_s=0)[0]
        await stub.push(live)
        await expect(page.locator(f'#alert-rows tr[data-id="{live["id"]}"]')).to_have_count(1)
        await expect(page.locator("#announcer")).to_have_text("ADAUSDT up 2.50 %")
        assert await probe.oscillators() >= 1
        # A repeated delivery of the same alert shows nothing new and makes no sound.
        before = await probe.oscillators()
        await asyncio.sleep(0.3)
        await stub.push(live)
        await asyncio.sleep(0.5)
        assert await probe.oscillators() == before
        assert len(await probe.row_ids()) == 6
        assert probe.console_errors == []
        await context.close()


async def test_a_connection_that_goes_silent_is_dropped_and_resumed(browser: Browser) -> None:
    first = alerts("BTCUSDT", "ETHUSDT")
    async with running_stub(alerts=list(first), table_attributes={
            "data-dead-after-ms": "800", "data-retry-min-ms": "100"}) as stub:
        context = await new_context(browser)
        probe = await open_probe(context, stub.base_url)
        page = probe.page
        await expect(page.locator("#alert-rows tr")).to_have_count(2)
        await expect(page.locator("#status-text")).to_have_text("live")

        # Heartbeats keep a quiet connection alive well past the deadline.
        for _ in range(6):
            await stub.ping()
            await asyncio.sleep(0.3)
        assert len(probe.websockets) == 1

        # Then nothing at all, from this socket and the next ones: the page gives up on each.
        stub.silent = True
        await expect(page.locator("#status-detail")).to_contain_text(
            "no data from the server", timeout=5000)
        await wait_until(lambda: len(probe.websockets) > 2, "two dead connections", 8)
        stub.silent = False
        missed = alerts("SOLUSDT", start_ago_s=3)
        stub.alerts.extend(missed)
        await expect(page.locator("#alert-rows tr")).to_have_count(3, timeout=8000)
        await expect(page.locator("#status-text")).to_have_text("live")
        since = probe.since_values()
        assert since[0] is None
        assert since[1:] == [first[-1]["id"]] * (len(since) - 1)
        assert probe.console_errors == []
        await context.close()


async def test_rules_are_shown_and_follow_updates(browser: Browser) -> None:
    async with running_stub() as stub:
        context = await new_context(browser)
        probe = await open_probe(context, stub.base_url)
        page = probe.page
        rule = page.locator("#rule-text")
        await expect(rule).to_have_text("±2 % within 60 s · cooldown 60 s")
        assert any(url.endswith("/api/rules") for url in probe.requests)

        await stub.set_rules([
            {"window_s": 300, "threshold_up_pct": 3.0, "threshold_down_pct": 2.5,
             "cooldown_s": 120},
            {"window_s": 60, "threshold_up_pct": 2.0, "threshold_down_pct": 2.0,
             "cooldown_s": 60},
        ])
        await expect(rule).to_have_text(
            "+3 % / −2.5 % within 5 min · cooldown 120 s; ±2 % within 60 s · cooldown 60 s")
        await expect(page.locator("#empty")).to_be_visible()
        assert probe.console_errors == []
        await context.close()


async def test_messages_of_a_newer_gateway_and_malformed_alerts_are_tolerated(
        browser: Browser) -> None:
    async with running_stub() as stub:
        context = await new_context(browser)
        probe = await open_probe(context, stub.base_url)
        page = probe.page
        await expect(page.locator("#status-text")).to_have_text("live")

        escalated = alerts("BTCUSDT", start_ago_s=1)[0] | {"level": 2, "note": "<b>x</b>"}
        await stub.broadcast({"type": "digest", "count": 3})
        await stub.broadcast({"type": "alert", "alert": {"id": 5, "symbol": None}})
        await stub.broadcast({"type": "alert"})
        await stub.push(escalated)
        await stub.push(alerts("<img src=x onerror=alert(1)>", start_ago_s=0)[0])
        await expect(page.locator("#alert-rows tr")).to_have_count(2)
        # Server strings are text, never markup.
        assert await page.locator("#alert-rows img").count() == 0
        await expect(page.locator("#alert-rows tr").nth(0).locator(".col-symbol")).to_have_text(
            "<img src=x onerror=alert(1)>")
        await expect(page.locator("#status-text")).to_have_text("live")
        assert probe.console_errors == []
        await context.close()
