"""Telegram: the Bot API's ``sendMessage`` in HTML parse mode.

HTML rather than MarkdownV2 because its escaping is three characters (``& < >``, plus
``"`` inside an attribute) where MarkdownV2 has eighteen; Telegram rejects the whole
message ("can't parse entities") on one mistake, so every dynamic text is escaped here and
only tags Telegram allows are written (``<b>``, ``<a href>``).

Budget: Telegram asks bots for at most one message a second in a chat and twenty a minute
in a group (a ``chat_id`` starting with ``-``), and thirty a second per bot across all its
chats: the shared key is a hash of the token, so two channels on one bot share those 30/s
without the token appearing in a metric or a log line.
"""

from __future__ import annotations

import hashlib
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
from notifier.channels.posting import HttpChannel, fitting, json_object
from notifier.config import TelegramChannel

# sendMessage's limit, counted on the text after the entities are parsed; the HTML is
# longer than that, so a message whose HTML fits surely fits.
MAX_TEXT: Final = 4096
CHART_LINK_TEXT: Final = "Chart on TradingView"


def create(config: TelegramChannel, *, timeout_s: float) -> Channel:
    return TelegramBot(config, timeout_s=timeout_s)


def budget_of(config: TelegramChannel) -> Budget:
    limits = (Limit(1, 1.0), Limit(20, 60.0)) if is_group(config.chat_id) else (Limit(1, 1.0),)
    bot = hashlib.sha256(config.token.encode()).hexdigest()[:16]
    return Budget(own_limits(limits, config.max_per_minute), f"telegram:{bot}",
                  (Limit(30, 1.0),))


def is_group(chat_id: str) -> bool:
    """Groups, supergroups and channels have negative ids (supergroups ``-100…``)."""
    return chat_id.startswith("-")


def escape(text: str, *, attribute: bool = False) -> str:
    """Telegram's HTML escaping: ``& < >`` everywhere, ``"`` too inside an attribute.
    Only the named entities ``&lt; &gt; &amp; &quot;`` are used: Telegram knows no others."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace('"', "&quot;") if attribute else text


def link(url: str, text: str) -> str:
    return f'<a href="{escape(url, attribute=True)}">{escape(text)}</a>'


def single_html(alert: Alert) -> str:
    """The headline in bold, one line per fact, the chart link."""
    lines = [f"<b>{escape(alert_text.headline(alert))}</b>", ""]
    lines += [f"{escape(label)}: {escape(value)}" for label, value in alert_text.facts(alert)]
    lines += ["", link(alert_text.chart_url(alert.symbol), CHART_LINK_TEXT)]
    return "\n".join(lines)


def digest_html(alerts: Sequence[Alert], listed: int) -> str:
    """The title in bold, then one line per alert listed, its symbol linked to its chart,
    then how many more there were."""
    lines = [f"<b>{escape(alert_text.digest_title(alerts))}</b>"]
    lines += [alert_text.short_line(a, link(alert_text.chart_url(a.symbol), a.symbol))
              for a in alerts[:listed]]
    rest = alert_text.digest_rest(alerts, min(listed, len(alerts)))
    if rest is not None:
        lines.append(escape(rest))
    lines += [escape(note) for note in alert_text.digest_notes(alerts[:listed])]
    return "\n".join(lines)


def message_html(alerts: Sequence[Alert]) -> str:
    if len(alerts) == 1:
        return single_html(alerts[0])
    return fitting(lambda n: digest_html(alerts, n), lambda text: len(text) <= MAX_TEXT)


class TelegramBot(HttpChannel):
    kind = "telegram"

    def __init__(self, config: TelegramChannel, *, timeout_s: float) -> None:
        super().__init__(config.name, budget_of(config), timeout_s=timeout_s)
        self._url = f"{config.api_url.rstrip('/')}/bot{config.token}/sendMessage"
        self._chat_id = config.chat_id

    def request_body(self, alerts: Sequence[Alert]) -> dict[str, Any]:
        return {"chat_id": self._chat_id, "text": message_html(alerts), "parse_mode": "HTML",
                "link_preview_options": {"is_disabled": True}}

    async def send(self, alerts: Sequence[Alert]) -> Answer:
        response = await self.post(self._url, self.request_body(alerts))
        return response if isinstance(response, Transient) else classify(response)


def classify(response: httpx.Response) -> Answer:
    """The Bot API's answer: ``{"ok": true, "result": {...}}`` or ``{"ok": false,
    "error_code": …, "description": …, "parameters": {"retry_after": …}}``. The detail is
    Telegram's ``description`` (it never quotes the token, which only the URL holds)."""
    status = response.status_code
    data = json_object(response)
    description = str(data.get("description") or f"HTTP {status}")[:300]
    parameters = data.get("parameters")
    parameters = parameters if isinstance(parameters, dict) else {}
    if 200 <= status < 300 and data.get("ok") is True:
        result = data.get("result")
        message_id = result.get("message_id") if isinstance(result, dict) else None
        return Accepted(status, str(message_id))
    if status == 429:
        retry_after = parameters.get("retry_after")
        seconds = (float(retry_after) if isinstance(retry_after, int | float) and retry_after >= 0
                   else retry_after_header(response.headers))
        return RateLimited(seconds, description)
    if status in (408, 425) or status >= 500 or 200 <= status < 300:
        # A 2xx that is not the API's ``ok`` is a proxy in the way: worth another try.
        return Transient(f"http_{status}", description)
    migrate_to = parameters.get("migrate_to_chat_id")
    if migrate_to is not None:
        # A group upgraded to a supergroup has a new id: say which.
        description += f" (the chat is now {migrate_to}: set chat_id to it)"
    return Refused(f"http_{status}", description)
