"""The Slack channel against the fake incoming webhook over a real socket: blocks and their
escaping (read back as Slack renders mrkdwn), a digest within Slack's block limits, and
every kind of answer without the webhook's secret leaking."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import pytest

from fake_notify import slack as fake_slack
from fake_notify.server import FakeApis, running_fake
from notifier import alert_text
from notifier.channels import slack
from notifier.channels.base import (
    DIGEST_LISTED,
    Accepted,
    Limit,
    RateLimited,
    Refused,
    Transient,
)
from notifier.config import SlackChannel
from tests.support.notify import burst, make_alert

TEAM, BOT, SECRET = fake_slack.HOOK


@pytest.fixture
async def fake() -> AsyncIterator[FakeApis]:
    async with running_fake() as fakes:
        yield fakes


def config(fake: FakeApis, url: str | None = None) -> SlackChannel:
    return SlackChannel(name="desk", url=url or fake_slack.hooks(fake).url(fake))


def sent(fake: FakeApis, index: int = -1) -> dict[str, Any]:
    body: dict[str, Any] = fake.of("slack")[index].json()
    return body


async def test_a_single_alert_is_a_header_fields_and_a_chart_link(fake: FakeApis) -> None:
    alert = make_alert("A<B&C>USDT", -2.4, rule="r<&>x")
    async with aclosing(slack.create(config(fake), timeout_s=2.0)) as channel:
        answer = await channel.send([alert])

    assert answer == Accepted(200, "ok")
    body = sent(fake)
    header, facts, chart = body["blocks"]
    assert header == {"type": "header",
                      "text": {"type": "plain_text", "text": alert_text.headline(alert)}}
    shown = [fake_slack.rendered(f["text"]) for f in facts["fields"]]
    assert shown == [f"*{label}*\n{value}" for label, value in alert_text.facts(alert)]
    assert "*Rule*\nr<&>x" in shown
    assert chart["text"]["text"] == (
        f"<{alert_text.chart_url('A<B&C>USDT')}|Chart on TradingView>")
    assert fake_slack.rendered(body["text"]) == (
        f"{alert_text.headline(alert)} Chart on TradingView")
    assert "A&lt;B&amp;C&gt;USDT" in body["text"]


async def test_a_digest_lists_the_most_significant_first_each_linked(fake: FakeApis) -> None:
    alerts = alert_text.by_significance(burst(200))
    async with aclosing(slack.create(config(fake), timeout_s=2.0)) as channel:
        answer = await channel.send(alerts)

    assert isinstance(answer, Accepted)
    body = sent(fake)
    header, *sections = body["blocks"]
    assert header["text"]["text"] == alert_text.digest_title(alerts)
    text = "\n".join(s["text"]["text"] for s in sections)
    lines = text.split("\n")
    assert lines[:-1] == [
        alert_text.short_line(a, f"<{alert_text.chart_url(a.symbol)}|{a.symbol}>")
        for a in alerts[:DIGEST_LISTED]]
    assert lines[-1] == "… and 180 more"
    assert all(len(s["text"]["text"]) <= slack.MAX_SECTION_TEXT for s in sections)
    assert body["text"] == alert_text.digest_title(alerts)


async def test_a_digest_of_long_escaped_symbols_stays_within_the_block_limits(
        fake: FakeApis) -> None:
    alerts = alert_text.by_significance(
        [make_alert("<&>" * 40 + str(i), 3 + i / 10) for i in range(200)])
    async with aclosing(slack.create(config(fake), timeout_s=2.0)) as channel:
        answer = await channel.send(alerts)

    assert isinstance(answer, Accepted)  # the fake checks Slack's block limits
    sections = sent(fake)["blocks"][1:]
    assert len(sections) > 2
    assert all(len(s["text"]["text"]) <= slack.MAX_SECTION_TEXT for s in sections)
    lines = "\n".join(s["text"]["text"] for s in sections).split("\n")
    assert [fake_slack.rendered(line) for line in lines[:-1]] == [
        alert_text.short_line(a) for a in alerts[:DIGEST_LISTED]]
    assert lines[-1] == "… and 180 more"


def test_a_digest_line_too_long_for_any_section_leaves_only_the_count() -> None:
    alerts = alert_text.by_significance(
        [make_alert("<&>" * 400 + str(i), 3 + i / 10) for i in range(30)])
    blocks = slack.message_of(alerts)["blocks"]
    assert [b["text"]["text"] for b in blocks] == [alert_text.digest_title(alerts),
                                                   "… and 30 more"]


async def test_a_second_message_within_a_second_gets_429_and_retry_after(
        fake: FakeApis) -> None:
    async with aclosing(slack.create(config(fake), timeout_s=2.0)) as channel:
        first = await channel.send([make_alert()])
        second = await channel.send([make_alert()])
    assert isinstance(first, Accepted)
    assert second == RateLimited(1.0, "rate_limited")
    assert len(fake.violations) == 1


async def test_the_retry_after_header_is_taken_as_is(fake: FakeApis) -> None:
    fake.fail("slack", 429, headers={"retry-after": "30"})
    async with aclosing(slack.create(config(fake), timeout_s=2.0)) as channel:
        answer = await channel.send([make_alert()])
    assert answer == RateLimited(30.0, "HTTP 429")


async def test_a_server_error_is_transient(fake: FakeApis) -> None:
    fake.fail("slack", 500)
    async with aclosing(slack.create(config(fake), timeout_s=2.0)) as channel:
        assert await channel.send([make_alert()]) == Transient("http_500", "HTTP 500")


@pytest.mark.parametrize(("team", "secret", "archived", "status", "detail"), [
    ("T0NOTHERE", SECRET, False, 404, "no_service"),
    (TEAM, "wrongSecret000", False, 403, "invalid_token"),
    (TEAM, SECRET, True, 410, "channel_is_archived"),
])
async def test_slacks_refusals_carry_its_code_and_not_the_secret(
        fake: FakeApis, team: str, secret: str, archived: bool, status: int,
        detail: str) -> None:
    if archived:
        fake_slack.hooks(fake).archived.add((TEAM, BOT))
    url = f"{fake.url}/services/{team}/{BOT}/{secret}"
    async with aclosing(slack.create(config(fake, url), timeout_s=2.0)) as channel:
        answer = await channel.send([make_alert()])
        shown = repr(channel)
    assert answer == Refused(f"http_{status}", detail)
    assert shown == "SlackWebhook(name='desk')"


async def test_a_slow_answer_is_a_timeout_without_the_url(fake: FakeApis) -> None:
    fake.slow("slack", 1.0)
    async with aclosing(slack.create(config(fake), timeout_s=0.2)) as channel:
        answer = await channel.send([make_alert()])
    assert isinstance(answer, Transient)
    assert answer.reason == "timeout"
    assert SECRET not in answer.detail


def test_the_budget_is_one_a_second() -> None:
    assert slack.budget_of(SlackChannel(name="s", url="https://x.invalid/services/a/b/c")
                           ).limits == (Limit(1, 1.0),)
    assert slack.budget_of(SlackChannel(name="s", url="https://x.invalid/services/a/b/c",
                                        max_per_minute=5)).limits == (Limit(1, 1.0),
                                                                      Limit(5, 60.0))
