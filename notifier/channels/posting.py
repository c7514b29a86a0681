"""What the chat channels (Telegram, Discord, Slack) share: one pooled client that POSTs
JSON to a URL holding the channel's secret, and never lets that URL out.

The URL of a Discord or Slack webhook *is* its secret and Telegram's carries the bot token,
so nothing derived from the URL or from httpx's exception text (which may quote it) goes
into an answer's detail or a repr: a transport failure is reported by its exception's
class name only, and a channel's repr names only its configured ``name``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import httpx
import msgspec

from notifier.channels.base import (
    DIGEST_LISTED,
    Budget,
    Transient,
    http_client,
    post,
)

T = TypeVar("T")


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object, or ``{}`` for anything else (a proxy's HTML page)."""
    try:
        data = msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fitting(render: Callable[[int], T], fits: Callable[[T], bool],
            listed: int = DIGEST_LISTED) -> T:
    """``render(n)`` for the largest ``n <= listed`` whose result ``fits`` an API's limits
    (a digest lists fewer alerts rather than being refused). ``render(0)`` is the last
    resort and is returned whatever its size."""
    for n in range(listed, 0, -1):
        message = render(n)
        if fits(message):
            return message
    return render(0)


class HttpChannel:
    """The common part of a chat channel: name, budget, client, ``post`` and ``aclose``."""

    kind: ClassVar[str] = ""
    human: ClassVar[bool] = True

    def __init__(self, name: str, budget: Budget, *, timeout_s: float) -> None:
        self.name = name
        self.budget = budget
        self._client = http_client(timeout_s)
        self._timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    async def post(self, url: str, body: object,
                   params: Mapping[str, str] | None = None) -> httpx.Response | Transient:
        """POST ``body`` as JSON (``base.post``: one deadline over the whole request)."""
        return await post(self._client, url, content=msgspec.json.encode(body),
                               timeout_s=self._timeout_s, params=params,
                               headers={"content-type": "application/json"})

    async def aclose(self) -> None:
        await self._client.aclose()
