"""The REST listing of the perpetuals against the exchange's answers, rate limits included
(httpx's mock transport: the answers of the real exchange, not a server of ours)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from ingestor.discovery import Discovery, DiscoveryFailed
from ingestor.metrics import IngestorMetrics, new_registry

INFO = {"symbols": [
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
