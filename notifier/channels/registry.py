"""Channel type (the ``type`` of a ``[[channel]]``) → the module that builds it.

Each module has ``create(config, *, timeout_s) -> Channel``: one pooled client per channel,
requests bounded by ``timeout_s`` (``NOTIFY_TIMEOUT_S``).
"""

from __future__ import annotations

from notifier.channels import discord, ntfy, slack, smtp, telegram, via_apprise, webhook
from notifier.channels.base import Channel
from notifier.config import (
    AppriseChannel,
    ChannelConfig,
    DiscordChannel,
    EmailChannel,
    NtfyChannel,
    SlackChannel,
    TelegramChannel,
    WebhookChannel,
)


def build_channel(config: ChannelConfig, *, timeout_s: float) -> Channel:
    """The channel ``config`` describes, ready to ``send``; ``aclose`` it when done."""
    match config:
        case TelegramChannel():
            return telegram.create(config, timeout_s=timeout_s)
        case DiscordChannel():
            return discord.create(config, timeout_s=timeout_s)
        case SlackChannel():
            return slack.create(config, timeout_s=timeout_s)
        case NtfyChannel():
            return ntfy.create(config, timeout_s=timeout_s)
        case EmailChannel():
            return smtp.create(config, timeout_s=timeout_s)
        case WebhookChannel():
            return webhook.create(config, timeout_s=timeout_s)
        case AppriseChannel():
            return via_apprise.create(config, timeout_s=timeout_s)
