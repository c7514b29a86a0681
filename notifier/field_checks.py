"""What each field of ``NOTIFY_CONFIG`` must mean, per channel type and for a route, once
``notifier.config_checks`` has the document's structure and types right; the errors are
worded as there (``Item.fail``).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from common.rule_model import MAX_PATTERNS, RULE_NAME_PATTERN, SYMBOL_PATTERN
from notifier.config_checks import Item

if TYPE_CHECKING:
    from notifier.config import (
        AppriseChannel,
        ChannelBase,
        DiscordChannel,
        EmailChannel,
        NtfyChannel,
        Route,
        SlackChannel,
        TelegramChannel,
        WebhookChannel,
    )

_SAFE_TOKEN: Final = re.compile(r"[^\s/?#%]+")  # it goes into a URL's path
_CHAT_ID: Final = re.compile(r"-?[0-9]{1,20}|@[A-Za-z][A-Za-z0-9_]{3,31}")
NTFY_TOPIC: Final = re.compile(r"[-_A-Za-z0-9]{1,64}")  # what ntfy accepts
_ADDRESS: Final = r"[^@\s<>,;\"()\[\]\\]+@[^@\s<>,;\"()\[\]\\]+"
_MAILBOX: Final = re.compile(rf"{_ADDRESS}|[^<>\r\n]*<{_ADDRESS}>")
_HOST: Final = re.compile(r"[^\s/@]+")
_APPRISE_URL: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def _url(item: Item, name: str, value: str) -> None:
    try:
        parts = urlsplit(value)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        ok = ok and (parts.port is None or parts.port > 0)
    except ValueError:
        ok = False
    if not ok or re.search(r"\s", value):
        raise item.fail(name, f"must be an http:// or https:// URL with a host"
                        f"{item.got(name, value)}")


def _match(item: Item, name: str, value: str, pattern: re.Pattern[str], wanted: str) -> None:
    if pattern.fullmatch(value) is None:
        raise item.fail(name, f"must be {wanted}{item.got(name, value)}")


def _between(item: Item, name: str, value: int | None, low: int, high: int | None,
             unit: str = "") -> None:
    if value is not None and (value < low or (high is not None and value > high)):
        span = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise item.fail(name, f"must be {span}{unit}{item.got(name, value)}")


def _common(item: Item, channel: ChannelBase) -> None:
    _between(item, "max_per_minute", channel.max_per_minute, 1, None, " (messages a minute)")


def telegram(item: Item, channel: TelegramChannel) -> None:
    _common(item, channel)
    _match(item, "token", channel.token, _SAFE_TOKEN,
           "the bot's token from @BotFather (no spaces, '/', '?', '#' or '%')")
    _match(item, "chat_id", channel.chat_id, _CHAT_ID,
           "a chat id (an integer such as -1001234567890) or @channelusername")
    _url(item, "api_url", channel.api_url)


def discord(item: Item, channel: DiscordChannel) -> None:
    _common(item, channel)
    _url(item, "url", channel.url)
    if channel.username is not None and not 1 <= len(channel.username) <= 80:
        raise item.fail("username", "must be 1 to 80 characters")


def slack(item: Item, channel: SlackChannel) -> None:
    _common(item, channel)
    _url(item, "url", channel.url)


def ntfy(item: Item, channel: NtfyChannel) -> None:
    _common(item, channel)
    _match(item, "topic", channel.topic, NTFY_TOPIC,
           "a topic: 1 to 64 of letters, digits, '_' and '-'")
    _url(item, "server", channel.server)
    if channel.token is not None:
        _match(item, "token", channel.token, re.compile(r"\S+"), "a token without spaces")
    _between(item, "priority", channel.priority, 1, 5, " (ntfy's 1 min to 5 max)")


def email(item: Item, channel: EmailChannel) -> None:
    _common(item, channel)
    _match(item, "host", channel.host, _HOST, "a host name or address")
    _mailbox(item, "from", channel.sender, "")
    if not channel.to:
        raise item.fail("to", "is empty: list at least one address")
    for index, address in enumerate(channel.to, 1):
        _mailbox(item, "to", address, f"item {index} ")
    _between(item, "port", channel.port, 1, 65535)
    if (channel.username is None) != (channel.password is None):
        present, absent = (("username", "password") if channel.password is None
                           else ("password", "username"))
        raise item.fail(present, f"is set without {absent!r}: set both or neither")
    if _CONTROL.search(channel.subject_prefix):
        raise item.fail("subject_prefix", "must be one line")
    if channel.ca_file is not None and not channel.ca_file.strip():
        raise item.fail("ca_file", "is empty: leave it out to use the system's CAs")


def _mailbox(item: Item, name: str, value: str, where: str) -> None:
    if _CONTROL.search(value) or _MAILBOX.fullmatch(value) is None:
        raise item.fail(name, f"{where}must be an e-mail address (a@example.org or "
                        f"Name <a@example.org>){item.got(name, value)}")


WEBHOOK_SECRET_PREFIX: Final = "whsec_"
# Standard Webhooks: a secret of 24 to 64 random bytes.
WEBHOOK_KEY_BYTES: Final = range(24, 65)


def signing_key(secret: str) -> bytes | None:
    """The key of a ``whsec_<base64>`` secret; None when it has not that form."""
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        return None
    encoded = secret.removeprefix(WEBHOOK_SECRET_PREFIX)
    try:
        # Padding is optional in the form some tools print.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) in WEBHOOK_KEY_BYTES else None


def webhook(item: Item, channel: WebhookChannel) -> None:
    _common(item, channel)
    _url(item, "url", channel.url)
    if signing_key(channel.secret) is None:
        raise item.fail("secret", "must be whsec_ followed by the base64 of a key "
                        "(Standard Webhooks)")


def apprise(item: Item, channel: AppriseChannel) -> None:
    _common(item, channel)
    _match(item, "url", channel.url, _APPRISE_URL,
           "an Apprise URL (scheme://..., e.g. tgram://, mailto://, json://)")


CHANNEL_CHECKS: Final[Mapping[str, Callable[[Item, Any], None]]] = {
    "telegram": telegram, "discord": discord, "slack": slack, "ntfy": ntfy, "email": email,
    "webhook": webhook, "apprise": apprise,
}


def route(item: Item, checked: Route, channels: list[str]) -> None:
    if not checked.channels:
        raise item.fail("channels", "is empty: name at least one channel")
    for index, name in enumerate(checked.channels, 1):
        if name not in channels:
            raise item.fail("channels", f"item {index}, {item.quoted('channels', name)}, "
                            f"is not a channel (channels: {', '.join(channels)})")
    if checked.kinds is not None:
        _not_empty(item, "kinds", checked.kinds, "every kind")
    if checked.rules is not None:
        _not_empty(item, "rules", checked.rules, "every rule")
        for index, rule in enumerate(checked.rules, 1):
            if RULE_NAME_PATTERN.fullmatch(rule) is None:
                raise item.fail("rules", f"item {index}, {item.quoted('rules', rule)}, is "
                                "not a rule name (1 to 40 of a-z, 0-9, '_' and '-')")
    if checked.directions is not None:
        _not_empty(item, "directions", checked.directions, "both")
    pct = checked.min_change_pct
    if pct is not None and not (math.isfinite(pct) and pct >= 0):
        raise item.fail("min_change_pct", f"must be a number >= 0 (percent)"
                        f"{item.got('min_change_pct', pct)}")
    _between(item, "min_level", checked.min_level, 1, None, " (2: escalations only)")
    if checked.symbols is not None:
        _not_empty(item, "symbols", checked.symbols, "every symbol")
        _patterns(item, "symbols", checked.symbols)
    _patterns(item, "deny", checked.deny)


def _not_empty(item: Item, name: str, values: list[Any], meaning: str) -> None:
    if not values:
        raise item.fail(name, f"is empty: leave it out to match {meaning}")


def _patterns(item: Item, name: str, patterns: list[str]) -> None:
    if len(patterns) > MAX_PATTERNS:
        raise item.fail(name, f"has more than {MAX_PATTERNS} patterns")
    for index, pattern in enumerate(patterns, 1):
        if SYMBOL_PATTERN.fullmatch(pattern) is None:
            raise item.fail(name, f"item {index}, {item.quoted(name, pattern)}, is not an "
                            "uppercase symbol or glob (letters A-Z, digits, _ . - and the "
                            "wildcards * ? [ ] !)")
