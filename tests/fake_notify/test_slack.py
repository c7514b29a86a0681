"""The fake Slack webhook itself: Slack's text answers, its block limits, one message a
second per webhook, and ``rendered`` (what Slack would show of a mrkdwn text)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fake_notify import slack
from fake_notify.server import FakeApis, running_fake

SECTION = {"type": "section", "text": {"type": "mrkdwn", "text": "x"}}


@pytest.fixture
async def fake() -> AsyncIterator[FakeApis]:
    async with running_fake() as fakes:
        yield fakes


async def post(fake: FakeApis, body: Any, url: str | None = None) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        content = body if isinstance(body, bytes) else None
        return await client.post(url or slack.hooks(fake).url(fake), content=content,
                                 json=None if content is not None else body)


def test_rendered_reads_links_and_entities_and_rejects_raw_markup() -> None:
    assert slack.rendered("a &lt;b&gt; &amp; <https://x.example/?a=1&amp;b|the &amp; chart>"
                          " <https://y.example>") == (
        "a <b> & the & chart https://y.example")
    for raw in ("a < b", "a & b", "a > b"):
        with pytest.raises(ValueError, match="unescaped"):
            slack.rendered(raw)


async def test_a_message_is_answered_ok(fake: FakeApis) -> None:
    response = await post(fake, {"text": "hi", "blocks": [
        {"type": "header", "text": {"type": "plain_text", "text": "h"}}, SECTION,
        {"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 10},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}]},
        {"type": "divider"}]})
    assert (response.status_code, response.text) == (200, "ok")
    assert fake.of("slack")[0].key == f"{slack.HOOK[0]}/{slack.HOOK[1]}"


@pytest.mark.parametrize(("body", "status", "answer"), [
    (b"not json", 400, "invalid_payload"),
    ({"username": "x"}, 400, "no_text"),
    ({"text": "x", "blocks": [SECTION] * 51}, 400, "invalid_blocks"),
    ({"blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}]},
     400, "invalid_blocks"),
    ({"blocks": [{"type": "header", "text": {"type": "mrkdwn", "text": "h"}}]},
     400, "invalid_blocks"),
    ({"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "s" * 3001}}]},
     400, "invalid_blocks"),
    ({"blocks": [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}]},
     400, "invalid_blocks"),
    ({"blocks": [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f" * 2001}]}]},
     400, "invalid_blocks"),
    ({"blocks": [{"type": "section"}]}, 400, "invalid_blocks"),
    ({"blocks": [{"type": "carousel"}]}, 400, "invalid_blocks"),
])
async def test_what_slack_refuses_it_refuses_with_slacks_code(
        fake: FakeApis, body: Any, status: int, answer: str) -> None:
    response = await post(fake, body)
    assert (response.status_code, response.text) == (status, answer)


async def test_unknown_wrong_and_archived_webhooks(fake: FakeApis) -> None:
    team, bot, _ = slack.HOOK
    slack.hooks(fake).add("T2", "B2", "s2")
    slack.hooks(fake).archived.add(("T2", "B2"))
    answers = [await post(fake, {"text": "x"}, f"{fake.url}/services/{path}")
               for path in ("T9/B9/s9", f"{team}/{bot}/wrong", "T2/B2/s2")]
    assert [(a.status_code, a.text) for a in answers] == [
        (404, "no_service"), (403, "invalid_token"), (410, "channel_is_archived")]
    assert fake.violations == []


async def test_a_second_message_in_a_second_gets_429(fake: FakeApis) -> None:
    first = await post(fake, {"text": "a"})
    second = await post(fake, {"text": "b"})
    assert first.status_code == 200
    assert (second.status_code, second.text, second.headers["retry-after"]) == (
        429, "rate_limited", "1")
    assert fake.violations == [f"slack: webhook {slack.HOOK[0]}/{slack.HOOK[1]} over 1/s"]
