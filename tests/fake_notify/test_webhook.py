"""The fake webhook receiver records what arrived as it arrived, and checks nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from fake_notify.server import FakeApis, running_fake


@pytest.fixture
async def fake() -> AsyncIterator[FakeApis]:
    async with running_fake() as fakes:
        yield fakes


async def test_any_post_is_recorded_byte_for_byte_and_answered_200(fake: FakeApis) -> None:
    body = b'{"type":"alert", "alert": {}}'
    headers = {"webhook-id": "x", "webhook-signature": "v1,bm90IGEgc2lnbmF0dXJl"}
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{fake.url}/hooks/desk", content=body, headers=headers)

    assert response.status_code == 200
    [request] = fake.of("webhook")
    assert (request.key, request.path, request.body) == ("desk", "/hooks/desk", body)
    assert request.headers["webhook-signature"] == headers["webhook-signature"]


async def test_a_scripted_fault_is_answered_instead(fake: FakeApis) -> None:
    fake.fail("webhook", 503, {"error": "down"})
    async with httpx.AsyncClient() as client:
        first = await client.post(f"{fake.url}/hooks/desk", content=b"{}")
        second = await client.post(f"{fake.url}/hooks/desk", content=b"{}")

    assert (first.status_code, second.status_code) == (503, 200)
    assert [r.status for r in fake.of("webhook")] == [503, 200]
