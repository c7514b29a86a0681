"""The REST listing of the perpetuals, and the board's refreshes, against the exchange's answers,
rate limits included (httpx's mock transport: the real exchange's answers, scripted)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from common.settings import IngestorSettings, load_settings
from ingestor.board import Board
from ingestor.discovery import Discovery, DiscoveryFailed
from ingestor.metrics import IngestorMetrics, new_registry
from ingestor.parsing import Dedupe
from tests.support.ingestor import wait_until
from tools.redis_server import free_port

INFO: dict[str, Any] = {"symbols": [
    {"symbol": "ETHUSDT", "contractType": "PERPETUAL", "status": "TRADING"},
    {"symbol": "BTCUSDT", "contractType": "PERPETUAL", "status": "TRADING"},
    {"symbol": "BTCUSDT_250328", "contractType": "CURRENT_QUARTER", "status": "TRADING"}]}


async def listing(handler: Callable[[httpx.Request], httpx.Response]
                  ) -> tuple[list[str] | DiscoveryFailed, IngestorMetrics, list[str]]:
    seen: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return handler(request)
    metrics = IngestorMetrics(new_registry())
    async with httpx.AsyncClient(transport=httpx.MockTransport(record)) as client:
        discovery = Discovery(client, "https://fapi.example/", metrics)
        try:
            return await discovery.symbols(), metrics, seen
        except DiscoveryFailed as exc:
            return exc, metrics, seen


async def test_the_trading_perpetuals_sorted_and_the_weight_tracked() -> None:
    got, metrics, seen = await listing(lambda _: httpx.Response(
        200, json=INFO, headers={"X-MBX-USED-WEIGHT-1M": "7"}))
    assert got == ["BTCUSDT", "ETHUSDT"]
    assert seen == ["https://fapi.example/fapi/v1/exchangeInfo"]
    assert metrics.registry.get_sample_value("ingestor_rest_used_weight_1m") == 7


@pytest.mark.parametrize(("status", "headers", "reason", "retry_after"), [
    (429, {"Retry-After": "12"}, "rate_limited", 12.0),
    (418, {"Retry-After": "120"}, "banned", 120.0),
    (429, {}, "rate_limited", None),
    (418, {"Retry-After": "soon"}, "banned", None),
    (418, {"Retry-After": "99999999"}, "banned", 3600.0),
    (503, {}, "http_error", None),
    (403, {}, "http_error", None),
])
async def test_refusals_say_why_and_how_long_to_wait(status: int, headers: dict[str, str],
                                                     reason: str,
                                                     retry_after: float | None) -> None:
    got, _, _ = await listing(lambda _: httpx.Response(status, headers=headers))
    assert isinstance(got, DiscoveryFailed)
    assert (got.reason, got.retry_after_s) == (reason, retry_after)


@pytest.mark.parametrize("body", [b"<html>maintenance</html>", b'{"code": -1}', b"[]",
                                  b'{"symbols": 5}'])
async def test_an_answer_that_is_no_exchange_info_is_a_bad_response(body: bytes) -> None:
    got, _, _ = await listing(lambda _: httpx.Response(200, content=body))
    assert isinstance(got, DiscoveryFailed)
    assert got.reason == "bad_response"


async def test_no_answer_is_unreachable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)
    got, _, _ = await listing(refuse)
    assert isinstance(got, DiscoveryFailed)
    assert got.reason == "unreachable"


async def test_the_board_waits_out_retry_after_and_keeps_its_plan_meanwhile() -> None:
    """A refresh refused with Retry-After is not retried before it, however short
    SYMBOLS_REFRESH_S is; the plan in force stays; the next good answer applies."""
    loop = asyncio.get_running_loop()
    asked: list[float] = []
    answers = [httpx.Response(200, json=INFO),
               httpx.Response(429, headers={"Retry-After": "1.5"}),
               httpx.Response(200, json={"symbols": [*INFO["symbols"], {
                   "symbol": "NEWUSDT", "contractType": "PERPETUAL", "status": "TRADING"}]})]

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(loop.time())
        return answers[min(len(asked), len(answers)) - 1]
    settings = load_settings(IngestorSettings, feed="agg_trade", symbols_refresh_s=0.5,
                             binance_ws_base_url=f"ws://127.0.0.1:{free_port()}/market",
                             reconnect_min_s=0.5, reconnect_max_s=1.0)
    metrics = IngestorMetrics(new_registry())
    board = Board(settings, lambda ticks: None, metrics, Dedupe(),
                  http_transport=httpx.MockTransport(answer))
    stopping = asyncio.Event()
    task = asyncio.create_task(board.run(stopping))
    await wait_until(lambda: len(asked) >= 2, what="the refused refresh")
    assert board.plan.symbols == {"BTCUSDT", "ETHUSDT"}  # kept through the refusal
    await wait_until(lambda: len(asked) >= 3, timeout=5, what="the retry")
    assert asked[2] - asked[1] >= 1.5
    await wait_until(lambda: "NEWUSDT" in board.plan.symbols, what="the next listing")
    assert metrics.registry.get_sample_value(
        "ingestor_rest_failures_total", {"reason": "rate_limited"}) == 1
    started = loop.time()
    stopping.set()
    await asyncio.wait_for(task, 5)
    assert loop.time() - started < 3
    assert board.stop_requested_at is not None
