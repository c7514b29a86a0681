"""The e-mail channel against a real SMTP server (aiosmtpd) over STARTTLS, implicit TLS
and plain SMTP, its certificate from a test CA: the message's parts and headers, escaping,
digests, AUTH, and what each kind of reply becomes."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import msgspec
import pytest

from common.settings import SettingsError
from notifier import alert_text
from notifier.channels import smtp
from notifier.channels.base import DIGEST_LISTED, Accepted, Limit, Refused, Transient
from notifier.config import EmailChannel
from tests.support import smtp as smtp_support
from tests.support.notify import burst, make_alert
from tests.support.smtp import PASSWORD, USER, SmtpServer, running_smtp
from tools.redis_server import free_port


def config(server: SmtpServer, **fields: Any) -> EmailChannel:
    values: dict[str, Any] = {
        "name": "inbox", "host": "127.0.0.1", "port": server.port, "from": "alerts@example.org",
        "to": ["trader@example.org", "desk@example.org"], "security": server.security,
        "ca_file": str(server.ca_file),
    }
    values.update(fields)
    return msgspec_convert(values)


def msgspec_convert(values: dict[str, Any]) -> EmailChannel:
    """As the TOML file gives it (``from`` is a keyword in Python)."""
    return msgspec.convert(values, EmailChannel)


async def send_one(channel_config: EmailChannel, alerts: list[Any], *,
                   timeout_s: float = 10.0) -> Any:
    channel = smtp.create(channel_config, timeout_s=timeout_s)
    try:
        return await channel.send(alerts)
    finally:
        await channel.aclose()


async def test_one_alert_over_starttls_is_a_text_and_html_message(tmp_path: Path) -> None:
    alert = make_alert("SOLUSDT", 3.1, price=23.45, base_price=22.74)
    with running_smtp(tmp_path, "starttls") as server:
        answer = await send_one(config(server), [alert])

    assert isinstance(answer, Accepted)
    assert "OK queued" in answer.detail
    [mail] = server.recorder.mails
    assert mail.sender == "alerts@example.org"
    assert mail.recipients == ["trader@example.org", "desk@example.org"]
    message = mail.message
    assert message["Subject"] == "[binance-alerter] ▲ SOLUSDT +3.10 % in 60 s"
    assert message["From"] == "alerts@example.org"
    assert message["To"] == "trader@example.org, desk@example.org"
    assert message["Date"]
    assert message["Message-ID"] == f"<alert.SOLUSDT.60.{alert.event_time_ms}@example.org>"
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",))
    page = message.get_body(("html",))
    assert text is not None
    assert page is not None
    plain_text = text.get_content()
    for label, value in alert_text.facts(alert):
        assert f"{label}: {value}" in plain_text
        assert html.escape(value) in page.get_content()
    assert alert_text.chart_url("SOLUSDT") in plain_text
    assert f'href="{html.escape(alert_text.chart_url("SOLUSDT"))}"' in page.get_content()


async def test_a_resent_alert_has_the_same_message_id(tmp_path: Path) -> None:
    alert = make_alert()
    with running_smtp(tmp_path, "starttls") as server:
        await send_one(config(server), [alert])
        await send_one(config(server), [alert])
        await send_one(config(server), [make_alert("ETHUSDT")])

    ids = [mail.message["Message-ID"] for mail in server.recorder.mails]
    assert ids[0] == ids[1]
    assert ids[2] != ids[0]


async def test_the_html_part_escapes_what_it_shows(tmp_path: Path) -> None:
    alert = make_alert(rule="<b>fast</b>&co")
    with running_smtp(tmp_path, "starttls") as server:
        await send_one(config(server), [alert])

    page = server.recorder.mails[0].message.get_body(("html",))
    assert page is not None
    assert "&lt;b&gt;fast&lt;/b&gt;&amp;co" in page.get_content()
    assert "<b>fast</b>" not in page.get_content()


async def test_a_digest_of_200_names_its_first_alerts_in_the_subject_and_lists_20(
        tmp_path: Path) -> None:
    alerts = alert_text.by_significance(burst(200))
    with running_smtp(tmp_path, "starttls") as server:
        answer = await send_one(config(server, subject_prefix="[alerts]"), alerts)

    assert isinstance(answer, Accepted)
    [mail] = server.recorder.mails
    message = mail.message
    top = ", ".join(alert_text.short_line(a) for a in alerts[:3])
    assert message["Subject"] == f"[alerts] {alert_text.digest_title(alerts)}: {top}, …"
    assert message["Message-ID"].startswith("<digest.")
    text = message.get_body(("plain",))
    page = message.get_body(("html",))
    assert text is not None
    assert page is not None
    lines = text.get_content().strip().splitlines()
    assert len(lines) == DIGEST_LISTED + 1
    assert lines[0].startswith(alert_text.short_line(alerts[0]))
    assert lines[0].endswith(alert_text.chart_url(alerts[0].symbol))
    assert lines[-1] == "… and 180 more"
    assert page.get_content().count("<li>") == DIGEST_LISTED
    assert len(mail.raw) < 32_000


async def test_implicit_tls_with_auth(tmp_path: Path) -> None:
    with running_smtp(tmp_path, "tls", auth=True) as server:
        answer = await send_one(config(server, username=USER, password=PASSWORD),
                                [make_alert()])

    assert isinstance(answer, Accepted)
    assert server.recorder.mails[0].authenticated_as == USER


async def test_starttls_with_auth(tmp_path: Path) -> None:
    with running_smtp(tmp_path, "starttls", auth=True) as server:
        answer = await send_one(config(server, username=USER, password=PASSWORD),
                                [make_alert()])

    assert isinstance(answer, Accepted)
    assert server.recorder.mails[0].authenticated_as == USER


async def test_plain_smtp_without_tls(tmp_path: Path) -> None:
    with running_smtp(tmp_path, "none") as server:
        answer = await send_one(config(server, ca_file=None), [make_alert()])

    assert isinstance(answer, Accepted)
    assert len(server.recorder.mails) == 1


async def test_a_wrong_password_is_refused_535_without_the_password(tmp_path: Path) -> None:
    wrong = "not-the-app-password-42"
    with running_smtp(tmp_path, "tls", auth=True) as server:
        answer = await send_one(config(server, username=USER, password=wrong),
                                [make_alert()])

    assert isinstance(answer, Refused)
    assert answer.reason == "smtp_535"
    assert answer.detail.startswith("535 ")
    assert wrong not in answer.detail
    assert server.recorder.mails == []


async def test_a_451_is_transient_and_a_550_a_refusal(tmp_path: Path) -> None:
    with running_smtp(tmp_path, "starttls") as server:
        server.recorder.answer_next("451 4.3.0 Try again later",
                                    "550 5.1.1 Mailbox unavailable")
        first = await send_one(config(server), [make_alert()])
        second = await send_one(config(server), [make_alert()])

    assert first == Transient("smtp_451", "451 4.3.0 Try again later")
    assert second == Refused("smtp_550", "550 5.1.1 Mailbox unavailable")


@pytest.mark.parametrize("security", ["tls", "starttls"])
async def test_a_server_certificate_the_ca_did_not_sign_is_refused(
        tmp_path: Path, security: smtp_support.Security) -> None:
    with running_smtp(tmp_path / "a", security) as server, \
            running_smtp(tmp_path / "b", security) as other:
        answer = await send_one(config(server, ca_file=str(other.ca_file)), [make_alert()])

    assert isinstance(answer, Refused)
    assert answer.reason == "tls_verify"
    assert "CERTIFICATE_VERIFY_FAILED" in answer.detail
    assert server.recorder.mails == []


async def test_starttls_asked_of_a_server_without_it_is_refused(tmp_path: Path) -> None:
    with running_smtp(tmp_path, "none") as server:
        answer = await send_one(config(server, security="starttls"), [make_alert()])

    assert isinstance(answer, Refused)
    assert answer.reason == "smtp_not_supported"
    assert "STARTTLS" in answer.detail


async def test_a_slow_server_is_a_timeout_and_an_absent_one_a_connect_failure(
        tmp_path: Path) -> None:
    with running_smtp(tmp_path, "starttls") as server:
        server.recorder.delay_s = 2.0
        slow = await send_one(config(server), [make_alert()], timeout_s=0.5)
    absent = await send_one(config(server, port=free_port()), [make_alert()])

    assert isinstance(slow, Transient)
    assert slow.reason == "timeout"
    assert isinstance(absent, Transient)
    assert absent.reason == "connect"


def test_the_default_ports_and_the_budget() -> None:
    tls = smtp.create(msgspec_convert({"name": "a", "host": "smtp.example.org",
                                       "from": "a@example.org", "to": ["b@example.org"],
                                       "security": "tls"}), timeout_s=1.0)
    starttls = smtp.create(msgspec_convert({"name": "b", "host": "smtp.example.org",
                                            "from": "a@example.org", "to": ["b@example.org"],
                                            "max_per_minute": 3}), timeout_s=1.0)

    assert (tls.port, starttls.port) == (465, 587)
    assert tls.budget.limits == (Limit(1, 10.0),)
    assert starttls.budget.limits == (Limit(1, 10.0), Limit(3, 60.0))
    assert (tls.kind, tls.human) == ("email", True)


@pytest.mark.parametrize(("fields", "field"), [
    ({"to": []}, "to"),
    ({"from": "not an address"}, "from"),
    ({"username": USER}, "password"),
    ({"username": USER, "password": PASSWORD, "security": "none"}, "security"),
    ({"ca_file": "/nonexistent/ca.pem"}, "ca_file"),
])
def test_a_bad_field_names_the_channel_and_the_field(fields: dict[str, Any], field: str,
                                                     ) -> None:
    values: dict[str, Any] = {"name": "inbox", "host": "smtp.example.org",
                              "from": "a@example.org", "to": ["b@example.org"]} | fields
    with pytest.raises(SettingsError) as caught:
        smtp.create(msgspec_convert(values), timeout_s=1.0)

    assert "'inbox'" in str(caught.value)
    assert f"{field}:" in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_the_repr_names_the_channel_not_the_password() -> None:
    channel = smtp.create(msgspec_convert({
        "name": "inbox", "host": "smtp.example.org", "from": "a@example.org",
        "to": ["b@example.org"], "username": USER, "password": PASSWORD}), timeout_s=1.0)

    assert repr(channel) == "Email(name='inbox')"
