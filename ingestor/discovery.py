"""The tradable perpetuals, from the exchange's REST ``GET /fapi/v1/exchangeInfo``.

The exchange meters REST by weight per IP and minute (``X-MBX-USED-WEIGHT-1M`` on every
answer; exchangeInfo weighs 1, the budget is 2400) and answers 429 when it is spent, then
418 (a ban of minutes to days) to a client that keeps asking: both carry ``Retry-After``,
which the next attempt waits for at least. Every failure is a ``DiscoveryFailed`` naming a
reason (``ingestor.metrics.REST_FAILURES``); the caller keeps the board it has.
"""

from __future__ import annotations

import logging
from typing import Final

import httpx

from ingestor.metrics import IngestorMetrics
from ingestor.sharding import tradable_perpetuals

log = logging.getLogger(__name__)

EXCHANGE_INFO_PATH: Final = "/fapi/v1/exchangeInfo"
REQUEST_TIMEOUT_S: Final = 10.0
WEIGHT_LIMIT_1M: Final = 2400
# Used weight above this share of the minute's budget is worth a warning: another client
# on this IP is spending it.
WEIGHT_WARNING_SHARE: Final = 0.8
MAX_RETRY_AFTER_S: Final = 3600.0


class DiscoveryFailed(Exception):
    def __init__(self, reason: str, detail: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.retry_after_s = retry_after_s


class Discovery:
    def __init__(self, client: httpx.AsyncClient, rest_url: str,
                 metrics: IngestorMetrics) -> None:
        self._client = client
        self._url = rest_url.rstrip("/") + EXCHANGE_INFO_PATH
        self._metrics = metrics

    async def symbols(self) -> list[str]:
        """The symbols to watch, sorted; ``DiscoveryFailed`` when the exchange cannot say."""
        try:
            response = await self._client.get(self._url, timeout=REQUEST_TIMEOUT_S)
        except httpx.HTTPError as exc:
            raise DiscoveryFailed("unreachable", repr(exc)) from None
        self._track_weight(response)
        status = response.status_code
        if status in (429, 418):
            raise DiscoveryFailed("rate_limited" if status == 429 else "banned",
                                  f"HTTP {status}", _retry_after(response))
        if status != 200:
            raise DiscoveryFailed("http_error", f"HTTP {status}", _retry_after(response))
        try:
            return tradable_perpetuals(response.json())
        except ValueError as exc:  # not JSON (json's error is one), or no exchangeInfo
            raise DiscoveryFailed("bad_response", str(exc)[:200]) from None

    def _track_weight(self, response: httpx.Response) -> None:
        used = response.headers.get("X-MBX-USED-WEIGHT-1M")
        if used is None or not used.isdigit():
            return
        weight = int(used)
        self._metrics.rest_used_weight.set(weight)
        if weight >= WEIGHT_LIMIT_1M * WEIGHT_WARNING_SHARE:
            log.warning("REST weight %d of %d used this minute on this IP", weight,
                        WEIGHT_LIMIT_1M)


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (the exchange sends seconds; a date is not expected)."""
    value = response.headers.get("Retry-After", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S) if seconds == seconds else None
