"""The ntfy channel against the fake ntfy server over real HTTP: the JSON publish request
(UTF-8 title, tags, priority, click), digests, the access token, and each answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from common.settings import SettingsError
from fake_notify import ntfy as fake_ntfy
from fake_notify.server import FakeApis, Fault, running_fake
from notifier import alert_text
from notifier.channels import ntfy
from notifier.channels.base import (
    DIGEST_LISTED,
    Accepted,
    Limit,
    RateLimited,
    Refused,
    Transient,
)
from notifier.config import NtfyChannel
from tests.support.notify import burst, make_alert
from tools.redis_server import free_port


@pytest.fixture
async def fake() -> AsyncIterator[FakeApis]:
    async with running_fake() as fakes:
        yield fakes


def config(fake: FakeApis, **fields: Any) -> NtfyChannel:
    values: dict[str, Any] = {"name": "phone", "topic": "alerts-7f3a", "server": f"{fake.url}/ntfy"}
    values.update(fields)
    return NtfyChannel(**values)


async def send_one(channel_config: NtfyChannel, alerts: list[Any], *,
                   timeout_s: float = 5.0) -> Any:
    channel = ntfy.create(channel_config, timeout_s=timeout_s)
    try:
        return await channel.send(alerts)
    finally:
        await channel.aclose()


async def test_one_alert_is_a_json_publish_with_title_tags_priority_and_the_chart(
        fake: FakeApis) -> None:
    alert = make_alert("SOLUSDT", 3.1, price=23.45, base_price=22.74)
    answer = await send_one(config(fake), [alert])

    [request] = fake.of("ntfy")
    assert isinstance(answer, Accepted)
    assert answer.status == 200
    assert answer.detail
    assert request.path == "/ntfy"
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers
    body = request.json()
    assert body["topic"] == "alerts-7f3a"
    assert body["title"] == "▲ SOLUSDT +3.10 % in 60 s"
    assert body["tags"] == ["chart_with_upwards_trend", "SOLUSDT"]
    assert body["priority"] == 4
    assert body["click"] == "https://www.tradingview.com/chart/?symbol=BINANCE:SOLUSDT.P"
    for label, value in alert_text.facts(alert):
        assert f"{label}: {value}" in body["message"]
    assert "Price: 23.45 (from 22.74)" in body["message"]
    assert body["click"] in body["message"]
    assert "markdown" not in body
    assert "actions" not in body


async def test_the_title_is_utf8_in_the_body_where_a_header_could_not_carry_it(
        fake: FakeApis) -> None:
    await send_one(config(fake), [make_alert("ETHUSDT", -2.4)])

    body = fake.of("ntfy")[0].json()
    assert body["title"] == "▼ ETHUSDT \u22122.40 % in 60 s"
    assert body["tags"][0] == "chart_with_downwards_trend"
    assert "\u22122.40 %".encode() in fake.of("ntfy")[0].body


async def test_an_escalation_is_urgent_and_a_configured_priority_wins(fake: FakeApis) -> None:
    await send_one(config(fake), [make_alert(level=2)])
    await send_one(config(fake, priority=2), [make_alert(level=2)])

    assert [r.json()["priority"] for r in fake.of("ntfy")] == [5, 2]


async def test_a_digest_of_200_lists_the_most_significant_first_and_stays_small(
        fake: FakeApis) -> None:
    alerts = alert_text.by_significance(burst(200))
    answer = await send_one(config(fake), alerts)

    [request] = fake.of("ntfy")
    body = request.json()
    assert isinstance(answer, Accepted)
    assert body["title"] == alert_text.digest_title(alerts)
    lines = body["message"].split("\n")
    assert len(lines) == DIGEST_LISTED + 1
    assert lines[0].startswith(alert_text.short_line(alerts[0]))
    assert [line.split(" · ")[0] for line in lines[:-1]] == [
        alert_text.short_line(a) for a in alerts[:DIGEST_LISTED]]
    assert lines[-1] == "… and 180 more"
    assert body["click"] == alert_text.chart_url(alerts[0].symbol)
    assert [a["url"] for a in body["actions"]] == [
        alert_text.chart_url(a.symbol) for a in alerts[:3]]
    assert set(body["tags"]) == {"chart_with_upwards_trend", "chart_with_downwards_trend"}
    assert len(request.body) < 4096  # ntfy's message size limit


async def test_an_access_token_is_sent_as_bearer_and_opens_a_protected_topic(
        fake: FakeApis) -> None:
    answer = await send_one(config(fake, topic="private-desk", token=fake_ntfy.TOKEN),
                            [make_alert()])

    assert isinstance(answer, Accepted)
    assert fake.of("ntfy")[0].headers["authorization"] == f"Bearer {fake_ntfy.TOKEN}"


async def test_a_protected_topic_without_a_token_is_refused_403(fake: FakeApis) -> None:
    answer = await send_one(config(fake, topic="private-desk"), [make_alert()])

    assert answer == Refused("http_403", "403 ntfy 40301: forbidden")


async def test_a_wrong_token_is_refused_401_without_the_token_in_the_detail(
        fake: FakeApis) -> None:
    token = "tk_wrongtoken0000000000000000000"
    channel_config = config(fake, token=token)
    channel = ntfy.create(channel_config, timeout_s=5.0)
    answer = await channel.send([make_alert()])
    await channel.aclose()

    assert answer == Refused("http_401", "401 ntfy 40101: unauthorized")
    assert token not in repr(channel)
    assert token not in repr(answer)


async def test_over_the_servers_limit_a_429_says_when_to_come_back(fake: FakeApis) -> None:
    channel = ntfy.create(config(fake), timeout_s=5.0)
    answers = [await channel.send([make_alert()]) for _ in range(61)]
    await channel.aclose()

    assert all(isinstance(a, Accepted) for a in answers[:60])
    last = answers[60]
    assert isinstance(last, RateLimited)
    assert 290 <= last.retry_after_s <= 300
    assert "42901" in last.detail
    assert "too many requests" in last.detail
    assert len(fake.violations) == 1


async def test_a_429_without_retry_after_waits_for_ntfys_refill(fake: FakeApis) -> None:
    fake.fail("ntfy", 429, {"code": 42901, "http": 429, "error": "limit reached"})
    fake.fail("ntfy", 429, {"code": 42901, "http": 429, "error": "limit reached"},
              headers={"retry-after": "7"})
    first = await send_one(config(fake), [make_alert()])
    second = await send_one(config(fake), [make_alert()])

    assert isinstance(first, RateLimited)
    assert first.retry_after_s == ntfy.DEFAULT_RETRY_S
    assert isinstance(second, RateLimited)
    assert second.retry_after_s == 7.0


async def test_a_5xx_is_transient_and_a_404_a_refusal(fake: FakeApis) -> None:
    fake.fail("ntfy", 503)
    fake.fail("ntfy", 404, {"code": 40401, "http": 404, "error": "page not found"})
    first = await send_one(config(fake), [make_alert()])
    second = await send_one(config(fake), [make_alert()])

    assert isinstance(first, Transient)
    assert first.reason == "http_503"
    assert second == Refused("http_404", "404 ntfy 40401: page not found")


async def test_an_answer_slower_than_the_timeout_is_a_transient_timeout(
        fake: FakeApis) -> None:
    fake.script("ntfy", Fault(None, 1.5))
    answer = await send_one(config(fake), [make_alert()], timeout_s=0.3)

    assert isinstance(answer, Transient)
    assert answer.reason == "timeout"


async def test_a_server_that_is_not_there_is_transient() -> None:
    channel_config = NtfyChannel(name="phone", topic="alerts",
                                 server=f"http://127.0.0.1:{free_port()}/ntfy")
    answer = await send_one(channel_config, [make_alert()])

    assert isinstance(answer, Transient)
    assert answer.reason == "connect"


def test_the_budget_is_ntfys_pacing_plus_the_configured_limit() -> None:
    plain = ntfy.create(NtfyChannel(name="a", topic="t"), timeout_s=1.0)
    capped = ntfy.create(NtfyChannel(name="b", topic="t", max_per_minute=10), timeout_s=1.0)

    assert plain.budget.limits == (Limit(1, 1.0), Limit(60, 300.0))
    assert capped.budget.limits == (Limit(1, 1.0), Limit(60, 300.0), Limit(10, 60.0))
    assert (plain.kind, plain.human, plain.name) == ("ntfy", True, "a")


@pytest.mark.parametrize(("fields", "field"), [
    ({"server": "ntfy.sh"}, "server"),
    ({"topic": "my secret topic!"}, "topic"),
    ({"priority": 9}, "priority"),
])
def test_a_bad_field_names_the_channel_and_the_field_not_the_value(
        fields: dict[str, Any], field: str) -> None:
    values: dict[str, Any] = {"name": "phone", "topic": "alerts"} | fields
    with pytest.raises(SettingsError) as caught:
        ntfy.create(NtfyChannel(**values), timeout_s=1.0)

    message = str(caught.value)
    assert "'phone'" in message
    assert f"{field}:" in message
    assert "my secret topic" not in message


def test_a_message_is_cut_to_ntfys_size_in_bytes_not_characters() -> None:
    text = "▲" * 2000  # 6000 bytes

    cut = ntfy.fit(text, 4000)
    assert len(cut.encode()) <= 4000
    assert cut.endswith("…")
    assert cut.startswith("▲" * 1332)
    assert ntfy.fit("short", 4000) == "short"
