"""``[[channel]]`` tables of a NOTIFY_CONFIG that point at these fakes, for the tests and
the benchmarks: the channel types by a short name, and the environment their ``${VAR}``
secrets come from (the fakes' default bot, webhooks and keys)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Final

from fake_notify import discord, slack, telegram

WEBHOOK_SECRET: Final = "whsec_" + base64.b64encode(b"binance-alerter-test-key-32bytes").decode()


def channel_tables(base_url: str, names: Sequence[str]) -> tuple[str, dict[str, str]]:
    """The tables of ``names`` (``tg``: a private Telegram chat, ``group``: a group of the
    same bot, ``discord``, ``slack``, ``ntfy``, ``hooks``: a webhook) for the fakes at
    ``base_url``, and the environment they need."""
    tables = {
        "tg": f'type = "telegram"\ntoken = "${{TG_TOKEN}}"\n'
              f'chat_id = "{telegram.PRIVATE_CHAT}"\napi_url = "{base_url}"',
        "group": f'type = "telegram"\ntoken = "${{TG_TOKEN}}"\n'
                 f'chat_id = "{telegram.GROUP_CHAT}"\napi_url = "{base_url}"',
        "discord": 'type = "discord"\nurl = "${DISCORD_URL}"',
        "slack": 'type = "slack"\nurl = "${SLACK_URL}"',
        "ntfy": f'type = "ntfy"\nserver = "{base_url}/ntfy"\ntopic = "alerts"',
        "hooks": f'type = "webhook"\nurl = "{base_url}/hooks/main"\nsecret = "${{HOOK_SECRET}}"',
    }
    env = {"TG_TOKEN": telegram.TOKEN,
           "DISCORD_URL": f"{base_url}/api/webhooks/{discord.WEBHOOK_ID}/{discord.WEBHOOK_TOKEN}",
           "SLACK_URL": f"{base_url}/services/{'/'.join(slack.HOOK)}",
           "HOOK_SECRET": WEBHOOK_SECRET}
    text = "".join(f'[[channel]]\nname = "{name}"\n{tables[name]}\n\n' for name in names)
    return text, env


def notify_config(base_url: str, names: Sequence[str]) -> tuple[str, dict[str, str]]:
    """A whole file: those channels and one route sending every alert to all of them."""
    tables, env = channel_tables(base_url, names)
    route = "[[route]]\nchannels = [" + ", ".join(f'"{n}"' for n in names) + "]\n"
    return tables + route, env
