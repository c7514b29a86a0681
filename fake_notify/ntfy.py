"""A fake ntfy server: JSON publishing at ``/ntfy`` (a client's ``server`` is
``<fake>/ntfy``), answered as ntfy answers.

- A published message is answered 200 with ntfy's message JSON (``id``, ``time``,
  ``event``, ``topic``…); a body that is not a JSON publish request, or a bad topic, 400.
- Topics starting with ``private-`` are protected, as an ntfy server with access control
  protects a topic: without a token 403 (``40301 forbidden``); a token other than
  ``TOKEN``, sent as ``Authorization: Bearer``, is 401 (``40101 unauthorized``), on any
  topic (ntfy checks a token it is given).
- Requests per topic are limited to 60 in 5 minutes (ntfy.sh lets a visitor burst 60 and
  refills one every 5 s: a client within this window is within that bucket); one more is
  answered 429 (``42901 limit reached: too many requests``, with ``Retry-After``) and
  recorded as a violation.
"""

from __future__ import annotations

import math
import re
import secrets
import time
from typing import TYPE_CHECKING, Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from fake_notify.server import Windows

if TYPE_CHECKING:
    from fake_notify.server import FakeApis, Received

API: Final = "ntfy"
TOKEN: Final = "tk_fakentfyaccesstoken0000000001"
PROTECTED_PREFIX: Final = "private-"
LIMITS: Final = ((60, 300.0),)
TOPIC: Final = re.compile(r"[-_A-Za-z0-9]{1,64}")
DOCS: Final = "https://ntfy.sh/docs/publish/"


def error(status: int, code: int, text: str, headers: dict[str, str] | None = None,
          ) -> JSONResponse:
    return JSONResponse({"code": code, "http": status, "error": text, "link": DOCS},
                        status_code=status, headers=headers)


def routes(fakes: FakeApis) -> list[BaseRoute]:
    windows = Windows(LIMITS)

    async def publish(fakes: FakeApis, received: Received) -> Response:
        try:
            body: Any = msgspec.json.decode(received.body)
        except msgspec.DecodeError:
            return error(400, 40001, "invalid request: body must be a JSON publish request")
        topic = body.get("topic") if isinstance(body, dict) else None
        if not isinstance(topic, str) or TOPIC.fullmatch(topic) is None:
            return error(400, 40009, "invalid request: topic invalid")
        auth = received.headers.get("authorization")
        if auth is not None and auth != f"Bearer {TOKEN}":
            return error(401, 40101, "unauthorized")
        if topic.startswith(PROTECTED_PREFIX) and auth is None:
            return error(403, 40301, "forbidden")
        now = received.arrived_at
        if not windows.allow(topic, now):
            fakes.over_limit(f"ntfy topic {topic}: more than 60 requests in 5 min")
            wait = math.ceil(windows.retry_after(topic, now))
            return error(429, 42901, "limit reached: too many requests",
                         {"retry-after": str(max(1, wait))})
        return JSONResponse({
            "id": secrets.token_urlsafe(9), "time": int(time.time()), "event": "message",
            "topic": topic, "title": body.get("title"), "message": body.get("message"),
            "priority": body.get("priority"), "tags": body.get("tags"),
            "click": body.get("click"),
        })

    async def endpoint(request: Request) -> Response:
        # The key is the topic, read by the handler; the recording keeps the whole body.
        return await fakes.take(API, _topic_of(await request.body()), request, publish)

    return [Route("/ntfy", endpoint, methods=["POST", "PUT"]),
            Route("/ntfy/", endpoint, methods=["POST", "PUT"])]


def _topic_of(body: bytes) -> str:
    try:
        decoded: Any = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return ""
    topic = decoded.get("topic") if isinstance(decoded, dict) else None
    return topic if isinstance(topic, str) else ""
