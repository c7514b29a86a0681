"""The Discord channel against the fake webhook over a real socket: the embed (escaped
markdown, colour, time, fields), a digest within Discord's limits, the pause the
``X-RateLimit-*`` headers ask for, and every kind of answer without the token leaking."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any

import pytest

from fake_notify import discord as fake_discord
from fake_notify.server import FakeApis, running_fake
from notifier import alert_text
from notifier.channels import discord
from notifier.channels.base import (
    DIGEST_LISTED,
    Accepted,
    Limit,
    RateLimited,
    Refused,
    Transient,
)
from notifier.config import DiscordChannel
from tests.support.notify import burst, make_alert

SECRET = fake_discord.WEBHOOK_TOKEN


@pytest.fixture
async def fake() -> AsyncIterator[FakeApis]:
    async with running_fake() as fakes:
        yield fakes


def config(fake: FakeApis, **overrides: Any) -> DiscordChannel:
    values: dict[str, Any] = {"name": "desk", "url": fake_discord.webhooks(fake).url(fake)}
    values.update(overrides)
    return DiscordChannel(**values)


def sent(fake: FakeApis, index: int = -1) -> dict[str, Any]:
    body: dict[str, Any] = fake.of("discord")[index].json()
    return body


async def test_a_single_alert_is_one_embed_with_escaped_markdown(fake: FakeApis) -> None:
    alert = make_alert("SOL*_`|<USDT", 3.1, rule="r_*~x")
    async with aclosing(discord.create(config(fake, username="Alerter"),
                                       timeout_s=2.0)) as channel:
        answer = await channel.send([alert])

    assert isinstance(answer, Accepted)
    assert answer.status == 200
    assert answer.detail == "1190000000000000001"  # the message's id, as the fake numbers them
    assert fake.of("discord")[0].status == 200  # with wait=true: the message, not a 204
    body = sent(fake)
    assert body["username"] == "Alerter"
    assert body["allowed_mentions"] == {"parse": []}
    [embed] = body["embeds"]
    assert embed["title"] == "▲ SOL\\*\\_\\`\\|\\<USDT +3.10 % in 60 s"
    assert embed["url"] == alert_text.chart_url("SOL*_`|<USDT")
    assert embed["color"] == discord.GREEN
    assert datetime.fromisoformat(embed["timestamp"]) == datetime.fromtimestamp(
        alert.event_time_ms / 1000, UTC)
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert list(fields) == [label for label, _ in alert_text.facts(alert)]
    assert fields["Rule"] == "r\\_\\*\\~x"
    assert fields["Change"] == "+3.10 %"
    assert all(f["inline"] for f in embed["fields"])


async def test_a_fall_is_red(fake: FakeApis) -> None:
    async with aclosing(discord.create(config(fake), timeout_s=2.0)) as channel:
        assert isinstance(await channel.send([make_alert(change_pct=-2.4)]), Accepted)
    assert sent(fake)["embeds"][0]["color"] == discord.RED
    assert "username" not in sent(fake)


async def test_a_digest_is_one_embed_of_linked_lines_most_significant_first(
        fake: FakeApis) -> None:
    alerts = alert_text.by_significance(burst(200))
    async with aclosing(discord.create(config(fake), timeout_s=2.0)) as channel:
        answer = await channel.send(alerts)

    assert isinstance(answer, Accepted)
    [embed] = sent(fake)["embeds"]
    assert embed["title"] == alert_text.digest_title(alerts)
    lines = embed["description"].split("\n")
    assert lines[:-1] == [
        alert_text.short_line(a, f"[{a.symbol}]({alert_text.chart_url(a.symbol)})")
        for a in alerts[:DIGEST_LISTED]]
    assert lines[-1] == "… and 180 more"
    assert embed["color"] == (discord.GREEN if alerts[0].direction == "up" else discord.RED)
    assert len(embed["description"]) <= discord.MAX_DESCRIPTION


async def test_a_digest_of_long_symbols_stays_within_the_embed_limits(fake: FakeApis) -> None:
    alerts = alert_text.by_significance(
        [make_alert("*_(" * 70 + str(i), 3 + i / 10) for i in range(200)])
    async with aclosing(discord.create(config(fake), timeout_s=2.0)) as channel:
        answer = await channel.send(alerts)

    assert isinstance(answer, Accepted)  # the fake checks Discord's limits
    [embed] = sent(fake)["embeds"]
    lines = embed["description"].split("\n")
    assert 0 < len(lines) - 1 < DIGEST_LISTED
    assert lines[-1] == f"… and {200 - (len(lines) - 1)} more"


async def test_the_fifth_message_in_the_bucket_pauses_the_channel(fake: FakeApis) -> None:
    async with aclosing(discord.create(config(fake), timeout_s=2.0)) as channel:
        answers = [await channel.send([make_alert()]) for _ in range(5)]

    assert all(isinstance(a, Accepted) for a in answers)
    pauses = [a.pause_s for a in answers if isinstance(a, Accepted)]
    assert pauses[:4] == [0.0, 0.0, 0.0, 0.0]
    assert 1.0 < pauses[4] <= 2.0
    assert fake.violations == []


async def test_over_the_bucket_discords_429_gives_its_float_retry_after(fake: FakeApis) -> None:
    async with aclosing(discord.create(config(fake), timeout_s=2.0)) as channel:
        answers = [await channel.send([make_alert()]) for _ in range(6)]

    limited = answers[5]
    assert isinstance(limited, RateLimited)
    assert 1.0 < limited.retry_after_s <= 2.0
    assert limited.retry_after_s != int(limited.retry_after_s)
    assert limited.detail == "webhook: You are being rate limited."
    assert len(fake.violations) == 1


async def test_a_global_429_and_the_header_fallback(fake: FakeApis) -> None:
    fake.fail("discord", 429, {"message": "You are being rate limited.", "retry_after": 0.75,
                               "global": True})
    fake.fail("discord", 429, headers={"retry-after": "3"})
    async with aclosing(discord.create(config(fake), timeout_s=2.0)) as channel:
        first = await channel.send([make_alert()])
        second = await channel.send([make_alert()])
    assert first == RateLimited(0.75, "global: You are being rate limited.")
    assert isinstance(second, RateLimited)
    assert second.retry_after_s == 3.0


async def test_a_server_error_is_transient(fake: FakeApis) -> None:
    fake.fail("discord", 503, {"message": "Service Unavailable", "code": 0})
    async with aclosing(discord.create(config(fake), timeout_s=2.0)) as channel:
        answer = await channel.send([make_alert()])
    assert answer == Transient("http_503", "Service Unavailable (code 0)")


async def test_an_unknown_webhook_and_a_wrong_token_are_refused_without_the_secret(
        fake: FakeApis) -> None:
    unknown = config(fake, url=f"{fake.url}/api/webhooks/999/{SECRET}")
    wrong = config(fake, url=f"{fake.url}/api/webhooks/{fake_discord.WEBHOOK_ID}/nope-token")
    async with aclosing(discord.create(unknown, timeout_s=2.0)) as one, \
            aclosing(discord.create(wrong, timeout_s=2.0)) as other:
        first = await one.send([make_alert()])
        second = await other.send([make_alert()])
        shown = repr(one) + repr(other)
    assert first == Refused("http_404", "Unknown Webhook (code 10015)")
    assert second == Refused("http_401", "Invalid Webhook Token (code 50027)")
    for text in (first.detail, second.detail, shown):
        assert SECRET not in text
        assert "nope-token" not in text
        assert "/api/webhooks" not in text


async def test_a_slow_answer_is_a_timeout_without_the_url(fake: FakeApis) -> None:
    fake.slow("discord", 1.0)
    async with aclosing(discord.create(config(fake), timeout_s=0.2)) as channel:
        answer = await channel.send([make_alert()])
    assert isinstance(answer, Transient)
    assert answer.reason == "timeout"
    assert SECRET not in answer.detail


def test_the_budget_is_a_webhooks_5_per_2_s_and_30_a_minute() -> None:
    cfg = DiscordChannel(name="d", url="https://discord.invalid/api/webhooks/1/x",
                         max_per_minute=12)
    assert discord.budget_of(cfg).limits == (Limit(5, 2.0), Limit(30, 60.0), Limit(12, 60.0))
    assert discord.budget_of(cfg).shared_key is None
