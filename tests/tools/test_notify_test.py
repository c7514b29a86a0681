"""``binance-alerter notify-test CHANNEL`` as an operator runs it: a real process sending
through the real channel code to the fake APIs over HTTP, its answer printed, its exit code
0, 1 or 2, and no secret anywhere in what it prints."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fake_notify import telegram
from fake_notify.server import FakeApis, running_fake
from notifier.config import DiscordChannel, TelegramChannel
from tests.support.recordings import CliProcess
from tests.support.smtp import PASSWORD, USER, running_smtp
from tools.notify_test import mask, secrets_of

WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# A token the fake Telegram does not know: it answers 401, as Telegram does.
REVOKED_TOKEN = "987654321:REVOKED-token-BBBBBBBBBBBBBBBBBBBBBBBBBBB"


def config_text(fake_url: str, *, chat_id: str = telegram.PRIVATE_CHAT) -> str:
    return f"""
[[channel]]
name = "desk"
type = "telegram"
token = "${{TELEGRAM_BOT_TOKEN}}"
chat_id = "{chat_id}"
api_url = "{fake_url}"

[[channel]]
name = "hooks"
type = "webhook"
url = "{fake_url}/hooks/ops"
secret = "${{WEBHOOK_SECRET}}"

[[route]]
channels = ["desk", "hooks"]
"""


@pytest.fixture
async def fake() -> AsyncIterator[FakeApis]:
    async with running_fake() as fakes:
        yield fakes


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "notify.toml"
    path.write_text(text)
    return path


async def notify_test(tmp_path: Path, *args: str | Path, env: dict[str, str] | None = None,
                      token: str = telegram.TOKEN) -> tuple[int, str, str]:
    """Run the command to its end (the fake answers meanwhile, on this event loop)."""
    environ = {"TELEGRAM_BOT_TOKEN": token, "WEBHOOK_SECRET": WEBHOOK_SECRET,
               "NOTIFY_CONFIG": "", **(env or {})}
    process = CliProcess.start(["notify-test", *args], tmp_path, "notify-test", env=environ)
    code = await asyncio.to_thread(process.wait, 30)
    return code, process.stdout(), process.stderr()


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in (telegram.TOKEN, REVOKED_TOKEN, WEBHOOK_SECRET,
                       WEBHOOK_SECRET.removeprefix("whsec_"), PASSWORD):
            assert secret not in text, text


async def test_a_test_alert_reaches_telegram_and_the_answer_is_printed(
        fake: FakeApis, tmp_path: Path) -> None:
    config = write_config(tmp_path, config_text(fake.url))
    code, out, err = await notify_test(tmp_path, "desk", "--config", config)
    assert code == 0, (out, err)
    [request] = fake.of("telegram")
    assert request.status == 200
    text = telegram.arguments(request)["text"]
    assert "BTCUSDT" in text
    assert "notify-test" in text  # the rule's name marks it as a test
    lines = out.splitlines()
    assert lines[0].startswith("desk (telegram): sending a test alert (BTCUSDT, rule "
                               "notify-test, id notify-test-"), out
    assert lines[-1].startswith("desk: accepted (HTTP 200)"), out
    assert_no_secret(out, err)


async def test_the_config_defaults_to_notify_config_and_a_webhook_gets_the_alert(
        fake: FakeApis, tmp_path: Path) -> None:
    config = write_config(tmp_path, config_text(fake.url))
    code, out, err = await notify_test(tmp_path, "hooks", env={"NOTIFY_CONFIG": str(config)})
    assert code == 0, (out, err)
    [request] = fake.of("webhook")
    body = json.loads(request.body)
    assert body["type"] == "alert"
    assert body["alert"]["symbol"] == "BTCUSDT"
    assert body["alert"]["rule"] == body["alert"]["source"] == "notify-test"
    assert request.headers["webhook-id"] == body["alert"]["id"]
    assert body["alert"]["id"] in out
    assert out.splitlines()[-1].startswith("hooks: accepted (HTTP 200)"), out
    assert not fake.of("telegram")  # one channel, the one named
    assert_no_secret(out, err)


async def test_a_refused_token_exits_1_with_the_apis_reason_and_not_the_token(
        fake: FakeApis, tmp_path: Path) -> None:
    config = write_config(tmp_path, config_text(fake.url))
    code, out, err = await notify_test(tmp_path, "desk", "--config", config,
                                       token=REVOKED_TOKEN)
    assert code == 1, (out, err)
    [request] = fake.of("telegram")
    assert request.status == 401
    last = out.splitlines()[-1]
    assert last.startswith("desk: refused (http_401)"), out
    assert "Unauthorized" in last  # what Telegram said
    assert_no_secret(out, err)


async def test_an_unknown_chat_is_refused_with_telegrams_description(
        fake: FakeApis, tmp_path: Path) -> None:
    config = write_config(tmp_path, config_text(fake.url, chat_id="-100999"))
    code, out, err = await notify_test(tmp_path, "desk", "--config", config)
    assert code == 1, (out, err)
    last = out.splitlines()[-1]
    assert last.startswith("desk: refused (http_400)"), out
    assert "chat not found" in last
    assert_no_secret(out, err)


@pytest.mark.parametrize(("status", "headers", "expected"), [
    (429, {"Retry-After": "7"}, "hooks: rate limited: retry after 7 s"),
    (503, None, "hooks: transient failure (http_503); the notifier would retry"),
])
async def test_a_rate_limit_or_a_server_error_exits_1_saying_so(
        fake: FakeApis, tmp_path: Path, status: int, headers: dict[str, str] | None,
        expected: str) -> None:
    fake.fail("webhook", status, {"error": "try later"}, headers=headers)
    config = write_config(tmp_path, config_text(fake.url))
    code, out, err = await notify_test(tmp_path, "hooks", "--config", config)
    assert code == 1, (out, err)
    assert out.splitlines()[-1].startswith(expected), out
    assert len(fake.of("webhook")) == 1  # a test is one request: no retry here
    assert_no_secret(out, err)


def email_config(tmp_path: Path, port: int, ca_file: Path) -> Path:
    return write_config(tmp_path, f"""
[[channel]]
name = "mail"
type = "email"
host = "127.0.0.1"
port = {port}
security = "starttls"
ca_file = "{ca_file}"
username = "{USER}"
password = "${{SMTP_PASSWORD}}"
from = "{USER}"
to = ["desk@example.org"]

[[route]]
channels = ["mail"]
""")


@pytest.mark.parametrize("password", [PASSWORD, "wrong-password-99"])
async def test_an_email_goes_out_over_starttls_or_its_refusal_is_shown(
        tmp_path: Path, password: str) -> None:
    with running_smtp(tmp_path / "smtp", "starttls", auth=True) as smtp:
        config = email_config(tmp_path, smtp.port, smtp.ca_file)
        code, out, err = await notify_test(tmp_path, "mail", "--config", config,
                                           env={"SMTP_PASSWORD": password})
    last = out.splitlines()[-1]
    if password == PASSWORD:
        assert code == 0, (out, err)
        assert last.startswith("mail: accepted (SMTP 250)"), out
        [mail] = smtp.recorder.mails
        assert "BTCUSDT" in str(mail.message["Subject"])
        assert mail.recipients == ["desk@example.org"]
    else:
        assert code == 1, (out, err)
        assert last.startswith("mail: refused (smtp_535)"), out  # what the server said
        assert not smtp.recorder.mails
        assert password not in out + err
    assert_no_secret(out, err)


async def test_an_unknown_channel_exits_2_listing_the_configured_ones(
        fake: FakeApis, tmp_path: Path) -> None:
    config = write_config(tmp_path, config_text(fake.url))
    code, out, err = await notify_test(tmp_path, "desks", "--config", config)
    assert code == 2, (out, err)
    [line] = err.splitlines()
    assert line == (f"binance-alerter notify-test: no channel named 'desks' in {config}; "
                    "configured: desk, hooks")
    assert out == ""
    assert not fake.received


async def test_a_config_error_exits_2_in_one_line_naming_channel_and_field(
        fake: FakeApis, tmp_path: Path) -> None:
    config = write_config(tmp_path, config_text(fake.url))
    code, out, err = await notify_test(tmp_path, "hooks", "--config", config,
                                       env={"TELEGRAM_BOT_TOKEN": ""})
    # (an empty variable is a missing one; the other channel is not the one tested, but a
    # file the notifier would refuse is refused here too)
    assert code == 2, (out, err)
    [line] = err.splitlines()
    assert line.startswith("binance-alerter notify-test: "), line
    assert "desk" in line
    assert "token" in line
    assert "TELEGRAM_BOT_TOKEN" in line
    assert out == ""
    assert not fake.received


async def test_no_config_at_all_exits_2_saying_where_one_comes_from(tmp_path: Path) -> None:
    code, out, err = await notify_test(tmp_path, "desk")
    assert code == 2, (out, err)
    assert err.splitlines() == ["binance-alerter notify-test: no configuration: give "
                                "--config FILE or set NOTIFY_CONFIG"]
    missing = tmp_path / "absent.toml"
    code, out, err = await notify_test(tmp_path, "desk", "--config", missing)
    assert code == 2, (out, err)
    [line] = err.splitlines()
    assert str(missing) in line


def test_every_secret_of_a_channel_and_its_parts_are_masked() -> None:
    """The second line of defence: whatever a channel's answer quotes of its secrets."""
    url = "https://discord.com/api/webhooks/112233445566778899/Zx9-secret-webhook-token"
    discord = DiscordChannel(name="room", url=url)
    shown = mask(f"404 {url} / Zx9-secret-webhook-token / unknown webhooks of room",
                 secrets_of(discord))
    assert shown == "404 *** / *** / unknown webhooks of room"
    desk = TelegramChannel(name="desk", token=telegram.TOKEN, chat_id="42")
    assert mask(f"bot{telegram.TOKEN}: 42", secrets_of(desk)) == "bot***: 42"
