"""ntfy (https://ntfy.sh or a self-hosted server): a push to the phones subscribed to a
topic.

Published as JSON to the server's root (``{"topic", "title", "message", …}``) rather than
with ``Title:``/``Tags:`` headers: header values are Latin-1 on the wire, and the title
carries ``▲``/``▼`` and a real minus sign. The message is plain text (not every ntfy client
renders Markdown), its ``click`` opens the TradingView chart (a digest's: its most
significant alert's) and a digest gets "view" buttons for its first three charts, ntfy's
maximum. Priority: the configured one, else 4 (high) for a first move and 5 (urgent) when
an escalation is among the alerts.

Pacing: ntfy.sh lets a visitor burst 60 requests, then refills one every 5 s; 60 per 5 min
stays within that, and 1/s keeps a phone from buzzing several times a second.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import msgspec

from common.schemas import Alert
from notifier import alert_text
from notifier.channels import plain
from notifier.channels.base import (
    Accepted,
    Answer,
    Budget,
    Limit,
    RateLimited,
    Refused,
    Transient,
    classify_http,
    http_client,
    own_limits,
    post,
    retry_after_header,
    setting_error,
)
from notifier.config import NtfyChannel
from notifier.field_checks import NTFY_TOPIC

log = logging.getLogger(__name__)

LIMITS: Final = (Limit(1, 1.0), Limit(60, 300.0))
TAGS: Final = {"up": "chart_with_upwards_trend", "down": "chart_with_downwards_trend"}
# An emoji per kind beside the direction's (ntfy shows tags that name one as the emoji).
KIND_TAGS: Final = {"liquidation": "boom", "funding": "moneybag", "volume": "bar_chart"}
# ntfy refills one request every 5 s: the wait when a 429 names none.
DEFAULT_RETRY_S: Final = 5.0
# ntfy turns a message over 4096 bytes into an attachment; a digest stays far below.
MAX_MESSAGE_BYTES: Final = 4000
MAX_ACTIONS: Final = 3


class _Error(msgspec.Struct):
    """ntfy's error body: ``{"code":40301,"http":403,"error":"forbidden","link":…}``."""

    code: int = 0
    error: str = ""


def fit(text: str, max_bytes: int) -> str:
    """``text`` cut to ``max_bytes`` of UTF-8 (ending with ``…`` when cut)."""
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes - 3].decode(errors="ignore") + "…"


def payload(alerts: Sequence[Alert], *, topic: str, priority: int | None) -> dict[str, Any]:
    """The JSON publish request for ``alerts`` (one: the message; more: a digest)."""
    first = alerts[0]
    message = fit(plain.body(alerts, links=False), MAX_MESSAGE_BYTES)
    tags = list(dict.fromkeys([*(KIND_TAGS[a.kind] for a in alerts if a.kind in KIND_TAGS),
                               *(TAGS[a.direction] for a in alerts)]))
    if len(alerts) == 1:
        tags.append(first.symbol)
    body: dict[str, Any] = {
        "topic": topic,
        "title": plain.title(alerts),
        "message": message,
        "tags": tags,
        "priority": priority or (5 if any(a.level > 1 for a in alerts) else 4),
        "click": alert_text.chart_url(first.symbol),
    }
    if len(alerts) > 1:
        body["actions"] = [{"action": "view", "label": f"{a.symbol} chart",
                            "url": alert_text.chart_url(a.symbol), "clear": False}
                           for a in alerts[:MAX_ACTIONS]]
    return body


def classify(response: httpx.Response) -> Answer:
    """ntfy's answer; an error's detail is its JSON error (the token is never in it)."""
    if 200 <= response.status_code < 300:
        try:
            message_id = str(msgspec.json.decode(response.content).get("id", ""))
        except (msgspec.DecodeError, AttributeError):
            message_id = ""
        return Accepted(response.status_code, message_id)
    try:
        error = msgspec.json.decode(response.content, type=_Error)
        detail = f"{response.status_code} ntfy {error.code}: {error.error}"[:300]
    except msgspec.DecodeError:
        detail = ""
    if response.status_code == 429:
        return RateLimited(retry_after_header(response.headers, DEFAULT_RETRY_S),
                           detail or "429")
    answer = classify_http(response)
    if detail and isinstance(answer, Transient | Refused):
        return replace(answer, detail=detail)
    return answer


@dataclass(eq=False, repr=False)
class Ntfy:
    """One topic on one server; ``repr`` names only the channel (the config holds the
    token)."""

    config: NtfyChannel
    client: httpx.AsyncClient
    timeout_s: float
    kind: str = "ntfy"
    human: bool = True
    budget: Budget = field(default_factory=lambda: Budget(LIMITS))

    @property
    def name(self) -> str:
        return self.config.name

    async def send(self, alerts: Sequence[Alert]) -> Answer:
        body = payload(alerts, topic=self.config.topic, priority=self.config.priority)
        response = await post(self.client, self.config.server.rstrip("/") or "/",
                              content=msgspec.json.encode(body), timeout_s=self.timeout_s)
        return response if isinstance(response, Transient) else classify(response)

    async def aclose(self) -> None:
        await self.client.aclose()

    def __repr__(self) -> str:
        return f"Ntfy(name={self.name!r})"


def create(config: NtfyChannel, *, timeout_s: float) -> Ntfy:
    server = urlsplit(config.server)
    if server.scheme not in ("http", "https") or not server.hostname:
        raise setting_error(config.name, "server", "must be an http:// or https:// URL")
    if NTFY_TOPIC.fullmatch(config.topic) is None:
        # Not quoted: a topic is as good as a password on a public server.
        raise setting_error(config.name, "topic",
                            "must be 1-64 characters of A-Z, a-z, 0-9, _ and -")
    if config.priority is not None and not 1 <= config.priority <= 5:
        raise setting_error(config.name, "priority", "must be between 1 and 5")
    headers = {"content-type": "application/json"}
    if config.token:
        headers["authorization"] = f"Bearer {config.token}"
    client = http_client(timeout_s, headers)
    log.debug("ntfy channel %s ready", config.name)
    return Ntfy(config, client, timeout_s,
                budget=Budget(own_limits(LIMITS, config.max_per_minute)))
