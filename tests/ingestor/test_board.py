"""FEED=agg_trade in process, against the fake exchange's trade market over real sockets and
a real Redis: discovery, sharding, refreshes, make-before-break rotation, the exchange's
message limit."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from common.schemas import FUNDING, LIQUIDATION, PRICE
from common.settings import IngestorSettings
from fake_exchange import FakeExchange
from fake_exchange.trades import Trade, TradeTapes
from tests.support.exchange import ExchangeControl, ExchangeStats, trade_exchange
from tests.support.ingestor import (
    RunningIngestor,
    make_settings,
    read_ticks,
    running,
    sample,
    wait_until,
)
from tests.support.servers import RedisServer

pytestmark = pytest.mark.usefixtures("ws_client")


def board_settings(redis_url: str, fx: FakeExchange, **overrides: Any) -> IngestorSettings:
    values: dict[str, Any] = {"feed": "agg_trade", "binance_rest_url": fx.rest_url,
                              "binance_ws_base_url": fx.ws_base_url, "flush_ms": 5}
    values.update(overrides)
    return make_settings(redis_url, fx.url(), **values)


def published(ingestor: RunningIngestor) -> float:
    return sample(ingestor, "ingestor_ticks_published_total")


def assert_within_the_message_limit(stats: ExchangeStats) -> None:
    """The exchange's limit is 10 messages/s per connection; ours is 5."""
    assert stats.rate_violations == 0
    assert all(c.max_messages_per_s <= 5 for c in stats.connections), stats.connections
    assert not [c for c in stats.connections if c.closed_for not in (None, "client")
                and "rate" in str(c.closed_for)]


async def open_streams(control: ExchangeControl) -> list[int]:
    stats = await control.stats()
    return sorted(c.streams for c in stats.connections if c.open)


async def test_650_symbols_are_read_on_4_connections_with_every_kind_of_tick(
        redis_server: RedisServer) -> None:
    async with trade_exchange(650, trades_per_s=2000) as fx, \
            ExchangeControl(fx.rest_url) as control:
        settings = board_settings(redis_server.url, fx)
        async with running(settings) as ingestor:
            await wait_until(lambda: sample(ingestor, "ingestor_connections_open") == 4,
                             what="4 connections")
            assert sample(ingestor, "ingestor_symbols_listed") == 650  # extras filtered
            assert sample(ingestor, "ingestor_connected") == 1
            assert [sample(ingestor, "ingestor_connection_streams", {"connection": str(c)})
                    for c in range(4)] == [200, 200, 200, 52]
            await wait_until(lambda: published(ingestor) > 3000, what="trades published")
            await control.cascade("SYM007USDT", "SELL", 2_000_000, orders=2)

            async def kinds() -> set[int]:
                return {t.kind for t in await read_ticks(redis_server.url, 4)}
            await wait_until(lambda: _has(kinds(), {PRICE, FUNDING, LIQUIDATION}),
                             timeout=15, what="every kind on the bus")
            assert await open_streams(control) == [52, 200, 200, 200]
            stats = await control.stats()
        assert_within_the_message_limit(stats)
        assert stats.rest_requests >= 1
        # Stopped: every socket closed with a handshake, none left open behind.
        await wait_until(lambda: fx.active_connections == 0, timeout=3, what="closed")
    assert sample(ingestor, "ingestor_symbol_refreshes_total") >= 1
    assert sample(ingestor, "ingestor_connected") == 0


async def _has(got: Awaitable[set[int]], wanted: set[int]) -> bool:
    return wanted <= await got


async def test_a_listing_and_a_delisting_are_picked_up_by_a_refresh(
        redis_server: RedisServer) -> None:
    async with trade_exchange(250, trades_per_s=1000) as fx, \
            ExchangeControl(fx.rest_url) as control:
        settings = board_settings(redis_server.url, fx, symbols_refresh_s=0.5)
        async with running(settings) as ingestor:
            await wait_until(lambda: sample(ingestor, "ingestor_connections_open") == 2,
                             what="2 connections")
            assert await open_streams(control) == [52, 200]
            await control.list_symbol("NEWUSDT", 3.5)
            await wait_until(lambda: sample(ingestor, "ingestor_symbols_listed") == 251,
                             what="the listing")
            await wait_until(lambda: sample(ingestor, "ingestor_subscription_messages_total",
                                            {"method": "SUBSCRIBE"}) == 1, what="SUBSCRIBE")

            async def new_symbol_ticks() -> bool:
                return any(t.symbol == "NEWUSDT" for t in await read_ticks(redis_server.url, 4))
            await wait_until(new_symbol_ticks, what="the new symbol's trades")
            assert await open_streams(control) == [53, 200]  # it went where there was room

            await control.delist("SYM003USDT")
            await wait_until(lambda: sample(ingestor, "ingestor_symbols_listed") == 250,
                             what="the delisting")
            await wait_until(lambda: sample(ingestor, "ingestor_subscription_messages_total",
                                            {"method": "UNSUBSCRIBE"}) == 1,
                             what="UNSUBSCRIBE")
            await wait_until(lambda: _streams_are(control, [53, 199]), what="unsubscribed")
            stats = await control.stats()
        assert_within_the_message_limit(stats)
        assert sum(c.subscribe_messages for c in stats.connections) == 1
        assert sum(c.unsubscribe_messages for c in stats.connections) == 1
        assert sum(c.errors for c in stats.connections) == 0
    assert sample(ingestor, "ingestor_subscription_errors_total") == 0
    assert sample(ingestor, "ingestor_connections_open") == 0


async def _streams_are(control: ExchangeControl, wanted: list[int]) -> bool:
    return await open_streams(control) == wanted


async def test_the_board_survives_the_rest_api_refusing_and_keeps_its_connections(
        redis_server: RedisServer) -> None:
    # Two requests of weight 1 a minute: the third refresh is refused with 429. The fake's
    # weight resets at each wall-clock minute, as Binance's does, so start early in one.
    left_in_minute_s = 60 - time.time() % 60
    if left_in_minute_s < 20:
        await asyncio.sleep(left_in_minute_s + 0.1)
    async with trade_exchange(50, trades_per_s=500, weight_limit=2) as fx:
        settings = board_settings(redis_server.url, fx, symbols_refresh_s=0.5)
        async with running(settings) as ingestor:
            await wait_until(lambda: sample(ingestor, "ingestor_rest_failures_total",
                                            {"reason": "rate_limited"}) >= 2,
                             what="refused refreshes")
            assert sample(ingestor, "ingestor_symbols_listed") == 50
            assert sample(ingestor, "ingestor_connections_open") == 1
            assert sample(ingestor, "ingestor_rest_used_weight_1m") >= 2
            before = published(ingestor)
            await wait_until(lambda: published(ingestor) > before + 100,
                             what="trades still flowing")
            assert ingestor.healthy()
        assert sample(ingestor, "ingestor_symbol_refreshes_total") in (1, 2)


@contextmanager
def generated_trades(tapes: TradeTapes) -> Iterator[list[Trade]]:
    """Every trade the fake's market makes while inside: the agg ids seen at the fake."""
    made: list[Trade] = []
    original = tapes.tick

    def tick(*args: Any, **kwargs: Any) -> list[Trade]:
        out = original(*args, **kwargs)
        made.extend(out)
        return out
    tapes.tick = tick  # type: ignore[method-assign]
    try:
        yield made
    finally:
        tapes.tick = original  # type: ignore[method-assign]


async def test_make_before_break_rotation_loses_and_doubles_no_trade(
        redis_server: RedisServer) -> None:
    async with trade_exchange(250, trades_per_s=1500, extras=False) as fx, \
            ExchangeControl(fx.rest_url) as control:
        assert fx.market is not None
        settings = board_settings(redis_server.url, fx, rotate_after_s=1.5)
        with generated_trades(fx.market.tapes) as made:
            async with running(settings) as ingestor:
                await wait_until(lambda: sample(ingestor, "ingestor_connections_open") == 2,
                                 what="2 connections")
                await wait_until(lambda: published(ingestor) > 500, what="trades flowing")
                start = len(made)  # from here every trade must be on the bus once
                await wait_until(lambda: sample(ingestor, "ingestor_reconnects_total",
                                                {"reason": "rotated"}) >= 4,
                                 timeout=20, what="two rotations of each connection")
                end = len(made)
                await control.set_rate(0)
                await asyncio.sleep(0.5)  # what is in flight lands
                stats = await control.stats()
        assert sample(ingestor, "ingestor_duplicates_dropped_total") > 0  # they overlapped
        for reason in ("closed", "stale", "error"):
            assert sample(ingestor, "ingestor_reconnects_total", {"reason": reason}) == 0
    on_bus = Counter((t.symbol, t.event_time_ms, t.price, t.quantity)
                     for t in await read_ticks(redis_server.url, 4) if t.kind == PRICE)
    generated: Counter[tuple[str, int, float, float | None]] = Counter(
        (s, t, float(p), float(q)) for s, _, p, q, _, _, t, _ in made)
    window = [(s, t, float(p), float(q)) for s, _, p, q, _, _, t, _ in made[start:end]]
    assert len(window) > 3000
    missing = [trade for trade in window if on_bus[trade] == 0]
    assert missing == []
    doubled = {trade: n for trade, n in on_bus.items() if n > generated[trade]}
    assert doubled == {}
    assert stats.connections_total >= 6  # 2 connections, each rotated twice
    assert_within_the_message_limit(stats)
