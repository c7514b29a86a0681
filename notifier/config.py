"""``NOTIFY_CONFIG``: the channels and the routes, from a TOML file (public interface: the
README, the compose stacks and users' files rely on this shape).

The structs below are the file's shape; ``load_config`` reads and checks it. Secrets are
written ``${VAR}`` and taken from the environment passed in; a missing variable or a bad
field raises ``SettingsError`` naming the channel (or route) and the field, which stops the
service at start with exit 2. No value that came from a ``${VAR}`` ever appears in an
error, a log line or a repr.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class ChannelBase(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
                  tag_field="type"):
    name: str  # [a-z0-9_-]{1,40}, unique
    # A further limit of this channel's own (it never raises the API's limits).
    max_per_minute: int | None = None


class TelegramChannel(ChannelBase, tag="telegram"):
    token: str
    chat_id: str  # a number in TOML is accepted and kept as its text
    api_url: str = "https://api.telegram.org"


class DiscordChannel(ChannelBase, tag="discord"):
    url: str  # https://discord.com/api/webhooks/<id>/<token>: a secret
    username: str | None = None


class SlackChannel(ChannelBase, tag="slack"):
    url: str  # https://hooks.slack.com/services/...: a secret


class NtfyChannel(ChannelBase, tag="ntfy"):
    topic: str
    server: str = "https://ntfy.sh"
    token: str | None = None  # sent as "Authorization: Bearer <token>"
    priority: int | None = None  # 1..5; unset: 4 for a first move, 5 for an escalation


class EmailChannel(ChannelBase, tag="email"):
    host: str
    sender: str = msgspec.field(name="from")
    to: list[str]
    port: int | None = None  # unset: 465 with security "tls", else 587
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: str | None = None
    subject_prefix: str = "[binance-alerter]"
    # A CA bundle (PEM) to verify the server with, for a server whose certificate is not
    # signed by a public CA; unset: the system's CAs.
    ca_file: str | None = None


class WebhookChannel(ChannelBase, tag="webhook"):
    url: str
    secret: str  # whsec_<base64>, Standard Webhooks


class AppriseChannel(ChannelBase, tag="apprise"):
    url: str  # an Apprise URL (tgram://…, mailto://…, json://…): a secret


ChannelConfig = (TelegramChannel | DiscordChannel | SlackChannel | NtfyChannel | EmailChannel
                 | WebhookChannel | AppriseChannel)


class Route(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which alerts go where; an alert may match several routes (it goes to each channel
    once). A field left out matches everything."""

    channels: list[str]
    rules: list[str] | None = None
    directions: list[Literal["up", "down"]] | None = None
    min_change_pct: float | None = None
    min_level: int = 1
    symbols: list[str] | None = None  # fnmatch globs over the exchange's symbols
    deny: list[str] = msgspec.field(default_factory=list)  # wins over symbols


class NotifyConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    channel: list[ChannelConfig] = msgspec.field(default_factory=list)
    route: list[Route] = msgspec.field(default_factory=list)
