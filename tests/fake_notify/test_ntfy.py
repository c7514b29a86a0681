"""The fake ntfy server itself, spoken to with a plain HTTP client: what it refuses and
how, and that its limit counts per topic."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from fake_notify import ntfy
from fake_notify.server import FakeApis, running_fake


@pytest.fixture
async def fake() -> AsyncIterator[FakeApis]:
    async with running_fake() as fakes:
        yield fakes


async def test_a_publish_is_answered_with_ntfys_message_and_recorded(fake: FakeApis) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{fake.url}/ntfy/", json={"topic": "t1", "message": "hi"})

    assert response.status_code == 200
    assert response.json()["event"] == "message"
    assert response.json()["topic"] == "t1"
    assert [(r.api, r.key, r.status) for r in fake.received] == [("ntfy", "t1", 200)]


@pytest.mark.parametrize(("body", "code"), [
    (b"not json", 40001),
    (b'{"message":"no topic"}', 40009),
    (b'{"topic":"has spaces"}', 40009),
])
async def test_what_is_not_a_publish_request_is_a_400(fake: FakeApis, body: bytes,
                                                      code: int) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{fake.url}/ntfy", content=body)

    assert response.status_code == 400
    assert response.json()["code"] == code
    assert response.json()["http"] == 400


async def test_the_limit_counts_per_topic(fake: FakeApis) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(60):
            await client.post(f"{fake.url}/ntfy", json={"topic": "busy"})
        over = await client.post(f"{fake.url}/ntfy", json={"topic": "busy"})
        other = await client.post(f"{fake.url}/ntfy", json={"topic": "quiet"})

    assert over.status_code == 429
    assert over.json() == {"code": 42901, "http": 429,
                           "error": "limit reached: too many requests", "link": ntfy.DOCS}
    assert 290 <= int(over.headers["retry-after"]) <= 300
    assert other.status_code == 200
    assert fake.violations == ["ntfy topic busy: more than 60 requests in 5 min"]


async def test_a_token_is_checked_wherever_it_is_sent(fake: FakeApis) -> None:
    good = {"authorization": f"Bearer {ntfy.TOKEN}"}
    bad = {"authorization": "Bearer tk_other"}
    async with httpx.AsyncClient() as client:
        public_good = await client.post(f"{fake.url}/ntfy", json={"topic": "pub"}, headers=good)
        public_bad = await client.post(f"{fake.url}/ntfy", json={"topic": "pub"}, headers=bad)

    assert public_good.status_code == 200
    assert public_bad.status_code == 401
    assert public_bad.json()["code"] == 40101
