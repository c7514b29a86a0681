"""Fake Telegram Bot API: ``/bot{token}/sendMessage``.

It checks what the real API checks that matters to the notifier: the token (else 401
``Unauthorized``), the chat (else 400 ``Bad Request: chat not found``), the HTML of
``parse_mode: "HTML"`` (only Telegram's tags, balanced; every other ``< > &`` escaped as
one of its entities; else 400 ``Bad Request: can't parse entities: …``) and the length of
the text once parsed (at most 4096). Limits, as Telegram documents them for bots: one
message a second per chat, twenty a minute per group chat, thirty a second per bot; over
them it answers Telegram's 429 (``parameters.retry_after``) and records a violation.

Tests configure it through ``bots(fake)``: the bot ``TOKEN`` with the chats
``PRIVATE_CHAT`` and ``GROUP_CHAT`` is known from the start.
"""

from __future__ import annotations

import html
import math
import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from fake_notify.server import FakeApis, Received, Windows

API: Final = "telegram"
TOKEN: Final = "123456789:TEST-fake-bot-token-AAAAAAAAAAAAAAAAAAAAA"
PRIVATE_CHAT: Final = "42"
GROUP_CHAT: Final = "-1001234567890"
MAX_TEXT: Final = 4096

# The tags of Telegram's HTML style, and the attributes each may carry.
ALLOWED_TAGS: Final = {
    "b": set(), "strong": set(), "i": set(), "em": set(), "u": set(), "ins": set(),
    "s": set(), "strike": set(), "del": set(), "span": {"class"}, "tg-spoiler": set(),
    "a": {"href"}, "tg-emoji": {"emoji-id"}, "code": {"class"}, "pre": set(),
    "blockquote": {"expandable"},
}
_VALUE: Final = r"""(?:\s*=\s*(?:"([^"]*)"|'([^']*)'))?"""
_TAG: Final = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)((?:\s+[A-Za-z-]+" + _VALUE + r")*)\s*>")
_ATTRIBUTE: Final = re.compile(r"([A-Za-z-]+)" + _VALUE)
# Telegram knows only these named entities, and every numeric one.
_ENTITY: Final = re.compile(r"&(?:lt|gt|amp|quot|#[0-9]{1,7}|#x[0-9A-Fa-f]{1,6});")


class EntityError(ValueError):
    """What "can't parse entities" says."""


@dataclass(frozen=True, slots=True)
class Parsed:
    """A message as Telegram shows it: its text, the tags used, and its links."""

    text: str
    tags: list[str]
    links: list[tuple[str, str]]  # (href, the link's text)


def parse_html(source: str) -> Parsed:
    """Parse ``source`` as Telegram's HTML style does, or raise ``EntityError``."""
    out: list[str] = []
    tags: list[str] = []
    stack: list[tuple[str, int, str]] = []  # (tag, where its text starts, href)
    links: list[tuple[str, str]] = []
    i = 0
    while i < len(source):
        char = source[i]
        offset = len(source[:i].encode())
        if char == "<":
            match = _TAG.match(source, i)
            if match is None:
                raise EntityError(f"Unexpected end of name token at byte offset {offset}")
            closing, name, attributes = match.group(1), match.group(2).lower(), match.group(3)
            if closing:
                if not stack or stack[-1][0] != name:
                    expected = f'"</{stack[-1][0]}>"' if stack else "no end tag"
                    raise EntityError(f"Unmatched end tag at byte offset {offset}, expected "
                                      f'{expected}, found "</{name}>"')
                tag, start, href = stack.pop()
                if tag == "a":
                    links.append((href, "".join(out)[start:]))
            else:
                if name not in ALLOWED_TAGS:
                    raise EntityError(f'Unsupported start tag "{name}" at byte offset {offset}')
                found = {m.group(1).lower(): html.unescape(m.group(2) or m.group(3) or "")
                         for m in _ATTRIBUTE.finditer(attributes)}
                if set(found) - ALLOWED_TAGS[name]:
                    raise EntityError(f'Unsupported attribute in tag "{name}" at byte offset '
                                      f"{offset}")
                if name == "a" and not found.get("href"):
                    raise EntityError(f"Empty href at byte offset {offset}")
                tags.append(name)
                stack.append((name, len("".join(out)), found.get("href", "")))
            i = match.end()
        elif char == "&":
            match = _ENTITY.match(source, i)
            if match is None:
                raise EntityError(f"Unsupported HTML entity at byte offset {offset}")
            out.append(html.unescape(match.group(0)))
            i = match.end()
        elif char == ">":
            raise EntityError(f'Character ">" is reserved at byte offset {offset}')
        else:
            out.append(char)
            i += 1
    if stack:
        raise EntityError(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    return Parsed("".join(out), tags, links)


def utf16_length(text: str) -> int:
    """Telegram counts a message's length in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


@dataclass
class Bots:
    """The fake's world: bot token → the chats that bot may write to, and its limits."""

    chats: dict[str, set[str]] = field(
        default_factory=lambda: {TOKEN: {PRIVATE_CHAT, GROUP_CHAT}})
    per_chat: Windows = field(default_factory=lambda: Windows([(1, 1.0)]))
    per_group: Windows = field(default_factory=lambda: Windows([(20, 60.0)]))
    per_bot: Windows = field(default_factory=lambda: Windows([(30, 1.0)]))
    message_ids: int = 0
    # What the limits count time by; a test of the 20/min group limit moves it forward
    # instead of waiting a minute.
    clock: Callable[[], float] = time.monotonic

    def add(self, token: str, *chats: str) -> None:
        self.chats.setdefault(token, set()).update(chats)


def bots(fakes: FakeApis) -> Bots:
    state = fakes.state.setdefault(API, Bots())
    assert isinstance(state, Bots)
    return state


def error(status: int, description: str, **parameters: Any) -> JSONResponse:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return JSONResponse(body, status_code=status)


def arguments(received: Received) -> dict[str, Any]:
    """The method's arguments: a JSON body, a form, or the query string, as Telegram takes."""
    content_type = received.headers.get("content-type", "")
    if "json" in content_type:
        try:
            data = msgspec.json.decode(received.body)
        except msgspec.DecodeError:
            return {}
        return data if isinstance(data, dict) else {}
    raw = received.body.decode(errors="replace") if received.body else ""
    return {k: v[-1] for k, v in urllib.parse.parse_qs(raw).items()}


def rate_limited(state: Bots, fakes: FakeApis, token: str, chat: str) -> Response | None:
    """Telegram's 429 if one more message breaks a limit, else count it."""
    now = state.clock()
    windows = [(state.per_chat, chat, "1/s per chat"), (state.per_bot, token, "30/s per bot")]
    if chat.startswith("-"):
        windows.append((state.per_group, chat, "20/min per group"))
    waits = [(w.retry_after(key, now), what) for w, key, what in windows]
    wait, what = max(waits)
    if wait > 0:
        fakes.over_limit(f"telegram: chat {chat} over {what}")
        seconds = max(1, math.ceil(wait))
        return error(429, f"Too Many Requests: retry after {seconds}", retry_after=seconds)
    for w, key, _ in windows:
        w.allow(key, now)
    return None


async def send_message(fakes: FakeApis, received: Received, token: str) -> Response:
    state = bots(fakes)
    if token not in state.chats:
        return error(401, "Unauthorized")
    args = arguments(received)
    chat = str(args.get("chat_id", ""))
    if not chat:
        return error(400, "Bad Request: chat_id is empty")
    if chat not in state.chats[token]:
        return error(400, "Bad Request: chat not found")
    limited = rate_limited(state, fakes, token, chat)
    if limited is not None:
        return limited
    text = args.get("text")
    if not isinstance(text, str) or not text.strip():
        return error(400, "Bad Request: message text is empty")
    mode = args.get("parse_mode")
    if mode == "HTML":
        try:
            text = parse_html(text).text
        except EntityError as exc:
            return error(400, f"Bad Request: can't parse entities: {exc}")
    elif mode not in (None, ""):
        return error(400, f"Bad Request: unsupported parse_mode {mode!r}")
    if utf16_length(text) > MAX_TEXT:
        return error(400, "Bad Request: message is too long")
    state.message_ids += 1
    kind = ("supergroup" if chat.startswith("-100")
            else "group" if chat.startswith("-") else "private")
    return JSONResponse({"ok": True, "result": {
        "message_id": state.message_ids, "date": int(time.time()),
        "chat": {"id": int(chat) if chat.lstrip("-").isdigit() else chat, "type": kind},
        "text": text}})


def routes(fakes: FakeApis) -> list[BaseRoute]:
    bots(fakes)

    async def endpoint(request: Request) -> Response:
        token = request.path_params["token"]
        body = await request.body()
        chat = str(arguments(Received(API, "", 0.0, request.method, request.url.path,
                                      dict(request.headers), body)).get("chat_id", ""))
        return await fakes.take(API, chat, request,
                                lambda f, r: send_message(f, r, token))

    return [Route("/bot{token}/sendMessage", endpoint, methods=["POST"])]
