"""The fake APIs mounted on the server; each module lists its routes here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fake_notify import ntfy, webhook

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from fake_notify.server import FakeApis


def routes(fakes: FakeApis) -> list[BaseRoute]:
    # Each API module adds its line: ``*telegram.routes(fakes),``.
    return [
        *ntfy.routes(fakes),
        *webhook.routes(fakes),
    ]
