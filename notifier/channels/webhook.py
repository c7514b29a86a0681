"""Generic webhooks, signed per Standard Webhooks (https://www.standardwebhooks.com), so a
receiver can check with any of its libraries that a request came from this notifier and
was not altered or replayed.

Each request carries one alert: the body is ``{"type":"alert","alert":<alert>}``, the same
bytes as the gateway's ``/ws`` message for a live alert, and the headers are

- ``webhook-id``: the alert id (deterministic, so a receiver recognises a re-send);
- ``webhook-timestamp``: unix seconds when it was signed (a receiver refuses old ones);
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>``, the
  key being the base64 after ``whsec_`` in the configured secret.

``human`` is False: a machine wants every alert by itself, never a digest, so ``send``
takes exactly one alert; the dispatcher never passes more to a channel that is not human
(more is a programming error, and raises). No pacing of our own: the receiver's 429 says
when to come back.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from common.schemas import Alert, alert_json_encoder
from notifier.channels.base import (
    Answer,
    Budget,
    Transient,
    classify_http,
    http_client,
    own_limits,
    post,
    setting_error,
)
from notifier.config import WebhookChannel
from notifier.field_checks import signing_key

log = logging.getLogger(__name__)


def body(alert: Alert) -> bytes:
    """``{"type":"alert","alert":…}``, the alert encoded as the gateway encodes it."""
    return b'{"type":"alert","alert":' + alert_json_encoder.encode(alert) + b"}"


def signature(key: bytes, message_id: str, timestamp: int, content: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` of ``{id}.{timestamp}.{body}``."""
    signed = f"{message_id}.{timestamp}.".encode() + content
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


@dataclass(eq=False, repr=False)
class Webhook:
    """One endpoint; ``repr`` names only the channel (the config holds the secret)."""

    config: WebhookChannel
    client: httpx.AsyncClient
    key: bytes
    timeout_s: float
    budget: Budget
    kind: str = "webhook"
    human: bool = False

    @property
    def name(self) -> str:
        return self.config.name

    def request_for(self, alert: Alert, timestamp: int | None = None) -> tuple[dict[str, str],
                                                                              bytes]:
        """The headers and body of ``alert``'s request, signed at ``timestamp`` (now)."""
        content = body(alert)
        stamp = int(time.time()) if timestamp is None else timestamp
        headers = {
            "content-type": "application/json",
            "webhook-id": alert.id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": signature(self.key, alert.id, stamp, content),
        }
        return headers, content

    async def send(self, alerts: Sequence[Alert]) -> Answer:
        if len(alerts) != 1:
            raise ValueError(f"a webhook takes one alert per request, not {len(alerts)}")
        headers, content = self.request_for(alerts[0])
        response = await post(self.client, self.config.url, content=content,
                              headers=headers, timeout_s=self.timeout_s)
        return response if isinstance(response, Transient) else classify_http(response)

    async def aclose(self) -> None:
        await self.client.aclose()

    def __repr__(self) -> str:
        return f"Webhook(name={self.name!r})"


def create(config: WebhookChannel, *, timeout_s: float) -> Webhook:
    url = urlsplit(config.url)
    if url.scheme not in ("http", "https") or not url.hostname:
        # Not quoted: a URL may carry a token in its path or query.
        raise setting_error(config.name, "url", "must be an http:// or https:// URL")
    key = signing_key(config.secret)
    if key is None:
        raise setting_error(
            config.name, "secret",
            "must be whsec_ followed by the base64 of 24 to 64 random bytes (Standard "
            "Webhooks); make one with: python -c \"import base64, secrets; "
            "print('whsec_' + base64.b64encode(secrets.token_bytes(32)).decode())\"")
    # No redirects: a signed alert goes to the configured endpoint or nowhere.
    client = http_client(timeout_s)
    log.debug("webhook channel %s ready", config.name)
    return Webhook(config, client, key, timeout_s,
                   Budget(own_limits((), config.max_per_minute)))
