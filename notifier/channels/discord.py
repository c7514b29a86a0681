"""Discord: a channel webhook, ``POST {url}?wait=true`` with one embed.

``wait=true`` makes Discord answer with the message it created (its id is the detail for
``notify-test``) instead of an empty 204, so a message that Discord refused is never
mistaken for one it took. ``allowed_mentions`` is empty: no symbol or rule name can ping
``@everyone``.

Budget: Discord documents no fixed webhook limit and tells clients to follow the
``X-RateLimit-*`` headers; in practice a webhook takes 5 requests per 2 s and 30 a minute
per channel, so those are the budget, and an answer with ``X-RateLimit-Remaining: 0``
pauses the channel for ``X-RateLimit-Reset-After`` (``Accepted.pause_s``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

import httpx

from common.schemas import Alert
from notifier import alert_text
from notifier.channels.base import (
    Accepted,
    Answer,
    Budget,
    Channel,
    Limit,
    RateLimited,
    Refused,
    Transient,
    own_limits,
    retry_after_header,
)
from notifier.channels.posting import HttpChannel, clip, fitting, json_object
from notifier.config import DiscordChannel

# Discord's embed limits (characters).
MAX_TITLE: Final = 256
MAX_DESCRIPTION: Final = 4096
MAX_FIELDS: Final = 25
MAX_FIELD_NAME: Final = 256
MAX_FIELD_VALUE: Final = 1024
MAX_EMBED_TOTAL: Final = 6000

GREEN: Final = 0x2ECC71
RED: Final = 0xE74C3C
# What Discord's markdown gives a meaning to (``(`` only after a ``]``, and ``[`` is escaped);
# a backslash before any of them shows it as is.
_MARKDOWN: Final = re.compile(r"([\\*_~`|>\[\]<#])")


def create(config: DiscordChannel, *, timeout_s: float) -> Channel:
    return DiscordWebhook(config, timeout_s=timeout_s)


def budget_of(config: DiscordChannel) -> Budget:
    return Budget(own_limits((Limit(5, 2.0), Limit(30, 60.0)), config.max_per_minute))


def escape(text: str) -> str:
    return _MARKDOWN.sub(r"\\\1", text)


def color(alert: Alert) -> int:
    return GREEN if alert.direction == "up" else RED


def iso_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def single_embed(alert: Alert) -> dict[str, Any]:
    """The headline as the title, linked to the chart; one inline field per fact."""
    return {
        "title": clip(escape(alert_text.headline(alert)), MAX_TITLE),
        "url": alert_text.chart_url(alert.symbol),
        "color": color(alert),
        "timestamp": iso_time(alert.event_time_ms),
        "fields": [{"name": clip(escape(label), MAX_FIELD_NAME),
                    "value": clip(escape(value), MAX_FIELD_VALUE), "inline": True}
                   for label, value in alert_text.facts(alert)][:MAX_FIELDS],
    }


def digest_embed(alerts: Sequence[Alert], listed: int) -> dict[str, Any]:
    """The count as the title; one markdown-linked line per alert listed, then the rest.
    Coloured and timed by the most significant (the first) alert."""
    lines = [alert_text.short_line(a, f"[{escape(a.symbol)}]({alert_text.chart_url(a.symbol)})")
             for a in alerts[:listed]]
    rest = alert_text.digest_rest(alerts, min(listed, len(alerts)))
    if rest is not None:
        lines.append(escape(rest))
    lines += [escape(note) for note in alert_text.digest_notes(alerts[:listed])]
    return {
        "title": clip(escape(alert_text.digest_title(alerts)), MAX_TITLE),
        "description": "\n".join(lines),
        "color": color(alerts[0]),
        "timestamp": iso_time(max(a.event_time_ms for a in alerts)),
    }


def embed_size(embed: dict[str, Any]) -> int:
    """What Discord counts against the 6000 characters of an embed."""
    fields = embed.get("fields", [])
    return (len(embed.get("title", "")) + len(embed.get("description", ""))
            + sum(len(f["name"]) + len(f["value"]) for f in fields))


def fits(embed: dict[str, Any]) -> bool:
    return (len(embed.get("description", "")) <= MAX_DESCRIPTION
            and embed_size(embed) <= MAX_EMBED_TOTAL)


def message_embed(alerts: Sequence[Alert]) -> dict[str, Any]:
    if len(alerts) == 1:
        return single_embed(alerts[0])
    return fitting(lambda n: digest_embed(alerts, n), fits)


class DiscordWebhook(HttpChannel):
    kind = "discord"

    def __init__(self, config: DiscordChannel, *, timeout_s: float) -> None:
        super().__init__(config.name, budget_of(config), timeout_s=timeout_s)
        self._url = config.url
        self._username = config.username

    def request_body(self, alerts: Sequence[Alert]) -> dict[str, Any]:
        body: dict[str, Any] = {"embeds": [message_embed(alerts)],
                                "allowed_mentions": {"parse": []}}
        if self._username:
            body["username"] = self._username
        return body

    async def send(self, alerts: Sequence[Alert]) -> Answer:
        response = await self.post(self._url, self.request_body(alerts), {"wait": "true"})
        return response if isinstance(response, Transient) else classify(response)


def _seconds(value: object) -> float | None:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return seconds if seconds >= 0 else None


def classify(response: httpx.Response) -> Answer:
    """Discord's answer: the message (2xx), or ``{"message", "code"}`` (an error), or
    ``{"message", "retry_after", "global"}`` (429). The detail is Discord's message and code
    (neither ever quotes the webhook's token)."""
    status = response.status_code
    data = json_object(response)
    if 200 <= status < 300:
        pause = 0.0
        if response.headers.get("x-ratelimit-remaining") == "0":
            pause = _seconds(response.headers.get("x-ratelimit-reset-after")) or 0.0
        return Accepted(status, str(data.get("id", "")), pause)
    message = str(data.get("message") or f"HTTP {status}")[:200]
    code = data.get("code")
    detail = f"{message} (code {code})" if code is not None else message
    if status == 429:
        seconds = _seconds(data.get("retry_after"))
        if seconds is None:
            seconds = retry_after_header(response.headers)
        scope = "global" if data.get("global") is True else "webhook"
        return RateLimited(seconds, f"{scope}: {detail}")
    if status in (408, 425) or status >= 500:
        return Transient(f"http_{status}", detail)
    return Refused(f"http_{status}", detail)
