"""``binance-alerter notify-test CHANNEL``: one test alert through one configured channel.

An operator who has just written a ``NOTIFY_CONFIG`` file wants to know, before trusting it
with real alerts, that the token, the chat and the webhook work: this builds the channel the
notifier would build (same configuration loader, same channel code, same request), sends a
made-up alert marked as a test (rule ``notify-test``, source ``notify-test``) and prints what
the API answered. Nothing touches the bus, so it works with no service running.

Exit codes: 0 when the API accepted the message, 1 when it did not (rate limited, a
transient failure, a refusal), 2 for a configuration error or an unknown channel name.
Nothing printed contains a secret of the configuration: the channels keep them out of their
answers, and every secret value is masked here once more.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, TextIO
from urllib.parse import urlsplit

from common.runner import EXIT_CONFIG
from common.schemas import Alert
from common.settings import SettingsError
from notifier.channels.base import Accepted, Answer, RateLimited, Refused, Transient
from notifier.channels.registry import build_channel
from notifier.config import (
    AppriseChannel,
    ChannelConfig,
    DiscordChannel,
    SlackChannel,
    load_config,
)

TEST_RULE: Final = "notify-test"
MASK: Final = "***"
# Field names that hold a secret in every channel type; the URLs of these types carry
# theirs in the path or the user part.
_SECRET_FIELDS: Final = ("token", "password", "secret")
_SECRET_URL_TYPES: Final = (DiscordChannel, SlackChannel, AppriseChannel)
_SHORTEST_MASKED: Final = 4  # shorter values ("", "1") would mask ordinary words
_SECRET_PART: Final = 16
# What an accepted answer's status is, by channel type (HTTP for the others); Apprise says
# only whether the message went out.
_PROTOCOLS: Final[dict[str, str | None]] = {"email": "SMTP", "apprise": None}


@dataclass(frozen=True, slots=True)
class NotifyTestOptions:
    channel: str
    config_path: str
    environ: Mapping[str, str]
    timeout_s: float = 10.0


class NotifyTestError(Exception):
    """A configuration problem or an unknown channel: exit 2 with this one line."""


def made_up_alert(now_ms: int | None = None) -> Alert:
    """A made-up alert that reads as a test wherever it lands (its rule and source say so)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return Alert(id=f"notify-test-{uuid.uuid4().hex[:16]}", symbol="BTCUSDT", direction="up",
                 change_pct=2.5, price=100_000.0, base_price=97_560.98, window_s=60,
                 threshold_pct=2.0, event_time_ms=now_ms, detected_at_ms=now_ms,
                 source=TEST_RULE, rule=TEST_RULE, level=1)


def secrets_of(config: ChannelConfig) -> list[str]:
    """Every secret value of ``config``, longest first (so a URL is masked before a token
    that is part of it)."""
    names = {*_SECRET_FIELDS, *getattr(config, "_secrets", ())}  # the loader's own list too
    found = [getattr(config, name, None) for name in sorted(names)]
    if isinstance(config, _SECRET_URL_TYPES):
        found.append(config.url)
        # The secret part alone too (Discord's token, Slack's last segment, Apprise's
        # credentials before the host): the long parts, not words like "webhooks".
        parts = urlsplit(config.url)
        found += [part for part in (*parts.path.split("/"), parts.netloc, parts.password)
                  if part and len(part) >= _SECRET_PART]
    values = {v for v in found if isinstance(v, str) and len(v) >= _SHORTEST_MASKED}
    return sorted(values, key=len, reverse=True)


def channel_type(config: ChannelConfig) -> str:
    """The ``type`` of the ``[[channel]]`` (the struct's tag)."""
    return str(type(config).__struct_config__.tag)


def mask(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def describe(answer: Answer, kind: str = "webhook") -> str:
    """The API's answer in one line, for a person; ``kind``: the channel's type, which
    says what its status code is (SMTP's reply code, none from Apprise)."""
    match answer:
        case Accepted(status=status, detail=detail, pause_s=pause_s):
            protocol = _PROTOCOLS.get(kind, "HTTP")
            text = f"accepted ({protocol} {status})" if status and protocol else "accepted"
            if detail:
                text += f": {detail}"
            if pause_s:
                text += f" (the API asks to wait {pause_s:g} s before the next message)"
            return text
        case RateLimited(retry_after_s=retry_after_s, detail=detail):
            return f"rate limited: retry after {retry_after_s:g} s" + (
                f" ({detail})" if detail else "")
        case Transient(reason=reason, detail=detail):
            return f"transient failure ({reason}); the notifier would retry" + (
                f": {detail}" if detail else "")
        case Refused(reason=reason, detail=detail):
            return f"refused ({reason})" + (f": {detail}" if detail else "")


def find_channel(options: NotifyTestOptions) -> ChannelConfig:
    try:
        config = load_config(options.config_path, options.environ)
    except SettingsError as exc:  # it names the channel (or route) and the field
        raise NotifyTestError(str(exc)) from None
    except OSError as exc:
        raise NotifyTestError(f"cannot read {options.config_path}: "
                              f"{exc.strerror or exc}") from None
    for channel in config.channel:
        if channel.name == options.channel:
            return channel
    names = ", ".join(c.name for c in config.channel) or "none"
    raise NotifyTestError(f"no channel named {options.channel!r} in {options.config_path}; "
                          f"configured: {names}")


async def send_test(config: ChannelConfig, timeout_s: float, out: TextIO) -> int:
    secrets = secrets_of(config)
    alert = made_up_alert()
    out.write(f"{config.name} ({channel_type(config)}): sending a test alert "
              f"({alert.symbol}, rule {TEST_RULE}, id {alert.id})\n")
    out.flush()
    try:
        channel = build_channel(config, timeout_s=timeout_s)
    except (SettingsError, ValueError) as exc:
        raise NotifyTestError(mask(f"channel {config.name!r}: {exc}", secrets)) from None
    try:
        answer = await channel.send([alert])
    except Exception as exc:  # a channel's bug: said in one line, without its secrets
        answer = Transient("error", f"{type(exc).__name__}: {exc}")
    finally:
        await channel.aclose()
    out.write(f"{config.name}: {mask(describe(answer, channel_type(config)), secrets)}\n")
    out.flush()
    return 0 if isinstance(answer, Accepted) else 1


def run_notify_test(options: NotifyTestOptions, out: TextIO, err: TextIO) -> int:
    try:
        config = find_channel(options)
        return asyncio.run(send_test(config, options.timeout_s, out))
    except NotifyTestError as exc:
        err.write(f"binance-alerter notify-test: {exc}\n")
        return EXIT_CONFIG
