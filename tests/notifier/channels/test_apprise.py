"""The Apprise channel through a ``json://`` URL to the fake webhook receiver (Apprise's
real HTTP request), and to nobody."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from common.settings import SettingsError
from fake_notify.server import FakeApis, Fault, running_fake
from notifier import alert_text
from notifier.channels import via_apprise
from notifier.channels.base import DIGEST_LISTED, Accepted, Limit, Transient
from notifier.config import AppriseChannel
from tests.support.notify import burst, make_alert
from tools.redis_server import free_port


@pytest.fixture
async def fake() -> AsyncIterator[FakeApis]:
    async with running_fake() as fakes:
        yield fakes


def config(fake: FakeApis, **fields: Any) -> AppriseChannel:
    values: dict[str, Any] = {"name": "many",
                              "url": f"json://127.0.0.1:{fake.port}/hooks/apprise"}
    values.update(fields)
    return AppriseChannel(**values)


async def send_one(channel_config: AppriseChannel, alerts: list[Any], *,
                   timeout_s: float = 10.0) -> Any:
    channel = via_apprise.create(channel_config, timeout_s=timeout_s)
    try:
        return await channel.send(alerts)
    finally:
        await channel.aclose()


async def test_one_alert_reaches_the_service_with_its_headline_and_facts(
        fake: FakeApis) -> None:
    alert = make_alert("SOLUSDT", 3.1, price=23.45, base_price=22.74)
    answer = await send_one(config(fake), [alert])

    assert isinstance(answer, Accepted)
    [request] = fake.of("webhook")
    assert request.key == "apprise"
    body = request.json()
    assert body["title"] == "▲ SOLUSDT +3.10 % in 60 s"
    for label, value in alert_text.facts(alert):
        assert f"{label}: {value}" in body["message"]
    assert alert_text.chart_url("SOLUSDT") in body["message"]


async def test_a_digest_lists_the_first_20_with_their_charts(fake: FakeApis) -> None:
    alerts = alert_text.by_significance(burst(200))
    answer = await send_one(config(fake), alerts)

    assert isinstance(answer, Accepted)
    body = fake.of("webhook")[0].json()
    assert body["title"] == alert_text.digest_title(alerts)
    lines = body["message"].splitlines()
    assert len(lines) == DIGEST_LISTED + 1
    assert lines[0].startswith(alert_text.short_line(alerts[0]))
    assert lines[0].endswith(alert_text.chart_url(alerts[0].symbol))
    assert lines[-1] == "… and 180 more"


async def test_a_service_that_fails_is_transient(fake: FakeApis) -> None:
    fake.fail("webhook", 500)
    answer = await send_one(config(fake), [make_alert()])

    assert answer == Transient("apprise_failed", "apprise reported the message as not sent")


async def test_an_unreachable_service_is_transient() -> None:
    url = f"json://127.0.0.1:{free_port()}/hooks/apprise"
    answer = await send_one(AppriseChannel(name="many", url=url), [make_alert()])

    assert isinstance(answer, Transient)
    assert answer.reason == "apprise_failed"


async def test_a_service_slower_than_the_timeout_is_a_timeout(fake: FakeApis) -> None:
    fake.script("webhook", Fault(None, 2.0))
    answer = await send_one(config(fake), [make_alert()], timeout_s=0.5)

    assert isinstance(answer, Transient)
    assert answer.reason == "timeout"


class Lines(logging.Handler):
    """What reaches the service's own logging (pytest's caplog attaches itself to every
    logger, so it cannot show what a library keeps to itself)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.mark.parametrize("url", ["", "nosuchservice://token-1234@host/path",
                                 "tgram//123456:secret-token-abc/42"])
def test_a_url_apprise_cannot_use_is_a_setting_error_that_no_one_sees(url: str) -> None:
    root = logging.getLogger()
    lines = Lines()
    root.addHandler(lines)
    try:
        with pytest.raises(SettingsError) as caught:
            via_apprise.create(AppriseChannel(name="many", url=url), timeout_s=1.0)
    finally:
        root.removeHandler(lines)

    assert "'many'" in str(caught.value)
    assert "url:" in str(caught.value)
    for secret in ("token-1234", "secret-token-abc"):
        assert secret not in str(caught.value)
        assert not [line for line in lines.lines if secret in line]


def test_the_budget_and_the_repr() -> None:
    url = "json://user:hunter2@example.org/hook"
    channel = via_apprise.create(AppriseChannel(name="many", url=url, max_per_minute=5),
                                 timeout_s=1.0)

    assert channel.budget.limits == (Limit(1, 2.0), Limit(5, 60.0))
    assert (channel.kind, channel.human) == ("apprise", True)
    assert repr(channel) == "Apprise(name='many')"


def test_without_apprise_installed_the_error_says_how_to_install_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules is how Python itself marks a module that cannot be imported.
    monkeypatch.setitem(sys.modules, "apprise", None)
    with pytest.raises(SettingsError, match=r'pip install "binance-alerter\[apprise\]"'):
        via_apprise.create(AppriseChannel(name="many", url="json://example.org/h"),
                           timeout_s=1.0)
