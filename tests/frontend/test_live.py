"""The page against the whole system as deployed: the fake exchange over a real socket, the
ingestor, detector and gateway as real processes, a real Redis-compatible server."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from common.bus.redis_streams import RedisTransport
from common.partitioning import ALERTS_STREAM
from common.schemas import decode_alert
from fake_exchange import FakeExchange, drifting_market, jump_scenario
from tests.support.gateway import publish
from tests.support.page import ROWS, PageProbe, live_alert, new_context, now_ms, open_probe
from tests.support.processes import Pipeline, running
from tests.support.servers import RedisServer

pytestmark = pytest.mark.e2e

JUMP_SYMBOL = "SYM007USDT"


@contextlib.asynccontextmanager
async def running_pipeline(exchange: FakeExchange, redis_server: RedisServer,
                           log_dir: Path) -> AsyncIterator[Pipeline]:
    pipeline = Pipeline(redis_server.url, exchange.url("!miniTicker@arr"), log_dir,
                        extra_env={"TICK_PARTITIONS": "4"})
    async with running(pipeline):
        yield pipeline


async def bus_alert_ids(pipeline: Pipeline) -> list[str]:
    """The alerts the gateway holds, newest first."""
    async with httpx.AsyncClient() as http:
        response = await http.get(pipeline.http("/api/alerts?limit=1000"))
    response.raise_for_status()
    return [alert["id"] for alert in response.json()["alerts"]]


async def assert_clean(probe: PageProbe, *, gateway_was_down: bool = False) -> None:
    errors = probe.console_errors
    if gateway_was_down:
        # Chromium itself logs each failed connection attempt; the page cannot silence it.
        errors = [e for e in errors if not re.fullmatch(
            r"WebSocket connection to 'ws://127\.0\.0\.1:\d+/ws(\?since=[^']*)?' failed: "
            r"Error in connection establishment: "
            r"net::(ERR_CONNECTION_REFUSED|ERR_INTERNET_DISCONNECTED)", e)]
    assert errors == []
    assert probe.foreign_requests() == []
    assert probe.websockets, "the page opened no WebSocket"
    assert all(url.startswith("ws://127.0.0.1:") for url in probe.websockets), probe.websockets


async def restart_behind_a_network_gap(page: Page, pipeline: Pipeline, bus: RedisTransport
                                       ) -> None:
    """Start the stopped gateway; the page reaches it once it holds the whole backlog.

    The page is kept offline while the gateway starts: a connection accepted before the
    gateway has loaded its history from the bus is answered from an empty memory (a
    gateway start-up race, reported separately; /readyz turns ready before the backlog is
    in memory, hence the wait for the newest alert), which is not what this test is about.
    Going back online also exercises the page's reconnect on the "online" event.
    """
    await page.context.set_offline(True)
    pipeline.services["gateway"].start()
    await asyncio.to_thread(pipeline.wait_ready)
    [newest] = await bus.broadcast_reader(ALERTS_STREAM).backlog(1)
    newest_id = decode_alert(newest.payload).id
    for _ in range(200):
        if newest_id in await bus_alert_ids(pipeline):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the restarted gateway never held the newest alert")
    await page.context.set_offline(False)


async def test_the_jump_scenario_lists_its_alert_within_a_second_and_chimes_once(
        redis_server: RedisServer, browser: Browser, tmp_path: Path) -> None:
    scenario = jump_scenario(700, jump_symbol=JUMP_SYMBOL, at_frame=4, pct=3.0, over_frames=8,
                             frames=16)
    async with FakeExchange(scenario, interval_s=0.25, wall_clock=True) as exchange:
        exchange.stall()  # the market waits until the viewer is looking
        async with running_pipeline(exchange, redis_server, tmp_path) as pipeline:
            context = await new_context(browser)
            probe = await open_probe(context, pipeline.http("/"))
            page = probe.page
            await expect(page.locator("#status-text")).to_have_text("live")
            await expect(page.locator("#empty")).to_be_visible()
            # The rule the detector announced, as the gateway relays it.
            await expect(page.locator("#rule-text")).to_have_text(
                "±2 % within 60 s · cooldown 60 s")
            await page.locator("h1").click()  # a viewer's first click lets the sound start
            await expect(page.locator("#audio-hint")).to_be_hidden()
            assert await probe.oscillators() == 0

            exchange.resume()
            await expect(page.locator(ROWS)).to_have_count(1, timeout=20_000)
            (alert_id,) = await bus_alert_ids(pipeline)
            symbol, window, event_time = alert_id.split(":")
            assert (symbol, window) == (JUMP_SYMBOL, "60")
            shown_after_ms = await probe.seen_at_ms(alert_id) - int(event_time)
            assert shown_after_ms < 1000, f"shown {shown_after_ms} ms after its event time"

            row = page.locator(ROWS).first
            assert await row.get_attribute("data-id") == alert_id
            await expect(row.locator(".col-symbol")).to_have_text(JUMP_SYMBOL)
            await expect(row.locator(".col-move")).to_have_text("▲ up")
            change = await row.locator(".col-change").text_content()
            assert change is not None
            assert change.startswith(("+2.", "+3.00")), change
            assert change.endswith(" %")
            await expect(row.locator(".col-window")).to_have_text("60 s")
            await expect(row.locator("svg.spark polyline")).to_have_count(1)
            link = row.get_by_role("link", name=JUMP_SYMBOL)
            assert await link.get_attribute("href") == (
                "https://www.tradingview.com/chart/?symbol=BINANCE:SYM007USDT.P")
            assert await link.get_attribute("target") == "_blank"
            assert "noopener" in (await link.get_attribute("rel") or "").split()
            await expect(page.locator("#announcer")).to_have_text(
                f"{JUMP_SYMBOL} up {change.removeprefix('+').removesuffix(' %')} %")
            chimes = await probe.oscillators()
            assert chimes >= 1, "no sound for a live alert"

            await exchange.wait_until_done(timeout=20)
            await asyncio.sleep(0.5)
            assert await probe.row_ids() == [alert_id]  # one move, one alert, once
            assert await probe.oscillators() == chimes
            await assert_clean(probe)

            # Reloaded, the alert comes back as history: listed, silent.
            await page.reload()
            await expect(page.locator(ROWS)).to_have_count(1)
            await page.locator("h1").click()
            await asyncio.sleep(0.5)
            assert await probe.oscillators() == 0
            await assert_clean(probe)
            await context.close()


async def test_a_gateway_restart_while_alerts_keep_coming_shows_every_alert_exactly_once(
        redis_server: RedisServer, bus: RedisTransport, browser: Browser,
        tmp_path: Path) -> None:
    published: list[str] = []
    numbers = itertools.count()

    async def keep_publishing(stop: asyncio.Event) -> None:
        while not stop.is_set():
            n = next(numbers)
            alert = live_alert(f"R{n:03d}USDT", 2.0 + (n % 5) / 10 if n % 2 else -2.4)
            await publish(bus, alert)
            published.append(alert.id)
            await asyncio.sleep(0.08)

    async with FakeExchange(drifting_market(50), interval_s=0.5, wall_clock=True) as exchange, \
            running_pipeline(exchange, redis_server, tmp_path) as pipeline:
        context = await new_context(browser)
        probe = await open_probe(context, pipeline.http("/"))
        page = probe.page
        await expect(page.locator("#status-text")).to_have_text("live")
        gateway = pipeline.services["gateway"]

        stop = asyncio.Event()
        publisher = asyncio.create_task(keep_publishing(stop))
        try:
            await page.wait_for_function(
                "n => document.querySelectorAll('#alert-rows tr').length >= n", arg=5)
            assert await asyncio.to_thread(gateway.stop, signal.SIGTERM) == 0
            while_down = len(published)
            await expect(page.locator("#status-text")).to_have_text("offline")
            await asyncio.sleep(0.5)
            await restart_behind_a_network_gap(page, pipeline, bus)
            assert len(published) > while_down, "nothing was published while it was down"
            await expect(page.locator("#status-text")).to_have_text("live", timeout=15_000)
            await asyncio.sleep(0.5)
        finally:
            stop.set()
            await publisher

        await expect(page.locator(ROWS)).to_have_count(len(published))
        on_page = await probe.row_ids()
        assert len(on_page) == len(set(on_page)), "an alert is shown twice"
        assert sorted(on_page) == sorted(await bus_alert_ids(pipeline)) == sorted(published)
        since = probe.since_values()
        assert since[0] is None
        assert len(since) >= 2, since
        assert since[-1] in published[:while_down], since
        await assert_clean(probe, gateway_was_down=True)

        # Down long enough for the gateway to forget the page's last alert: it answers the
        # resume with 4404 and the page takes the recent history instead, each alert once.
        assert await asyncio.to_thread(gateway.stop, signal.SIGTERM) == 0
        start = now_ms()
        flood = [live_alert(f"F{i:04d}USDT", 2.5, event_time_ms=start + i) for i in range(1100)]
        await publish(bus, *flood)
        await restart_behind_a_network_gap(page, pipeline, bus)
        await expect(page.locator(ROWS)).to_have_count(len(published) + 50, timeout=15_000)
        since = probe.since_values()
        assert since[-2:] == [published[-1], None], since
        on_page = await probe.row_ids()
        assert len(on_page) == len(set(on_page))
        assert set(on_page) == set(published) | {a.id for a in flood[-50:]}
        await expect(page.locator("#status-text")).to_have_text("live")
        await assert_clean(probe, gateway_was_down=True)
        await context.close()
