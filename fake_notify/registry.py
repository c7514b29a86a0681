"""The fake APIs mounted on the server; each module lists its routes here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fake_notify import discord, ntfy, slack, telegram, webhook

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from fake_notify.server import FakeApis


def routes(fakes: FakeApis) -> list[BaseRoute]:
    return [
        *telegram.routes(fakes),
        *discord.routes(fakes),
        *slack.routes(fakes),
        *ntfy.routes(fakes),
        *webhook.routes(fakes),
    ]
