"""The page against the real gateway when several alerts reach it in one read: they come
as one ``{"type":"alerts"}`` message, and the page shows every one of them."""

from __future__ import annotations

import asyncio

from playwright.async_api import Browser, expect

from common.bus import Delivery
from common.partitioning import ALERTS_STREAM
from common.schemas import encode_alert
from gateway.app import create_app
from tests.support.gateway import (
    ScriptedReader,
    ScriptedTransport,
    gateway_settings,
    serving,
)
from tests.support.page import ROWS, live_alert, new_context, open_probe


async def test_every_alert_of_a_coalesced_message_is_shown(browser: Browser) -> None:
    history = [live_alert("BTCUSDT", 2.5, ago_s=30)]
    burst = [live_alert(symbol, 3.0 if i % 2 else -3.2, ago_s=5 - i * 0.1)
             for i, symbol in enumerate(("ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT",
                                         "BNBUSDT", "ADAUSDT"))]
    go = asyncio.Event()
    reader = ScriptedReader([
        [Delivery(ALERTS_STREAM, "1-0", encode_alert(history[0]), 1)], go,
        [Delivery(ALERTS_STREAM, f"{i + 2}-0", encode_alert(a), 1) for i, a in enumerate(burst)],
    ])
    settings = gateway_settings("redis://unused")
    app = create_app(settings, ScriptedTransport(reader))  # type: ignore[arg-type]
    async with serving(app, settings) as gw:
        await gw.wait_ready()
        context = await new_context(browser)
        probe = await open_probe(context, f"http://127.0.0.1:{gw.port}/")
        page = probe.page
        await expect(page.locator(ROWS)).to_have_count(1)
        await expect(page.locator("#status-text")).to_have_text("live")
        go.set()
        await expect(page.locator(ROWS)).to_have_count(1 + len(burst))
        shown = await probe.row_ids()
        assert shown == [a.id for a in reversed(burst)] + [history[0].id]  # newest on top
        assert await gw.metric("gateway_deliveries_total") == len(burst)
        assert probe.console_errors == []
