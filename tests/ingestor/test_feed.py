"""The service in-process, against the fake exchange over real sockets and a real Redis."""

from __future__ import annotations

import asyncio
import logging
import re
import zlib

import httpx
import pytest

from fake_exchange import FakeExchange, drifting_market
from tests.support.ingestor import (
    RunningIngestor,
    make_settings,
    read_entries,
    read_ticks,
    running,
    sample,
    wait_until,
)
from tests.support.servers import RedisServer
from tools.redis_server import free_port

pytestmark = pytest.mark.usefixtures("ws_client")

START_MS = 1_700_000_000_000


def reconnects(ingestor: RunningIngestor, reason: str) -> float:
    return sample(ingestor, "ingestor_reconnects_total", {"reason": reason})


def ticks_published(ingestor: RunningIngestor) -> float:
    return sample(ingestor, "ingestor_ticks_published_total")


async def test_drifting_market_lands_in_redis_without_coin_m(redis_server: RedisServer) -> None:
    scenario = list(drifting_market(700, frames=8, coin_m_symbols=6, start_ms=START_MS))
    usdm = [q for f in scenario for q in f if q.contract_type == 1]
    coin_m = sum(1 for f in scenario for q in f if q.contract_type == 2)
    async with FakeExchange(scenario, interval_s=0.02) as ex:
        # FLUSH_MS=0: one bus entry per partition per frame, however close the frames come.
        settings = make_settings(redis_server.url, ex.url("!miniTicker@arr"), flush_ms=0)
        async with running(settings) as ingestor:
            await wait_until(lambda: ticks_published(ingestor) >= len(usdm), what="all ticks")
            await ex.wait_until_done(5)
            await asyncio.sleep(0.1)  # nothing more may arrive
    entries = await read_entries(redis_server.url, 4)
    ticks = [t for p in range(4) for batch in entries[p] for t in batch]
    assert len(ticks) == len(usdm)
    assert not any(t.symbol.endswith("_PERP") for t in ticks)
    assert sample(ingestor, "ingestor_ticks_filtered_total") == coin_m
    assert all(zlib.crc32(t.symbol.encode()) % 4 == p
               for p in range(4) for batch in entries[p] for t in batch)
    assert all(len(entries[p]) == len(scenario) for p in range(4))  # one entry per frame
    expected = sorted((q.symbol, q.event_time_ms, q.price) for q in usdm)
    got = sorted((t.symbol, t.event_time_ms, t.price) for t in ticks)
    assert [(s, e) for s, e, _ in got] == [(s, e) for s, e, _ in expected]
    # Prices went through the exchange's decimal strings (about 8 significant digits).
    assert all(abs(g[2] - x[2]) <= x[2] * 1e-6 for g, x in zip(got, expected, strict=True))
    assert {t.source for t in ticks} == {"mini_ticker"}


async def test_raw_route_and_ticker_stream(redis_server: RedisServer) -> None:
    scenario = list(drifting_market(30, frames=3, start_ms=START_MS))
    async with FakeExchange(scenario, interval_s=0.02) as ex:
        url = ex.url("!ticker@arr", combined=False)
        settings = make_settings(redis_server.url, url)
        async with running(settings) as ingestor:
            total = sum(len(f) for f in scenario)
            await wait_until(lambda: ticks_published(ingestor) >= total, what="all ticks")
    ticks = await read_ticks(redis_server.url, 4)
    assert len(ticks) == total
    assert {t.source for t in ticks} == {"ticker"}


async def test_drop_reconnects_with_reason_closed_and_data_flows_again(
        redis_server: RedisServer) -> None:
    async with FakeExchange(drifting_market(50, start_ms=START_MS), interval_s=0.02) as ex:
        settings = make_settings(redis_server.url, ex.url())
        async with running(settings) as ingestor:
            await wait_until(lambda: ticks_published(ingestor) > 0, what="first ticks")
            await ex.drop()
            await wait_until(lambda: reconnects(ingestor, "closed") == 1, what="reconnect")
            await ex.wait_for_connections(2)
            before = ticks_published(ingestor)
            await wait_until(lambda: ticks_published(ingestor) > before + 50, what="data again")
        assert sample(ingestor, "ingestor_connected") == 0
    assert reconnects(ingestor, "stale") == 0


async def test_stall_reconnects_with_reason_stale_and_data_flows_again(
        redis_server: RedisServer) -> None:
    async with FakeExchange(drifting_market(50, start_ms=START_MS), interval_s=0.02) as ex:
        settings = make_settings(redis_server.url, ex.url(), stale_after_s=0.3)
        async with running(settings) as ingestor:
            await wait_until(lambda: ticks_published(ingestor) > 0, what="first ticks")
            ex.stall(0.8)
            await wait_until(lambda: reconnects(ingestor, "stale") >= 1, what="stale reconnect")
            await ex.wait_for_connections(2)
            await wait_until(lambda: not ex.stalled, what="resume")
            before = ticks_published(ingestor)
            await wait_until(lambda: ticks_published(ingestor) > before + 50, what="data again")
    assert reconnects(ingestor, "closed") == 0


async def test_silent_route_is_detected_as_stale(redis_server: RedisServer) -> None:
    # The retired /stream route connects and then sends nothing, like the real exchange.
    async with FakeExchange(drifting_market(5, start_ms=START_MS), interval_s=0.02) as ex:
        url = f"ws://127.0.0.1:{ex.port}/stream?streams=!miniTicker@arr"
        settings = make_settings(redis_server.url, url, stale_after_s=0.2)
        async with running(settings) as ingestor:
            await wait_until(lambda: reconnects(ingestor, "stale") >= 2, what="stale reconnects")
    assert ticks_published(ingestor) == 0


async def test_rotation_reconnects_before_the_exchange_would(redis_server: RedisServer) -> None:
    async with FakeExchange(drifting_market(20, start_ms=START_MS), interval_s=0.02) as ex:
        settings = make_settings(redis_server.url, ex.url(), rotate_after_s=0.4)
        async with running(settings) as ingestor:
            await wait_until(lambda: reconnects(ingestor, "rotated") >= 1, what="rotation")
            before = ticks_published(ingestor)
            await wait_until(lambda: ticks_published(ingestor) > before, what="data again")
    assert ex.connections_total >= 2


async def test_unreachable_exchange_is_retried_with_reason_error(
        redis_server: RedisServer) -> None:
    url = f"ws://127.0.0.1:{free_port()}/market/stream?streams=!miniTicker@arr"
    settings = make_settings(redis_server.url, url)
    async with running(settings) as ingestor:
        await wait_until(lambda: reconnects(ingestor, "error") >= 2, what="connect retries")
        assert ingestor.healthy()  # the writer is fine; the feed keeps trying


async def test_malformed_frames_are_counted_and_skipped(redis_server: RedisServer) -> None:
    async with FakeExchange(drifting_market(50, start_ms=START_MS), interval_s=0.02) as ex:
        settings = make_settings(redis_server.url, ex.url())
        async with running(settings) as ingestor:
            await wait_until(lambda: ticks_published(ingestor) > 0, what="first ticks")
            for kind in ("not_json", "truncated", "bad_price", "wrong_shape", "binary"):
                await ex.send_malformed(kind)
            await wait_until(lambda: sample(ingestor, "ingestor_bad_entries_total") == 1,
                             what="the bad price entry")
            before = ticks_published(ingestor)
            await wait_until(lambda: ticks_published(ingestor) > before + 50, what="data again")
        for kind in ("not_json", "truncated", "wrong_shape", "binary"):
            assert sample(ingestor, "ingestor_malformed_frames_total", {"kind": kind}) == 1
    assert reconnects(ingestor, "closed") + reconnects(ingestor, "error") == 0


async def test_server_pings_are_answered(redis_server: RedisServer) -> None:
    async with FakeExchange(drifting_market(5, start_ms=START_MS), interval_s=0.05) as ex:
        settings = make_settings(redis_server.url, ex.url())
        async with running(settings):
            await ex.wait_for_connections(1)
            await ex.ping()
            assert ex.pongs_received == 1


async def test_stops_promptly_and_serves_metrics_and_health(redis_server: RedisServer) -> None:
    async with FakeExchange(drifting_market(50, start_ms=START_MS), interval_s=0.02) as ex:
        settings = make_settings(redis_server.url, ex.url())
        async with running(settings, stop_within_s=3.0) as ingestor:
            await wait_until(lambda: ticks_published(ingestor) > 0, what="first ticks")
            base = f"http://127.0.0.1:{ingestor.health_port}"
            async with httpx.AsyncClient() as http:
                health = await http.get(f"{base}/healthz")
                scrape = await http.get(f"{base}/metrics")
            assert health.status_code == 200
            assert "ingestor_frames_received_total" in scrape.text
            assert "ingestor_seconds_since_last_frame" in scrape.text
            assert sample(ingestor, "ingestor_seconds_since_last_frame") < 2
            assert sample(ingestor, "ingestor_exchange_lag_seconds_count") > 0
        # Everything parsed before the stop was flushed.
        received = sample(ingestor, "ingestor_ticks_received_total")
        assert ticks_published(ingestor) == received
        assert len(await read_ticks(redis_server.url, 4)) == received
        assert not ingestor.healthy()


async def test_stop_with_the_bus_down_returns_within_the_deadline_and_accounts_for_every_tick(
        redis_server: RedisServer) -> None:
    async with FakeExchange(drifting_market(50, start_ms=START_MS), interval_s=0.02) as ex:
        loop = asyncio.get_running_loop()
        settings = make_settings(redis_server.url, ex.url(), shutdown_timeout_s=1.0,
                                 bus_timeout_s=0.5)
        async with running(settings, stop_within_s=2.0) as ingestor:
            await wait_until(lambda: ticks_published(ingestor) > 0, what="first ticks")
            redis_server.stop()
            await wait_until(lambda: sample(ingestor, "ingestor_publish_errors_total") > 0,
                             what="the writer noticing")
            await asyncio.sleep(0.1)
            assert ingestor.healthy()  # an outage is not a dead writer
            stopped = loop.time()
        assert loop.time() - stopped < 1.5
    received = sample(ingestor, "ingestor_ticks_received_total")
    dropped = sample(ingestor, "ingestor_ticks_dropped_total")
    assert dropped > 0
    assert ticks_published(ingestor) + dropped == received


async def test_backoff_grows_while_failing_and_resets_once_healthy(
        redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ingestor.feed")
    async with FakeExchange(drifting_market(20, start_ms=START_MS), interval_s=0.02) as ex:
        settings = make_settings(redis_server.url, ex.url(), reconnect_min_s=0.1,
                                 reconnect_max_s=10.0, healthy_after_s=0.4)
        async with running(settings) as ingestor:
            for n in range(1, 4):  # drop right after each connect: never healthy
                await ex.wait_for_connections(n)
                await wait_until(lambda: sample(ingestor, "ingestor_connected") == 1,
                                 what="connected")
                await ex.drop()
            await ex.wait_for_connections(4)
            await asyncio.sleep(0.8)  # delivering data for longer than HEALTHY_AFTER_S
            await ex.drop()
            await ex.wait_for_connections(5)
    delays = [float(m.group(1)) for r in caplog.records
              if (m := re.search(r"reconnecting to the exchange in ([\d.]+) s", r.getMessage()))]
    assert len(delays) == 4
    # Jittered halves of 0.1, 0.2, 0.4 ceilings, then back to the first step.
    assert 0.05 <= delays[0] <= 0.1
    assert 0.1 <= delays[1] <= 0.2
    assert 0.2 <= delays[2] <= 0.4
    assert 0.05 <= delays[3] <= 0.1
