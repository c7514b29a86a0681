"""The fake Discord webhook itself: unknown webhooks and tokens in Discord's codes, the embed
limits, ``X-RateLimit-*`` headers on every answer, and Discord's 429 over 5 per 2 s."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fake_notify import discord
from fake_notify.server import FakeApis, running_fake

RATE_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset",
                "x-ratelimit-reset-after", "x-ratelimit-bucket")


@pytest.fixture
async def fake() -> AsyncIterator[FakeApis]:
    async with running_fake() as fakes:
        yield fakes


async def post(fake: FakeApis, body: Any, url: str | None = None,
               wait: bool = True) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(url or discord.webhooks(fake).url(fake), json=body,
                                 params={"wait": "true"} if wait else None)


async def test_a_message_is_answered_with_the_message_and_the_buckets_headers(
        fake: FakeApis) -> None:
    response = await post(fake, {"embeds": [{"title": "t", "color": 0x2ECC71,
                                             "timestamp": "2026-12-02T16:00:00.000+00:00"}]})
    assert response.status_code == 200
    assert response.json()["webhook_id"] == discord.WEBHOOK_ID
    assert response.json()["embeds"][0]["title"] == "t"
    assert response.headers["x-ratelimit-limit"] == "5"
    assert response.headers["x-ratelimit-remaining"] == "4"
    assert 1.9 < float(response.headers["x-ratelimit-reset-after"]) <= 2.0
    without_wait = await post(fake, {"content": "hi"}, wait=False)
    assert without_wait.status_code == 204
    assert without_wait.headers["x-ratelimit-remaining"] == "3"


async def test_unknown_webhooks_and_tokens_get_discords_codes_and_headers(
        fake: FakeApis) -> None:
    unknown = await post(fake, {"content": "x"}, f"{fake.url}/api/webhooks/1/t")
    wrong = await post(fake, {"content": "x"},
                       f"{fake.url}/api/webhooks/{discord.WEBHOOK_ID}/wrong")
    assert (unknown.status_code, unknown.json()) == (
        404, {"message": "Unknown Webhook", "code": 10015})
    assert (wrong.status_code, wrong.json()) == (
        401, {"message": "Invalid Webhook Token", "code": 50027})
    for response in (unknown, wrong):
        assert all(h in response.headers for h in RATE_HEADERS)


@pytest.mark.parametrize(("body", "field"), [
    ({"embeds": [{"title": "x" * 257}]}, "embeds.0.title"),
    ({"embeds": [{"description": "x" * 4097}]}, "embeds.0.description"),
    ({"embeds": [{"fields": [{"name": "n", "value": "v"}] * 26}]}, "embeds.0.fields"),
    ({"embeds": [{"fields": [{"name": "n" * 257, "value": "v"}]}]}, "embeds.0.fields.0.name"),
    ({"embeds": [{"fields": [{"name": "n", "value": "v" * 1025}]}]},
     "embeds.0.fields.0.value"),
    ({"embeds": [{"description": "x" * 4000}, {"description": "x" * 2001}]}, "embeds"),
    ({"embeds": [{"title": "t"}] * 11}, "embeds"),
    ({"embeds": [{"title": "t", "color": 0x1000000}]}, "embeds.0.color"),
    ({"embeds": [{"title": "t", "timestamp": "yesterday"}]}, "embeds.0.timestamp"),
    ({"embeds": [{"title": "t", "footer": {"text": "f" * 2049}}]}, "embeds.0.footer.text"),
    ({"content": "x" * 2001}, "content"),
    ({"content": "x", "username": "u" * 81}, "username"),
])
async def test_what_is_over_discords_limits_is_an_invalid_form_body(
        fake: FakeApis, body: dict[str, Any], field: str) -> None:
    response = await post(fake, body)
    assert response.status_code == 400
    answer = response.json()
    assert (answer["message"], answer["code"]) == ("Invalid Form Body", 50035)
    assert field in answer["errors"]


async def test_an_empty_message_is_refused(fake: FakeApis) -> None:
    response = await post(fake, {"embeds": []})
    assert (response.status_code, response.json()["code"]) == (400, 50006)


async def test_a_sixth_request_in_two_seconds_gets_discords_429(fake: FakeApis) -> None:
    answers = [await post(fake, {"content": f"{i}"}) for i in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    assert answers[4].headers["x-ratelimit-remaining"] == "0"
    limited = answers[5]
    body = limited.json()
    assert body["message"] == "You are being rate limited."
    assert body["global"] is False
    assert 0 < body["retry_after"] <= 2.0
    assert isinstance(body["retry_after"], float)
    # The header is the float rounded up to whole seconds (at least 1), as Discord sends it.
    assert limited.headers["retry-after"] == str(max(1, math.ceil(body["retry_after"])))
    assert all(h in limited.headers for h in RATE_HEADERS)
    assert fake.violations == [f"discord: webhook {discord.WEBHOOK_ID} over 5 per 2 s"]
