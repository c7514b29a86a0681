"""What a channel is to the notifier, and what a channel's API answered.

A channel turns alerts into one API request and classifies the answer; it keeps no queue,
never retries and never sleeps: pacing, retries, digests and acknowledgement are the
dispatcher's (``notifier.dispatch``), the same for every channel. So a channel module is a
renderer plus one ``send``, and a new channel type is a module and a registry line.

``send`` gets one alert (the single message) or several (a digest of the alerts that
waited, ``alert_text.by_significance`` order). It never raises for what the API or the
network did: every outcome is an ``Answer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import httpx

from common.schemas import Alert
from common.settings import SettingsError

# httpcore loads its asyncio backend (anyio's) on a client's first request: 40-65 ms that
# the first alert after every start would wait. Loaded here, at start, instead (a private
# module of anyio's: if it moves, the first alert just pays the import again).
with contextlib.suppress(ImportError):
    importlib.import_module("anyio._backends._asyncio")

# Most alerts listed one by one in a digest; the rest are counted in its last line.
DIGEST_LISTED: Final = 20


@dataclass(frozen=True, slots=True)
class Accepted:
    """The API took the message. ``detail``: what it answered (a message id), for
    ``notify-test``. ``pause_s``: the API said the next request must wait this long
    (Discord's ``X-RateLimit-Remaining: 0`` with ``X-RateLimit-Reset-After``)."""

    status: int
    detail: str = ""
    pause_s: float = 0.0


@dataclass(frozen=True, slots=True)
class RateLimited:
    """429: try again after ``retry_after_s`` (the API's own figure)."""

    retry_after_s: float
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Transient:
    """5xx, a timeout or a lost connection: retry with backoff. ``reason`` is a short
    label for metrics (``http_503``, ``timeout``, ``connect``)."""

    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Refused:
    """A permanent refusal (400, 401, 403, 404…): never retried; the channel is marked
    failing and the alerts go to ``notifications.dead``."""

    reason: str
    detail: str = ""


Answer = Accepted | RateLimited | Transient | Refused


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``count`` messages in any ``period_s`` seconds."""

    count: int
    period_s: float


@dataclass(frozen=True, slots=True)
class Budget:
    """The pacing a channel needs: its own limits, and those of a budget it shares with
    other channels under ``shared_key`` (a Telegram bot's 30/s across its chats)."""

    limits: tuple[Limit, ...]
    shared_key: str | None = None
    shared_limits: tuple[Limit, ...] = ()


class Channel(Protocol):
    """A configured destination. ``human`` channels get digests in a burst; the others
    (webhooks) get every alert by itself."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def human(self) -> bool: ...

    @property
    def budget(self) -> Budget: ...

    async def send(self, alerts: Sequence[Alert]) -> Answer:
        """One request carrying ``alerts`` (one: the single message; more: a digest)."""
        ...

    async def aclose(self) -> None:
        """Release the connection pool; idempotent."""
        ...


def retry_after_header(headers: Mapping[str, str], default_s: float = 1.0) -> float:
    """``Retry-After`` in seconds (RFC 9110 allows a date too; a date or a missing or
    negative value counts as ``default_s``)."""
    try:
        seconds = float(headers.get("retry-after", ""))
    except ValueError:
        return default_s
    return seconds if seconds >= 0 else default_s


def classify_http(response: httpx.Response, *, accepted_detail: str = "") -> Answer:
    """The usual HTTP answer: 2xx accepted; 429 rate limited (``Retry-After``); 408, 425
    and 5xx transient; any other 4xx refused. APIs with their own 429 body (Telegram,
    Discord) look at it before calling this."""
    status = response.status_code
    if 200 <= status < 300:
        return Accepted(status, accepted_detail)
    detail = f"{status} {response.text[:300]}".strip()
    if status == 429:
        return RateLimited(retry_after_header(response.headers), detail)
    if status in (408, 425) or status >= 500:
        return Transient(f"http_{status}", detail)
    return Refused(f"http_{status}", detail)


def transport_failure(exc: httpx.HTTPError) -> Transient:
    """A request that got no answer: a timeout or a connection that failed. The detail is
    the exception's class only: httpx's text may quote the URL, which for Telegram,
    Discord, Slack and Apprise carries the secret."""
    reason = "timeout" if isinstance(exc, httpx.TimeoutException) else "connect"
    return Transient(reason, type(exc).__name__)


async def post(client: httpx.AsyncClient, url: str, *, content: bytes, timeout_s: float,
               headers: Mapping[str, str] | None = None,
               params: Mapping[str, str] | None = None) -> httpx.Response | Transient:
    """POST ``content`` under one deadline over the whole request (httpx bounds each phase
    only, so an answer trickling in a byte at a time would never time out); a request
    that got no answer in time is a ``Transient``."""
    try:
        async with asyncio.timeout(timeout_s):
            return await client.post(url, content=content, headers=headers, params=params)
    except httpx.HTTPError as exc:
        return transport_failure(exc)
    except TimeoutError:
        return Transient("timeout", f"no answer within {timeout_s:g} s")


def http_client(timeout_s: float, headers: Mapping[str, str] | None = None
                ) -> httpx.AsyncClient:
    """A channel's one pooled client. No redirects: a 3xx is the API's answer, not a place
    to send the secret to."""
    return httpx.AsyncClient(timeout=timeout_s, headers=headers, follow_redirects=False)


def own_limits(limits: Sequence[Limit], max_per_minute: int | None) -> tuple[Limit, ...]:
    """A channel's default ``limits``, plus ``Limit(max_per_minute, 60)`` when its config
    sets one (it only ever narrows the API's limits)."""
    extra = () if max_per_minute is None else (Limit(max_per_minute, 60.0),)
    return (*limits, *extra)


def setting_error(channel: str, field: str, reason: str) -> SettingsError:
    """The error ``create`` raises for a field it cannot use: it names the channel and the
    field; ``reason`` must never quote the value (it may be a secret)."""
    return SettingsError(f"channel {channel!r}: {field}: {reason}")
