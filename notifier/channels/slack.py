"""Slack: an incoming webhook, ``POST {url}`` with ``text`` (the notification's fallback)
and Block Kit ``blocks``.

Slack's mrkdwn has no escape for ``*`` or ``_``; what it does need escaped is ``& < >``
(``<…>`` is its link and mention syntax), so those are escaped in every dynamic text, and
links are written ``<url|text>``. The header block is ``plain_text``, shown as written.

An incoming webhook answers ``200 ok``; an error is a short text body (``invalid_blocks``,
``invalid_token``, ``no_service``, ``channel_is_archived``…), which becomes the refusal's
detail. Budget: Slack allows one message a second per webhook (short bursts tolerated).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
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
from notifier.channels.posting import HttpChannel, clip, fitting
from notifier.config import SlackChannel

MAX_BLOCKS: Final = 50
MAX_HEADER: Final = 150
MAX_SECTION_TEXT: Final = 3000
MAX_FIELD_TEXT: Final = 2000
MAX_FIELDS: Final = 10
CHART_LINK_TEXT: Final = "Chart on TradingView"
# Slack's error answers are codes like ``invalid_blocks``; anything else (a proxy's page)
# is not quoted.
_ERROR_CODE: Final = re.compile(r"[a-z_]{1,60}")


def create(config: SlackChannel, *, timeout_s: float) -> Channel:
    return SlackWebhook(config, timeout_s=timeout_s)


def budget_of(config: SlackChannel) -> Budget:
    return Budget(own_limits((Limit(1, 1.0),), config.max_per_minute))


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def link(url: str, text: str) -> str:
    # ``|`` ends the URL part; chart URLs are percent-encoded, so only the text can hold one.
    return f"<{escape(url)}|{escape(text)}>"


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": clip(text, MAX_HEADER)}}


def _section(mrkdwn: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn}}


def single_message(alert: Alert) -> dict[str, Any]:
    """A header with the headline, a section of fields (one per fact), the chart link."""
    chart = alert_text.chart_url(alert.symbol)
    fields = [{"type": "mrkdwn", "text": clip(f"*{escape(label)}*\n{escape(value)}",
                                              MAX_FIELD_TEXT)}
              for label, value in alert_text.facts(alert)][:MAX_FIELDS]
    headline = alert_text.headline(alert)
    return {
        "text": f"{escape(headline)} {link(chart, CHART_LINK_TEXT)}",
        "blocks": [_header(headline), {"type": "section", "fields": fields},
                   _section(link(chart, CHART_LINK_TEXT))],
    }


def digest_message(alerts: Sequence[Alert], listed: int) -> dict[str, Any]:
    """A header with the count; the alerts listed, their symbols linked to their charts,
    in as few sections as their length allows; then how many more there were."""
    title = alert_text.digest_title(alerts)
    lines = [alert_text.short_line(a, link(alert_text.chart_url(a.symbol), a.symbol))
             for a in alerts[:listed]]
    rest = alert_text.digest_rest(alerts, min(listed, len(alerts)))
    if rest is not None:
        lines.append(escape(rest))
    lines += [escape(note) for note in alert_text.digest_notes(alerts[:listed])]
    return {"text": escape(title), "blocks": [_header(title), *map(_section, packed(lines))]}


def packed(lines: list[str]) -> list[str]:
    """``lines`` joined into as few texts of at most ``MAX_SECTION_TEXT`` as their order
    allows (a line longer than that stays alone, and ``fits`` says no)."""
    texts: list[str] = []
    for line in lines:
        if texts and len(texts[-1]) + 1 + len(line) <= MAX_SECTION_TEXT:
            texts[-1] += "\n" + line
        else:
            texts.append(line)
    return texts


def fits(message: dict[str, Any]) -> bool:
    blocks = message["blocks"]
    return len(blocks) <= MAX_BLOCKS and all(
        len(b["text"]["text"]) <= MAX_SECTION_TEXT for b in blocks if b["type"] == "section")


def message_of(alerts: Sequence[Alert]) -> dict[str, Any]:
    if len(alerts) == 1:
        return single_message(alerts[0])
    return fitting(lambda n: digest_message(alerts, n), fits)


class SlackWebhook(HttpChannel):
    kind = "slack"

    def __init__(self, config: SlackChannel, *, timeout_s: float) -> None:
        super().__init__(config.name, budget_of(config), timeout_s=timeout_s)
        self._url = config.url

    async def send(self, alerts: Sequence[Alert]) -> Answer:
        response = await self.post(self._url, message_of(alerts))
        return response if isinstance(response, Transient) else classify(response)


def classify(response: httpx.Response) -> Answer:
    status = response.status_code
    body = response.text.strip()
    detail = body if _ERROR_CODE.fullmatch(body) else f"HTTP {status}"
    if 200 <= status < 300:
        return Accepted(status, detail)
    if status == 429:
        return RateLimited(retry_after_header(response.headers), detail)
    if status in (408, 425) or status >= 500:
        return Transient(f"http_{status}", detail)
    return Refused(f"http_{status}", detail)
