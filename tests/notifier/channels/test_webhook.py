"""Signed webhooks against the recording receiver over real HTTP: the body is the gateway's
alert message, and the Standard Webhooks reference library (an independent check) accepts
the signature, and refuses it once the body or the timestamp is changed."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
import pytest
from standardwebhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.responses import StreamingResponse

from common.schemas import Alert, alert_json_encoder
from common.settings import SettingsError
from fake_notify.server import FakeApis, Fault, running_fake
from notifier.channels import webhook
from notifier.channels.base import Accepted, Limit, RateLimited, Refused, Transient
from notifier.config import WebhookChannel
from tests.support.notify import make_alert
from tools.redis_server import free_port

SECRET: Final = "whsec_" + base64.b64encode(bytes(range(32))).decode()


@pytest.fixture
async def fake() -> AsyncIterator[FakeApis]:
    async with running_fake() as fakes:
        yield fakes


def config(fake: FakeApis, **fields: Any) -> WebhookChannel:
    values: dict[str, Any] = {"name": "hooks", "url": f"{fake.url}/hooks/desk",
                              "secret": SECRET}
    values.update(fields)
    return WebhookChannel(**values)


async def send_one(channel_config: WebhookChannel, alert: Alert, *,
                   timeout_s: float = 5.0) -> Any:
    channel = webhook.create(channel_config, timeout_s=timeout_s)
    try:
        return await channel.send([alert])
    finally:
        await channel.aclose()


async def test_the_body_is_the_gateways_alert_message_and_decodes_to_the_same_alert(
        fake: FakeApis) -> None:
    alert = make_alert("SOLUSDT", 3.1, path=[(1, 22.74), (2, 23.45)], level=2)
    answer = await send_one(config(fake), alert)

    [request] = fake.of("webhook")
    assert isinstance(answer, Accepted)
    assert answer.status == 200
    assert request.key == "desk"
    assert request.headers["content-type"] == "application/json"
    assert request.body == (b'{"type":"alert","alert":' + alert_json_encoder.encode(alert)
                            + b"}")
    message = msgspec.json.decode(request.body, type=dict[str, Any])
    assert message["type"] == "alert"
    assert msgspec.convert(message["alert"], Alert) == alert


async def test_the_reference_library_verifies_the_signature(fake: FakeApis) -> None:
    alert = make_alert()
    before = int(time.time())
    await send_one(config(fake), alert)

    [request] = fake.of("webhook")
    assert request.headers["webhook-id"] == alert.id
    assert before <= int(request.headers["webhook-timestamp"]) <= int(time.time())
    assert request.headers["webhook-signature"].startswith("v1,")
    verified = Verifier(SECRET).verify(request.body, request.headers)
    assert verified["alert"]["id"] == alert.id


async def test_a_changed_body_timestamp_or_id_fails_the_check(fake: FakeApis) -> None:
    await send_one(config(fake), make_alert())

    [request] = fake.of("webhook")
    verifier = Verifier(SECRET)
    tampered_body = request.body.replace(b'"change_pct":3.1', b'"change_pct":9.1')
    assert tampered_body != request.body
    with pytest.raises(WebhookVerificationError):
        verifier.verify(tampered_body, request.headers)
    later = str(int(request.headers["webhook-timestamp"]) + 1)
    with pytest.raises(WebhookVerificationError):
        verifier.verify(request.body, request.headers | {"webhook-timestamp": later})
    with pytest.raises(WebhookVerificationError):
        verifier.verify(request.body, request.headers | {"webhook-id": "ETHUSDT:60:1"})
    other = "whsec_" + base64.b64encode(bytes(32)).decode()
    with pytest.raises(WebhookVerificationError):
        Verifier(other).verify(request.body, request.headers)


def test_the_signature_is_the_specs_hmac_of_id_timestamp_and_body() -> None:
    channel = webhook.create(WebhookChannel(name="h", url="https://example.org/h",
                                            secret=SECRET), timeout_s=1.0)
    alert = make_alert()
    headers, body = channel.request_for(alert, timestamp=1_700_000_000)

    signed_at = datetime.fromtimestamp(1_700_000_000, tz=UTC)
    expected = Verifier(SECRET).sign(alert.id, signed_at, body.decode())
    assert headers["webhook-signature"] == expected
    assert headers["webhook-timestamp"] == "1700000000"


async def test_one_alert_per_request_and_more_is_a_programming_error(fake: FakeApis) -> None:
    channel = webhook.create(config(fake), timeout_s=1.0)
    try:
        with pytest.raises(ValueError, match="one alert per request"):
            await channel.send([make_alert("SOLUSDT"), make_alert("ETHUSDT")])
    finally:
        await channel.aclose()

    assert fake.of("webhook") == []
    assert channel.human is False
    assert channel.budget.limits == ()


async def test_a_429_waits_its_retry_after_a_5xx_is_transient_a_4xx_refused(
        fake: FakeApis) -> None:
    fake.fail("webhook", 429, {"error": "slow down"}, headers={"retry-after": "12"})
    fake.fail("webhook", 502)
    fake.fail("webhook", 410, {"error": "gone"})
    answers = [await send_one(config(fake), make_alert()) for _ in range(3)]

    assert isinstance(answers[0], RateLimited)
    assert answers[0].retry_after_s == 12.0
    assert isinstance(answers[1], Transient)
    assert answers[1].reason == "http_502"
    assert isinstance(answers[2], Refused)
    assert answers[2].reason == "http_410"
    assert all(SECRET.removeprefix("whsec_") not in repr(a) for a in answers)


async def test_a_slow_receiver_is_a_timeout_and_an_absent_one_a_connect_failure(
        fake: FakeApis) -> None:
    fake.script("webhook", Fault(None, 1.5))
    slow = await send_one(config(fake), make_alert(), timeout_s=0.3)
    absent_url = f"http://127.0.0.1:{free_port()}/hooks/x?token=s3cr3t-in-the-url"
    absent = await send_one(config(fake, url=absent_url), make_alert())

    assert isinstance(slow, Transient)
    assert slow.reason == "timeout"
    assert isinstance(absent, Transient)
    assert absent.reason == "connect"
    assert "s3cr3t" not in repr(absent)


def test_max_per_minute_paces_a_webhook() -> None:
    channel = webhook.create(WebhookChannel(name="h", url="https://example.org/h",
                                            secret=SECRET, max_per_minute=120), timeout_s=1.0)

    assert channel.budget.limits == (Limit(120, 60.0),)


@pytest.mark.parametrize("secret", [
    "c2VjcmV0LXdpdGhvdXQtcHJlZml4LTAwMDAwMDAw",  # no whsec_
    "whsec_not base64!",
    "whsec_" + base64.b64encode(b"short").decode(),  # 5 bytes: too short a key
    "whsec_",
])
def test_a_secret_of_the_wrong_form_is_a_setting_error_that_does_not_echo_it(
        secret: str) -> None:
    with pytest.raises(SettingsError) as caught:
        webhook.create(WebhookChannel(name="hooks", url="https://example.org/h",
                                      secret=secret), timeout_s=1.0)

    message = str(caught.value)
    assert "'hooks'" in message
    assert "secret:" in message
    if encoded := secret.removeprefix("whsec_"):
        assert encoded not in message


def test_an_unpadded_secret_is_accepted_as_the_reference_library_accepts_it() -> None:
    unpadded = "whsec_" + base64.b64encode(bytes(range(25))).decode().rstrip("=")
    channel = webhook.create(WebhookChannel(name="h", url="https://example.org/h",
                                            secret=unpadded), timeout_s=1.0)
    headers, body = channel.request_for(make_alert())

    assert Verifier(unpadded).verify(body, headers)["type"] == "alert"


def test_a_url_that_is_not_http_is_a_setting_error_without_the_url() -> None:
    url = "ftp://user:hunter2@example.org/hook"
    with pytest.raises(SettingsError) as caught:
        webhook.create(WebhookChannel(name="hooks", url=url, secret=SECRET), timeout_s=1.0)

    assert "url:" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_the_repr_names_the_channel_not_the_secret() -> None:
    channel = webhook.create(WebhookChannel(name="hooks", url="https://example.org/h",
                                            secret=SECRET), timeout_s=1.0)

    assert repr(channel) == "Webhook(name='hooks')"


async def test_an_answer_that_trickles_in_is_cut_at_the_timeout(fake: FakeApis) -> None:
    async def trickle() -> AsyncIterator[bytes]:
        for _ in range(20):  # a byte every 0.1 s: no single read waits for the timeout
            await asyncio.sleep(0.1)
            yield b" "

    fake.script("webhook", Fault(StreamingResponse(trickle())))
    started = time.monotonic()
    answer = await send_one(config(fake), make_alert(), timeout_s=0.5)

    assert isinstance(answer, Transient)
    assert answer.reason == "timeout"
    assert time.monotonic() - started < 1.5
