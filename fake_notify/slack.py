"""Fake Slack incoming webhooks: ``POST /services/{team}/{bot}/{secret}``.

It answers as Slack does, with short text bodies: ``ok``; 404 ``no_service`` (no such
webhook), 403 ``invalid_token`` (wrong secret), 410 ``channel_is_archived``, 400
``invalid_payload`` (not JSON), ``no_text`` (neither text nor blocks), ``invalid_blocks``
(a block Slack would refuse: more than 50, a header over 150 characters, a section text
over 3000, more than 10 fields or one over 2000…). One message a second per webhook; a
request over it gets 429 with ``Retry-After`` and is recorded as a violation.

Tests configure it through ``hooks(fake)``: ``HOOK`` is known from the start.
``rendered`` shows a mrkdwn text as Slack would, so a test can see its escaping work.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from fake_notify.server import FakeApis, Received, Windows

API: Final = "slack"
HOOK: Final = ("T0FAKE0001", "B0FAKE0001", "fakeSlackSecret0123456789")
TEXT_TYPES: Final = {"mrkdwn", "plain_text"}
_CONTROL: Final = re.compile(r"<([^<>|]+)(?:\|([^<>]*))?>")
_ENTITY: Final = re.compile(r"&(amp|lt|gt);")


@dataclass
class Hooks:
    """The fake's world: (team, bot) → secret, archived channels, the per-webhook limit."""

    secrets: dict[tuple[str, str], str] = field(
        default_factory=lambda: {(HOOK[0], HOOK[1]): HOOK[2]})
    archived: set[tuple[str, str]] = field(default_factory=set)
    per_hook: Windows = field(default_factory=lambda: Windows([(1, 1.0)]))

    def add(self, team: str, bot: str, secret: str) -> None:
        self.secrets[(team, bot)] = secret

    def url(self, fakes: FakeApis, hook: tuple[str, str, str] = HOOK) -> str:
        return f"{fakes.url}/services/{hook[0]}/{hook[1]}/{hook[2]}"


def hooks(fakes: FakeApis) -> Hooks:
    state = fakes.state.setdefault(API, Hooks())
    assert isinstance(state, Hooks)
    return state


def rendered(mrkdwn: str) -> str:
    """What Slack shows for ``mrkdwn``: ``<url|text>`` as its text, ``<url>`` as the url,
    ``&amp; &lt; &gt;`` decoded. A ``<`` or ``&`` that is neither (an unescaped one)
    raises ``ValueError``, as it would garble the message in Slack."""
    out: list[str] = []
    i = 0
    while i < len(mrkdwn):
        char = mrkdwn[i]
        if char == "<":
            match = _CONTROL.match(mrkdwn, i)
            if match is None:
                raise ValueError(f"an unescaped '<' at {i}")
            out.append(rendered(match.group(2)) if match.group(2) is not None
                       else match.group(1))
            i = match.end()
        elif char == "&":
            match = _ENTITY.match(mrkdwn, i)
            if match is None:
                raise ValueError(f"an unescaped '&' at {i}")
            out.append({"amp": "&", "lt": "<", "gt": ">"}[match.group(1)])
            i = match.end()
        elif char == ">":
            raise ValueError(f"an unescaped '>' at {i}")
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _text_ok(obj: Any, limit: int, types: set[str] = TEXT_TYPES) -> bool:
    return (isinstance(obj, dict) and obj.get("type") in types
            and isinstance(obj.get("text"), str) and 1 <= len(obj["text"]) <= limit)


def block_ok(block: Any) -> bool:
    """Whether Slack takes ``block`` (the kinds a notification uses, as Slack checks them)."""
    if not isinstance(block, dict):
        return False
    kind = block.get("type")
    if kind == "header":
        return _text_ok(block.get("text"), 150, {"plain_text"})
    if kind == "section":
        text, fields = block.get("text"), block.get("fields")
        if text is None and fields is None:
            return False
        if text is not None and not _text_ok(text, 3000):
            return False
        return fields is None or (isinstance(fields, list) and 1 <= len(fields) <= 10
                                  and all(_text_ok(f, 2000) for f in fields))
    if kind == "context":
        elements = block.get("elements")
        return (isinstance(elements, list) and 1 <= len(elements) <= 10
                and all(_text_ok(e, 3000) for e in elements))
    return kind == "divider"


async def post(fakes: FakeApis, received: Received, team: str, bot: str,
               secret: str) -> Response:
    state = hooks(fakes)
    if (team, bot) not in state.secrets:
        return PlainTextResponse("no_service", status_code=404)
    if state.secrets[(team, bot)] != secret:
        return PlainTextResponse("invalid_token", status_code=403)
    if (team, bot) in state.archived:
        return PlainTextResponse("channel_is_archived", status_code=410)
    key, now = f"{team}/{bot}", time.monotonic()
    if not state.per_hook.allow(key, now):
        fakes.over_limit(f"slack: webhook {key} over 1/s")
        wait = state.per_hook.retry_after(key, now)
        return PlainTextResponse("rate_limited", status_code=429,
                                 headers={"retry-after": str(max(1, math.ceil(wait)))})
    try:
        body = msgspec.json.decode(received.body)
    except msgspec.DecodeError:
        return PlainTextResponse("invalid_payload", status_code=400)
    if not isinstance(body, dict):
        return PlainTextResponse("invalid_payload", status_code=400)
    blocks = body.get("blocks")
    if not body.get("text") and not blocks:
        return PlainTextResponse("no_text", status_code=400)
    if blocks is not None and not (isinstance(blocks, list) and len(blocks) <= 50
                                   and all(block_ok(b) for b in blocks)):
        return PlainTextResponse("invalid_blocks", status_code=400)
    return PlainTextResponse("ok")


def routes(fakes: FakeApis) -> list[BaseRoute]:
    hooks(fakes)

    async def endpoint(request: Request) -> Response:
        team, bot, secret = (request.path_params[k] for k in ("team", "bot", "secret"))
        return await fakes.take(API, f"{team}/{bot}", request,
                                lambda f, r: post(f, r, team, bot, secret))

    return [Route("/services/{team}/{bot}/{secret}", endpoint, methods=["POST"])]
