"""``NOTIFY_CONFIG``: the channels and the routes, from a TOML file (public interface: the
README, the compose stacks and users' files rely on this shape).

The structs below are the file's shape; ``load_config`` reads and checks it
(``notifier.config_checks`` holds the checks and the wording of their errors). Secrets are
written ``${VAR}`` and taken from the environment passed in; a missing variable or a bad
field raises ``SettingsError`` naming the channel (or route) and the field, which stops the
service at start with exit 2. No value that came from a ``${VAR}``, and no secret field
(``token``, ``secret``, ``password``, the ``url`` of discord/slack/apprise), ever appears in
an error or a repr: the repr below masks them.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Final, Literal

import msgspec

from common.rule_model import RuleKind
from common.settings import SettingsError
from notifier import config_checks as checks
from notifier import field_checks as fields

log = logging.getLogger(__name__)

# A configuration file is a few kilobytes; anything near this is a wrong path.
MAX_CONFIG_BYTES: Final = 1 << 20


class _Hidden:
    """What a repr shows instead of a value it must not show."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class _Masked(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
              dict=True):
    """A struct whose repr hides its secret fields and every field the loader filled from
    the environment (``dict=True`` only so that the loader can note which: the note is not
    a field, so it is neither encoded nor compared)."""

    _secrets: ClassVar[frozenset[str]] = frozenset()

    def _shown(self) -> Iterator[tuple[str, object]]:
        from_env: Mapping[str, tuple[str, ...]] = self.__dict__.get(checks.FROM_ENV, {})
        for field in sorted(self.__struct_fields__, key=lambda f: f != "name"):
            value = getattr(self, field)
            if field in self._secrets and value is not None:
                yield field, _Hidden("<secret>")
            elif field in from_env:
                yield field, _Hidden(f"<from {', '.join(f'${{{v}}}' for v in from_env[field])}>")
            else:
                yield field, value

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self._shown())
        return f"{type(self).__name__}({fields})"

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return list(self._shown())


class ChannelBase(_Masked, frozen=True, kw_only=True, forbid_unknown_fields=True,
                  tag_field="type"):
    name: str  # [a-z0-9_-]{1,40}, unique
    # A further limit of this channel's own (it never raises the API's limits).
    max_per_minute: int | None = None


class TelegramChannel(ChannelBase, frozen=True, tag="telegram"):
    _secrets = frozenset({"token"})
    token: str
    chat_id: str  # a number in TOML is accepted and kept as its text
    api_url: str = "https://api.telegram.org"


class DiscordChannel(ChannelBase, frozen=True, tag="discord"):
    _secrets = frozenset({"url"})
    url: str  # https://discord.com/api/webhooks/<id>/<token>: a secret
    username: str | None = None


class SlackChannel(ChannelBase, frozen=True, tag="slack"):
    _secrets = frozenset({"url"})
    url: str  # https://hooks.slack.com/services/...: a secret


class NtfyChannel(ChannelBase, frozen=True, tag="ntfy"):
    _secrets = frozenset({"token"})
    topic: str
    server: str = "https://ntfy.sh"
    token: str | None = None  # sent as "Authorization: Bearer <token>"
    priority: int | None = None  # 1..5; unset: 4 for a first move, 5 for an escalation


class EmailChannel(ChannelBase, frozen=True, tag="email"):
    _secrets = frozenset({"password"})
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


class WebhookChannel(ChannelBase, frozen=True, tag="webhook"):
    _secrets = frozenset({"secret"})
    url: str
    secret: str  # whsec_<base64>, Standard Webhooks


class AppriseChannel(ChannelBase, frozen=True, tag="apprise"):
    _secrets = frozenset({"url"})
    url: str  # an Apprise URL (tgram://…, mailto://…, json://…): a secret


ChannelConfig = (TelegramChannel | DiscordChannel | SlackChannel | NtfyChannel | EmailChannel
                 | WebhookChannel | AppriseChannel)

# type → struct, in the order the errors list them.
CHANNEL_TYPES: Final[Mapping[str, type[ChannelConfig]]] = {
    "telegram": TelegramChannel, "discord": DiscordChannel, "slack": SlackChannel,
    "ntfy": NtfyChannel, "email": EmailChannel, "webhook": WebhookChannel,
    "apprise": AppriseChannel,
}


class Route(_Masked, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which alerts go where; an alert may match several routes (it goes to each channel
    once). A field left out matches everything.

    ``kinds`` names the rule kinds taken (``price``, ``liquidation``, ``funding``,
    ``volume``; left out: all). ``min_change_pct`` is on price alerts only (another kind's
    ``change_pct`` is not a move it fired on), so it lets the other kinds through;
    ``min_level`` applies to every kind, and only price and liquidation alerts escalate,
    so ``min_level = 2`` takes no funding or volume alert.
    """

    channels: list[str]
    kinds: list[RuleKind] | None = None
    rules: list[str] | None = None
    directions: list[Literal["up", "down"]] | None = None
    min_change_pct: float | None = None
    min_level: int = 1
    symbols: list[str] | None = None  # fnmatch globs over the exchange's symbols
    deny: list[str] = msgspec.field(default_factory=list)  # wins over symbols


class NotifyConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    channel: list[ChannelConfig] = msgspec.field(default_factory=list)
    route: list[Route] = msgspec.field(default_factory=list)


# --- loading -------------------------------------------------------------------------------


def load_config(path: str, environ: Mapping[str, str], *,
                source: str = "NOTIFY_CONFIG") -> NotifyConfig:
    """The checked configuration in the TOML file at ``path``, its ``${VAR}`` taken from
    ``environ``; else ``SettingsError`` whose message starts with ``source`` (the variable
    that named the file) and names the channel or route and the field to fix."""
    try:
        with Path(path).open("rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise SettingsError(f"{source}: cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise SettingsError(f"{source}: {path} is larger than {MAX_CONFIG_BYTES} bytes: "
                            "not a notification config")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{source}: {path} is not UTF-8 text "
                            f"(byte {exc.start})") from None
    return parse_config(text, environ, source=source)


def parse_config(text: str, environ: Mapping[str, str], *,
                 source: str = "NOTIFY_CONFIG") -> NotifyConfig:
    """``load_config`` for a file's text (tests, and a file read elsewhere)."""
    if len(text) > MAX_CONFIG_BYTES or len(text.encode("utf-8", "replace")) > MAX_CONFIG_BYTES:
        raise SettingsError(f"{source}: larger than {MAX_CONFIG_BYTES} bytes: "
                            "not a notification config")
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib names the place ("(at line 3, column 9)") and at most one character of it.
        raise SettingsError(f"{source}: not valid TOML: {exc}") from None
    for key in document:
        if key not in ("channel", "route"):
            raise SettingsError(f"{source}: unknown key {key!r} at the top level (the file "
                                "holds [[channel]] and [[route]] tables only)")
    raw_channels = checks.tables(document, "channel", source)
    raw_routes = checks.tables(document, "route", source)
    if not raw_channels:
        raise SettingsError(f"{source}: no [[channel]]: the notifier has nothing to send to")
    channels = [_channel(index, raw, environ, source)
                for index, raw in enumerate(raw_channels, 1)]
    checks.unique_names([c.name for c in channels], source)
    if not raw_routes:
        raise SettingsError(f"{source}: no [[route]]: no alert would go to any channel "
                            "(add one with channels = [...])")
    names = [c.name for c in channels]
    routes = [_route(index, raw, environ, source, names)
              for index, raw in enumerate(raw_routes, 1)]
    routed = {name for route in routes for name in route.channels}
    for name in names:
        if name not in routed:
            log.warning("%s: channel %r is in no route's channels: nothing will be sent "
                        "to it", source, name)
    return NotifyConfig(channel=channels, route=routes)


def _channel(index: int, raw: dict[str, Any], environ: Mapping[str, str],
             source: str) -> ChannelConfig:
    item = checks.Item(source, checks.channel_label(index, raw.get("name")))
    kind = checks.channel_type(item, raw, CHANNEL_TYPES)
    cls = CHANNEL_TYPES[kind]
    item.secrets = cls._secrets
    checks.channel_name(item, raw)
    checks.known_fields(item, raw, cls, f"a {kind} channel")
    chat_id = raw.get("chat_id")
    if cls is TelegramChannel and isinstance(chat_id, int) and not isinstance(chat_id, bool):
        raw = {**raw, "chat_id": str(chat_id)}  # chat_id = -100123 in TOML is meant as text
    channel = checks.convert(item, checks.expand(item, raw, environ), cls)
    fields.CHANNEL_CHECKS[kind](item, channel)
    return item.noted(channel)


def _route(index: int, raw: dict[str, Any], environ: Mapping[str, str], source: str,
           names: list[str]) -> Route:
    item = checks.Item(source, f"route #{index}")
    checks.known_fields(item, raw, Route, "a route")
    route = checks.convert(item, checks.expand(item, raw, environ), Route)
    fields.route(item, route, names)
    return item.noted(route)
