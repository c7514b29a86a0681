"""The fake Bot API itself: it parses HTML as Telegram does, checks token, chat and length,
and enforces Telegram's limits (per chat, per group, per bot) with Telegram's 429."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fake_notify import telegram
from fake_notify.server import FakeApis, running_fake


@pytest.fixture
async def fake() -> AsyncIterator[FakeApis]:
    async with running_fake() as fakes:
        yield fakes


async def send(fake: FakeApis, body: dict[str, Any], token: str = telegram.TOKEN,
               ) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(f"{fake.url}/bot{token}/sendMessage", json=body)


def test_html_is_parsed_to_its_text_tags_and_links() -> None:
    parsed = telegram.parse_html('<b>A &lt;b&gt; &amp; &quot;q&quot; &#9650;</b>\n'
                                 '<a href="https://x.example/?a=1&amp;b=2">the &amp; chart</a>'
                                 " <i>it</i><code>c</code>")
    assert parsed.text == 'A <b> & "q" ▲\nthe & chart itc'
    assert parsed.tags == ["b", "a", "i", "code"]
    assert parsed.links == [("https://x.example/?a=1&b=2", "the & chart")]


@pytest.mark.parametrize(("source", "problem"), [
    ("<div>x</div>", 'Unsupported start tag "div" at byte offset 0'),
    ("<b>x", 'Can\'t find end tag corresponding to start tag "b"'),
    ("<b>x</i>", "Unmatched end tag at byte offset 4"),
    ("a < b", "Unexpected end of name token at byte offset 2"),
    ("a & b", "Unsupported HTML entity at byte offset 2"),
    ("&nbsp;", "Unsupported HTML entity at byte offset 0"),
    ("▲ a > b", 'Character ">" is reserved at byte offset 6'),
    ('<a title="t">x</a>', 'Unsupported attribute in tag "a"'),
])
def test_what_telegram_cannot_parse_is_an_entity_error(source: str, problem: str) -> None:
    with pytest.raises(telegram.EntityError, match="^" + problem.replace("(", r"\(")):
        telegram.parse_html(source)


async def test_a_message_gets_telegrams_answer(fake: FakeApis) -> None:
    response = await send(fake, {"chat_id": telegram.GROUP_CHAT, "text": "<b>hi</b> &amp;",
                                 "parse_mode": "HTML"})
    assert response.status_code == 200
    result = response.json()["result"]
    assert response.json()["ok"] is True
    assert result["message_id"] == 1
    assert result["chat"] == {"id": int(telegram.GROUP_CHAT), "type": "supergroup"}
    assert result["text"] == "hi &"
    assert fake.of("telegram")[0].key == telegram.GROUP_CHAT


@pytest.mark.parametrize(("token", "body", "status", "description"), [
    ("1:unknown", {"chat_id": "42", "text": "x"}, 401, "Unauthorized"),
    (telegram.TOKEN, {"chat_id": "7", "text": "x"}, 400, "Bad Request: chat not found"),
    (telegram.TOKEN, {"text": "x"}, 400, "Bad Request: chat_id is empty"),
    (telegram.TOKEN, {"chat_id": "42", "text": " "}, 400, "Bad Request: message text is empty"),
    (telegram.TOKEN, {"chat_id": "42", "text": "<x>", "parse_mode": "HTML"}, 400,
     'Bad Request: can\'t parse entities: Unsupported start tag "x" at byte offset 0'),
    (telegram.TOKEN, {"chat_id": "42", "text": "é" * 4097}, 400,
     "Bad Request: message is too long"),
])
async def test_what_telegram_refuses_it_refuses_in_telegrams_words(
        fake: FakeApis, token: str, body: dict[str, Any], status: int,
        description: str) -> None:
    response = await send(fake, body, token)
    assert response.status_code == status
    assert response.json() == {"ok": False, "error_code": status, "description": description}


async def test_the_length_is_counted_after_parsing(fake: FakeApis) -> None:
    text = "<b>" + "&amp;" * 4096 + "</b>"
    assert (await send(fake, {"chat_id": "42", "text": text, "parse_mode": "HTML"})
            ).status_code == 200


async def test_two_messages_in_a_second_to_one_chat_break_the_limit(fake: FakeApis) -> None:
    first = await send(fake, {"chat_id": "42", "text": "a"})
    other_chat = await send(fake, {"chat_id": telegram.GROUP_CHAT, "text": "b"})
    second = await send(fake, {"chat_id": "42", "text": "c"})
    assert first.status_code == other_chat.status_code == 200
    assert second.status_code == 429
    assert second.json() == {"ok": False, "error_code": 429,
                             "description": "Too Many Requests: retry after 1",
                             "parameters": {"retry_after": 1}}
    assert fake.violations == ["telegram: chat 42 over 1/s per chat"]


async def test_a_group_takes_20_a_minute(fake: FakeApis) -> None:
    state = telegram.bots(fake)
    now = [1000.0]
    state.clock = lambda: now[0]
    statuses = []
    for i in range(21):
        now[0] += 1.5  # over a second apart: only the group's limit counts
        statuses.append((await send(fake, {"chat_id": telegram.GROUP_CHAT, "text": f"{i}"})
                         ).status_code)
    assert statuses == [200] * 20 + [429]
    assert fake.violations == [f"telegram: chat {telegram.GROUP_CHAT} over 20/min per group"]
    now[0] += 60.0
    assert (await send(fake, {"chat_id": telegram.GROUP_CHAT, "text": "x"})).status_code == 200


async def test_a_bot_takes_30_a_second_across_its_chats(fake: FakeApis) -> None:
    chats = [str(100 + i) for i in range(31)]
    telegram.bots(fake).add(telegram.TOKEN, *chats)
    now = [1000.0]
    telegram.bots(fake).clock = lambda: now[0]
    statuses = [(await send(fake, {"chat_id": chat, "text": "x"})).status_code
                for chat in chats]
    assert statuses == [200] * 30 + [429]
    assert fake.violations == ["telegram: chat 130 over 30/s per bot"]


async def test_a_form_body_is_taken_as_telegram_takes_it(fake: FakeApis) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{fake.url}/bot{telegram.TOKEN}/sendMessage",
                                     data={"chat_id": "42", "text": "plain"})
    assert response.json()["result"]["text"] == "plain"
