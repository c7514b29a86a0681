"""The Telegram channel against the fake Bot API over a real socket: what a message says
and how it is escaped (the fake parses the HTML as Telegram does), digests within 4096
characters, and every kind of answer classified without the token leaking."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

import pytest

from common.logs import configure_logging
from fake_notify import telegram as fake_telegram
from fake_notify.server import FakeApis, running_fake
from notifier import alert_text
from notifier.channels import telegram
from notifier.channels.base import (
    DIGEST_LISTED,
    Accepted,
    Budget,
    Limit,
    RateLimited,
    Refused,
    Transient,
)
from notifier.config import TelegramChannel
from tests.support.notify import burst, make_alert

TOKEN = fake_telegram.TOKEN


@pytest.fixture
async def fake() -> AsyncIterator[FakeApis]:
    async with running_fake() as fakes:
        yield fakes


class Keep(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def debug_logs() -> Iterator[list[logging.LogRecord]]:
    """The service's logging at DEBUG, every record kept; the test's logging restored."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level,
             {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict})
    records: list[logging.LogRecord] = []
    configure_logging("DEBUG")
    root.addHandler(Keep(records))
    try:
        yield records
    finally:
        root.handlers[:], level, levels = saved
        root.setLevel(level)
        for name, was in levels.items():
            logging.getLogger(name).setLevel(was)


def config(fake: FakeApis, **overrides: Any) -> TelegramChannel:
    values: dict[str, Any] = {"name": "desk", "token": TOKEN,
                              "chat_id": fake_telegram.PRIVATE_CHAT, "api_url": fake.url}
    values.update(overrides)
    return TelegramChannel(**values)


def sent_text(fake: FakeApis, index: int = -1) -> fake_telegram.Parsed:
    return fake_telegram.parse_html(fake.of("telegram")[index].json()["text"])


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text
        assert TOKEN.split(":")[1] not in text


async def test_a_single_alert_is_escaped_html_with_every_fact_and_the_chart(
        fake: FakeApis) -> None:
    alert = make_alert("A<B&C_*USDT", 3.1, rule="r<&>_*x", level=2)
    async with aclosing(telegram.create(config(fake), timeout_s=2.0)) as channel:
        answer = await channel.send([alert])

    assert answer == Accepted(200, "1")  # the message id
    body = fake.of("telegram")[0].json()
    assert body["parse_mode"] == "HTML"
    assert body["link_preview_options"] == {"is_disabled": True}
    assert body["chat_id"] == fake_telegram.PRIVATE_CHAT
    shown = sent_text(fake)
    lines = shown.text.split("\n")
    assert lines[0] == "▲ A<B&C_*USDT +3.10 % in 60 s"
    for label, value in alert_text.facts(alert):
        assert f"{label}: {value}" in lines
    assert "Rule: r<&>_*x" in lines
    assert "Level: 2 (escalation)" in lines
    assert shown.tags == ["b", "a"]
    assert shown.links == [(alert_text.chart_url("A<B&C_*USDT"), "Chart on TradingView")]
    assert "%3C" in shown.links[0][0]  # the symbol is percent-encoded in the URL


async def test_a_digest_lists_the_most_significant_first_each_linked_then_the_rest(
        fake: FakeApis) -> None:
    alerts = alert_text.by_significance(burst(200))
    async with aclosing(telegram.create(config(fake), timeout_s=2.0)) as channel:
        answer = await channel.send(alerts)

    assert isinstance(answer, Accepted)
    shown = sent_text(fake)
    lines = shown.text.split("\n")
    assert lines[0] == alert_text.digest_title(alerts)
    assert lines[1:-1] == [alert_text.short_line(a) for a in alerts[:DIGEST_LISTED]]
    assert lines[-1] == "… and 180 more"
    assert shown.links == [(alert_text.chart_url(a.symbol), a.symbol)
                           for a in alerts[:DIGEST_LISTED]]
    assert abs(alerts[0].change_pct) == max(abs(a.change_pct) for a in alerts)


async def test_a_digest_of_long_escaped_symbols_lists_fewer_to_stay_under_4096(
        fake: FakeApis) -> None:
    alerts = [make_alert("&<" * 20 + str(i), 3 + i / 10) for i in range(200)]
    async with aclosing(telegram.create(config(fake), timeout_s=2.0)) as channel:
        answer = await channel.send(alert_text.by_significance(alerts))

    assert isinstance(answer, Accepted)
    html = fake.of("telegram")[0].json()["text"]
    assert len(html) <= telegram.MAX_TEXT
    lines = sent_text(fake).text.split("\n")
    listed = len(lines) - 2
    assert 0 < listed < DIGEST_LISTED
    assert lines[-1] == f"… and {200 - listed} more"


async def test_a_second_message_within_a_second_gets_telegrams_429_and_its_retry_after(
        fake: FakeApis) -> None:
    async with aclosing(telegram.create(config(fake), timeout_s=2.0)) as channel:
        first = await channel.send([make_alert()])
        second = await channel.send([make_alert()])

    assert isinstance(first, Accepted)
    assert second == RateLimited(1.0, "Too Many Requests: retry after 1")
    assert len(fake.violations) == 1


async def test_the_retry_after_comes_from_the_answers_parameters(fake: FakeApis) -> None:
    fake.fail("telegram", 429, {"ok": False, "error_code": 429,
                                "description": "Too Many Requests: retry after 7",
                                "parameters": {"retry_after": 7}})
    async with aclosing(telegram.create(config(fake), timeout_s=2.0)) as channel:
        answer = await channel.send([make_alert()])
    assert answer == RateLimited(7.0, "Too Many Requests: retry after 7")


async def test_a_server_error_is_transient(fake: FakeApis) -> None:
    fake.fail("telegram", 502, {"ok": False, "error_code": 502, "description": "Bad Gateway"})
    fake.fail("telegram", 500)
    async with aclosing(telegram.create(config(fake), timeout_s=2.0)) as channel:
        assert await channel.send([make_alert()]) == Transient("http_502", "Bad Gateway")
        assert await channel.send([make_alert()]) == Transient("http_500", "HTTP 500")


async def test_an_unknown_token_is_refused_without_the_token_in_the_detail(
        fake: FakeApis) -> None:
    cfg = config(fake, token="999:not-a-known-token-at-all-xxxxxxxxxx")
    async with aclosing(telegram.create(cfg, timeout_s=2.0)) as channel:
        answer = await channel.send([make_alert()])
        shown = repr(channel)
    assert answer == Refused("http_401", "Unauthorized")
    assert "not-a-known-token" not in shown + answer.detail
    assert shown == "TelegramBot(name='desk')"


async def test_an_unknown_chat_is_refused_with_telegrams_description(fake: FakeApis) -> None:
    async with aclosing(telegram.create(config(fake, chat_id="-1009"), timeout_s=2.0)) as ch:
        answer = await ch.send([make_alert()])
    assert answer == Refused("http_400", "Bad Request: chat not found")


async def test_a_group_upgraded_to_a_supergroup_names_the_new_chat_id(fake: FakeApis) -> None:
    fake.fail("telegram", 400, {
        "ok": False, "error_code": 400,
        "description": "Bad Request: group chat was upgraded to a supergroup chat",
        "parameters": {"migrate_to_chat_id": -1001234567890}})
    async with aclosing(telegram.create(config(fake), timeout_s=2.0)) as channel:
        answer = await channel.send([make_alert()])
    assert isinstance(answer, Refused)
    assert "-1001234567890" in answer.detail


async def test_a_wrong_api_url_is_refused_by_its_status(fake: FakeApis) -> None:
    async with aclosing(telegram.create(config(fake, api_url=f"{fake.url}/elsewhere"),
                                        timeout_s=2.0)) as channel:
        answer = await channel.send([make_alert()])
    assert answer == Refused("http_404", "HTTP 404")


async def test_the_token_reaches_no_log_line_even_at_debug(
        fake: FakeApis, debug_logs: list[logging.LogRecord]) -> None:
    async with aclosing(telegram.create(config(fake), timeout_s=2.0)) as channel:
        assert isinstance(await channel.send([make_alert()]), Accepted)
        await channel.send([make_alert()])  # a 429
    assert fake.of("telegram")
    assert_no_secret(*(record.getMessage() for record in debug_logs))


async def test_a_slow_answer_is_a_timeout_without_the_url(fake: FakeApis) -> None:
    fake.slow("telegram", 1.0)
    async with aclosing(telegram.create(config(fake), timeout_s=0.2)) as channel:
        answer = await channel.send([make_alert()])
    assert isinstance(answer, Transient)
    assert answer.reason == "timeout"
    assert_no_secret(answer.detail)


async def test_no_server_is_a_connect_failure_without_the_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = TelegramChannel(name="desk", token=TOKEN, chat_id="42",
                          api_url=f"http://127.0.0.1:{port}")
    async with aclosing(telegram.create(cfg, timeout_s=2.0)) as channel:
        answer = await channel.send([make_alert()])
    assert isinstance(answer, Transient)
    assert answer.reason == "connect"
    assert_no_secret(answer.detail)


def test_budgets_follow_telegrams_limits_and_share_the_bot_without_its_token() -> None:
    private = TelegramChannel(name="me", token=TOKEN, chat_id="42")
    group = TelegramChannel(name="desk", token=TOKEN, chat_id="-1001", max_per_minute=10)
    other = TelegramChannel(name="other", token="1:another-token", chat_id="42")
    assert telegram.budget_of(private) == Budget((Limit(1, 1.0),), telegram.budget_of(
        private).shared_key, (Limit(30, 1.0),))
    assert telegram.budget_of(group).limits == (Limit(1, 1.0), Limit(20, 60.0), Limit(10, 60.0))
    key = telegram.budget_of(private).shared_key
    assert key is not None
    assert key == telegram.budget_of(group).shared_key != telegram.budget_of(other).shared_key
    assert key.startswith("telegram:")
    assert len(key) == len("telegram:") + 16
    assert_no_secret(key)
