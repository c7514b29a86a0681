"""Fake Discord webhooks: ``POST /api/webhooks/{id}/{token}`` (``?wait=true``).

It checks the webhook (unknown id: 404 code 10015; wrong token: 401 code 50027) and the
embed limits Discord enforces (at most 10 embeds; title 256, description 4096, 25 fields
of name 256 and value 1024, footer 2048, author 256, 6000 in all; content 2000; username
80): over any, 400 ``Invalid Form Body`` (code 50035) with the field named. Every answer
carries the ``X-RateLimit-*`` headers of the webhook's bucket, 5 requests per 2 s; a
request over it gets Discord's 429 (``retry_after`` in float seconds, ``global``, and a
``Retry-After`` header) and is recorded as a violation.

Tests configure it through ``webhooks(fake)``: ``WEBHOOK_ID`` with ``WEBHOOK_TOKEN`` is
known from the start.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from fake_notify.server import FakeApis, Received, Windows

API: Final = "discord"
WEBHOOK_ID: Final = "1180000000000000001"
WEBHOOK_TOKEN: Final = "fake-webhook-token_A1b2C3d4E5f6G7h8"
BUCKET: Final = (5, 2.0)

# An embed's own texts and the most characters Discord takes in each.
EMBED_TEXT_LIMITS: Final = {"title": 256, "description": 4096}


@dataclass
class Webhooks:
    """The fake's world: webhook id → token, and the per-webhook bucket."""

    tokens: dict[str, str] = field(default_factory=lambda: {WEBHOOK_ID: WEBHOOK_TOKEN})
    bucket: Windows = field(default_factory=lambda: Windows([BUCKET]))
    message_ids: int = 1_190_000_000_000_000_000

    def add(self, webhook_id: str, token: str) -> None:
        self.tokens[webhook_id] = token

    def url(self, fakes: FakeApis, webhook_id: str = WEBHOOK_ID) -> str:
        return f"{fakes.url}/api/webhooks/{webhook_id}/{self.tokens[webhook_id]}"


def webhooks(fakes: FakeApis) -> Webhooks:
    state = fakes.state.setdefault(API, Webhooks())
    assert isinstance(state, Webhooks)
    return state


def embed_problems(embeds: Any) -> dict[str, str]:
    """Discord's limits on ``embeds``: {field path: what is wrong}."""
    if not isinstance(embeds, list):
        return {"embeds": "Must be an array."}
    problems: dict[str, str] = {}
    if len(embeds) > 10:
        problems["embeds"] = "Must be 10 or fewer in length."
    total = 0

    def text(path: str, value: Any, limit: int) -> int:
        if not isinstance(value, str):
            problems[path] = "Must be a string."
            return 0
        if len(value) > limit:
            problems[path] = f"Must be {limit} or fewer in length."
        return len(value)

    for i, embed in enumerate(embeds):
        where = f"embeds.{i}"
        if not isinstance(embed, dict):
            problems[where] = "Must be an object."
            continue
        for key, limit in EMBED_TEXT_LIMITS.items():
            if key in embed:
                total += text(f"{where}.{key}", embed[key], limit)
        fields = embed.get("fields", [])
        if not isinstance(fields, list) or len(fields) > 25:
            problems[f"{where}.fields"] = "Must be 25 or fewer in length."
            fields = []
        for j, item in enumerate(fields):
            if not isinstance(item, dict) or "name" not in item or "value" not in item:
                problems[f"{where}.fields.{j}"] = "This field is required"
                continue
            total += text(f"{where}.fields.{j}.name", item["name"], 256)
            total += text(f"{where}.fields.{j}.value", item["value"], 1024)
        for key, inner, limit in (("footer", "text", 2048), ("author", "name", 256)):
            if isinstance(embed.get(key), dict) and inner in embed[key]:
                total += text(f"{where}.{key}.{inner}", embed[key][inner], limit)
        color = embed.get("color")
        if color is not None and (not isinstance(color, int) or not 0 <= color <= 0xFFFFFF):
            problems[f"{where}.color"] = "Int value should be less than or equal to 16777215."
        if "timestamp" in embed:
            try:
                datetime.fromisoformat(str(embed["timestamp"]))
            except ValueError:
                problems[f"{where}.timestamp"] = "Could not parse timestamp."
        if "url" in embed and not str(embed["url"]).startswith(("http://", "https://")):
            problems[f"{where}.url"] = "Scheme must be one of ('http', 'https')."
    if total > 6000:
        problems["embeds"] = "Embed size exceeds maximum size of 6000"
    return problems


def body_problems(body: dict[str, Any]) -> dict[str, str]:
    problems = embed_problems(body.get("embeds", []))
    content = body.get("content")
    if content is not None and (not isinstance(content, str) or len(content) > 2000):
        problems["content"] = "Must be 2000 or fewer in length."
    username = body.get("username")
    if username is not None and (not isinstance(username, str) or not 1 <= len(username) <= 80):
        problems["username"] = "Must be between 1 and 80 in length."
    return problems


def rate_headers(state: Webhooks, webhook_id: str, now: float) -> dict[str, str]:
    remaining = state.bucket.remaining(webhook_id, now)
    reset_after = state.bucket.reset_after(webhook_id, now)
    return {
        "x-ratelimit-limit": str(BUCKET[0]),
        "x-ratelimit-remaining": str(remaining),
        "x-ratelimit-reset": f"{time.time() + reset_after:.3f}",
        "x-ratelimit-reset-after": f"{reset_after:.3f}",
        "x-ratelimit-bucket": hashlib.sha1(webhook_id.encode()).hexdigest()[:32],
    }


def error(status: int, message: str, code: int, headers: dict[str, str],
          **extra: Any) -> JSONResponse:
    return JSONResponse({"message": message, "code": code, **extra}, status_code=status,
                        headers=headers)


async def execute(fakes: FakeApis, received: Received, webhook_id: str, token: str,
                  wait: bool) -> Response:
    state = webhooks(fakes)
    now = time.monotonic()
    if webhook_id not in state.tokens:
        return error(404, "Unknown Webhook", 10015, rate_headers(state, webhook_id, now))
    if state.tokens[webhook_id] != token:
        return error(401, "Invalid Webhook Token", 50027, rate_headers(state, webhook_id, now))
    if not state.bucket.allow(webhook_id, now):
        wait_s = state.bucket.retry_after(webhook_id, now)
        fakes.over_limit(f"discord: webhook {webhook_id} over 5 per 2 s")
        headers = rate_headers(state, webhook_id, now)
        headers.update({"retry-after": str(max(1, math.ceil(wait_s))),
                        "x-ratelimit-scope": "shared"})
        return JSONResponse({"message": "You are being rate limited.",
                             "retry_after": round(wait_s, 3), "global": False},
                            status_code=429, headers=headers)
    headers = rate_headers(state, webhook_id, now)
    try:
        body = msgspec.json.decode(received.body)
    except msgspec.DecodeError:
        return error(400, "The request body contains invalid JSON.", 50109, headers)
    if not isinstance(body, dict):
        return error(400, "Invalid Form Body", 50035, headers)
    if not body.get("content") and not body.get("embeds"):
        return error(400, "Cannot send an empty message", 50006, headers)
    problems = body_problems(body)
    if problems:
        return error(400, "Invalid Form Body", 50035, headers, errors=problems)
    if not wait:
        return Response(status_code=204, headers=headers)
    state.message_ids += 1
    return JSONResponse({"id": str(state.message_ids), "type": 0, "channel_id": "1",
                         "webhook_id": webhook_id, "content": body.get("content", ""),
                         "embeds": body.get("embeds", []),
                         "timestamp": datetime.now().astimezone().isoformat()},
                        headers=headers)


def routes(fakes: FakeApis) -> list[BaseRoute]:
    webhooks(fakes)

    async def endpoint(request: Request) -> Response:
        webhook_id = request.path_params["id"]
        token = request.path_params["token"]
        wait = request.query_params.get("wait", "false").lower() == "true"
        return await fakes.take(API, webhook_id, request,
                                lambda f, r: execute(f, r, webhook_id, token, wait))

    return [Route("/api/webhooks/{id}/{token}", endpoint, methods=["POST"])]
