"""NOTIFY_CONFIG: the file's shape, ``${VAR}`` from the environment passed in, and an error
for every bad field that names the channel (or route) and the field, and never a secret."""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path
from typing import Any, Final

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.settings import SettingsError
from notifier.config import (
    MAX_CONFIG_BYTES,
    AppriseChannel,
    DiscordChannel,
    EmailChannel,
    NotifyConfig,
    NtfyChannel,
    Route,
    SlackChannel,
    TelegramChannel,
    WebhookChannel,
    load_config,
    parse_config,
)

EXAMPLE_FILE: Final = Path(__file__).resolve().parents[2] / "infra" / "notify.example.toml"

# The issue's example, as the README shows it.
ISSUE_EXAMPLE: Final = """
[[channel]]
name = "desk"                      # [a-z0-9_-]{1,40}, unique
type = "telegram"                  # telegram | discord | slack | ntfy | email | webhook | apprise
token = "${TELEGRAM_BOT_TOKEN}"
chat_id = "-1001234567890"
# api_url = "https://api.telegram.org"   (a self-hosted Bot API server, or a test server)

[[channel]]
name = "hooks"
type = "webhook"
url = "https://example.org/binance-alerts"
secret = "${WEBHOOK_SECRET}"       # whsec_<base64>, Standard Webhooks

[[route]]                          # which alerts go where; an alert may match several
channels = ["desk"]
rules = ["default"]                # rule names; omitted: all
directions = ["up", "down"]        # omitted: both
min_change_pct = 3                 # |change| at least this; omitted: any
min_level = 1                      # 2: only escalations
symbols = ["*USDT"]                # allow globs; deny = [...] wins; omitted: all
"""

# Every value is distinctive, so that a test can look for it in a message or a repr.
ENV: Final = {
    "TELEGRAM_BOT_TOKEN": "123456:SECRET-telegram-token",
    "WEBHOOK_SECRET": "whsec_U0VDUkVULXdlYmhvb2stc2VjcmV0LWtleQ==",
    "DISCORD_WEBHOOK_URL": "https://discord.com/api/webhooks/42/SECRET-discord",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/SECRET-slack",
    "NTFY_TOKEN": "tk_SECRET-ntfy",
    "SMTP_PASSWORD": "SECRET-smtp-password",
    "APPRISE_URL": "pover://SECRET-apprise@user",
}
SECRETS: Final = [v.removeprefix("whsec_") for v in ENV.values()] + ["SECRET"]

TELEGRAM: Final = """[[channel]]
name = "desk"
type = "telegram"
token = "${TELEGRAM_BOT_TOKEN}"
chat_id = "-1001234567890"
"""
DISCORD: Final = '[[channel]]\nname = "desk"\ntype = "discord"\nurl = "${DISCORD_WEBHOOK_URL}"\n'
SLACK: Final = '[[channel]]\nname = "desk"\ntype = "slack"\nurl = "${SLACK_WEBHOOK_URL}"\n'
NTFY: Final = '[[channel]]\nname = "desk"\ntype = "ntfy"\ntopic = "alerts"\n'
EMAIL: Final = """[[channel]]
name = "desk"
type = "email"
host = "smtp.example.org"
from = "alerts@example.org"
to = ["trader@example.org"]
"""
WEBHOOK: Final = """[[channel]]
name = "desk"
type = "webhook"
url = "https://example.org/hook"
secret = "${WEBHOOK_SECRET}"
"""
APPRISE: Final = '[[channel]]\nname = "desk"\ntype = "apprise"\nurl = "${APPRISE_URL}"\n'
ROUTE: Final = '[[route]]\nchannels = ["desk"]\n'


def error(text: str, environ: dict[str, str] = ENV) -> str:
    """The message of the loader's ``SettingsError``, checked to hold no secret."""
    with pytest.raises(SettingsError) as caught:
        parse_config(text, environ)
    message = str(caught.value)
    # Nothing chained that a traceback would print (msgspec's messages may quote a value).
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__
    for secret in SECRETS:
        assert secret not in message
    return message


def field_error(channel: str, extra: str = "", route: str = ROUTE) -> str:
    """The error of ``channel`` with ``extra`` lines, routed; without the prefix."""
    message = error(f"{channel}{extra}\n{route}")
    assert message.startswith("NOTIFY_CONFIG: ")
    return message.removeprefix("NOTIFY_CONFIG: ")


# --- the shape -----------------------------------------------------------------------------


def test_the_issue_example_parses_to_its_structs() -> None:
    config = parse_config(ISSUE_EXAMPLE, ENV)
    assert config == NotifyConfig(
        channel=[
            TelegramChannel(name="desk", token="123456:SECRET-telegram-token",
                            chat_id="-1001234567890"),
            WebhookChannel(name="hooks", url="https://example.org/binance-alerts",
                           secret="whsec_U0VDUkVULXdlYmhvb2stc2VjcmV0LWtleQ=="),
        ],
        route=[Route(channels=["desk"], rules=["default"], directions=["up", "down"],
                     min_change_pct=3.0, min_level=1, symbols=["*USDT"])],
    )
    assert isinstance(config.route[0].min_change_pct, float)


def test_every_channel_type_parses_with_its_defaults() -> None:
    text = "\n".join(table.replace('"desk"', f'"c{i}"') for i, table in enumerate(
        [TELEGRAM, DISCORD, SLACK, NTFY, EMAIL, WEBHOOK, APPRISE]))
    route = '[[route]]\nchannels = ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]\n'
    config = parse_config(f"{text}\n{route}", ENV)
    assert [type(c) for c in config.channel] == [
        TelegramChannel, DiscordChannel, SlackChannel, NtfyChannel, EmailChannel,
        WebhookChannel, AppriseChannel]
    telegram, _, _, ntfy, email, _, _ = config.channel
    assert isinstance(telegram, TelegramChannel)
    assert isinstance(ntfy, NtfyChannel)
    assert isinstance(email, EmailChannel)
    assert telegram.api_url == "https://api.telegram.org"
    assert (ntfy.server, ntfy.token, ntfy.priority) == ("https://ntfy.sh", None, None)
    assert (email.sender, email.port, email.security) == ("alerts@example.org", None,
                                                          "starttls")
    assert config.route == [Route(channels=[f"c{i}" for i in range(7)])]


def test_a_telegram_chat_id_written_as_a_number_is_kept_as_its_text() -> None:
    text = TELEGRAM.replace('"-1001234567890"', "-1001234567890") + ROUTE
    channel = parse_config(text, ENV).channel[0]
    assert isinstance(channel, TelegramChannel)
    assert channel.chat_id == "-1001234567890"


def test_numbers_may_come_as_strings_so_that_a_variable_can_fill_them() -> None:
    text = EMAIL + 'port = "${SMTP_PORT}"\nmax_per_minute = "6"\n' + ROUTE
    channel = parse_config(text, {"SMTP_PORT": "2525"}).channel[0]
    assert isinstance(channel, EmailChannel)
    assert (channel.port, channel.max_per_minute) == (2525, 6)


def test_the_example_file_parses_with_every_type_routed(caplog: pytest.LogCaptureFixture) -> None:
    text = EXAMPLE_FILE.read_text()
    settings = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    assert set(re.findall(r"\$\{(\w+)\}", settings)) == set(ENV)
    with caplog.at_level(logging.WARNING, logger="notifier.config"):
        config = load_config(str(EXAMPLE_FILE), ENV)
    assert caplog.records == []
    assert {type(c) for c in config.channel} == {
        TelegramChannel, DiscordChannel, SlackChannel, NtfyChannel, EmailChannel,
        WebhookChannel, AppriseChannel}


# --- ${VAR} --------------------------------------------------------------------------------


def test_a_missing_variable_names_the_file_variable_the_channel_and_the_field() -> None:
    assert error(TELEGRAM + ROUTE, {}) == (
        "NOTIFY_CONFIG: channel 'desk' field 'token': environment variable "
        "TELEGRAM_BOT_TOKEN is not set")


def test_an_empty_variable_is_an_error_too() -> None:
    assert error(TELEGRAM + ROUTE, {"TELEGRAM_BOT_TOKEN": ""}) == (
        "NOTIFY_CONFIG: channel 'desk' field 'token': environment variable "
        "TELEGRAM_BOT_TOKEN is empty")


def test_only_the_environment_passed_in_is_read() -> None:
    assert error(TELEGRAM.replace("-1001234567890", "${PATH}") + ROUTE) == (
        "NOTIFY_CONFIG: channel 'desk' field 'chat_id': environment variable PATH is not set")


def test_variables_fill_whole_values_parts_of_strings_and_list_items() -> None:
    text = (EMAIL.replace('"trader@example.org"', '"${DESK}@example.org", "${BOSS}"')
            + 'subject_prefix = "[${ENVIRONMENT}/${REGION}]"\n' + ROUTE)
    environ = {"DESK": "desk", "BOSS": "boss@example.org", "ENVIRONMENT": "prod",
               "REGION": "eu"}
    channel = parse_config(text, environ).channel[0]
    assert isinstance(channel, EmailChannel)
    assert channel.to == ["desk@example.org", "boss@example.org"]
    assert channel.subject_prefix == "[prod/eu]"


def test_a_double_dollar_brace_is_a_literal_and_a_lone_dollar_is_kept() -> None:
    text = EMAIL + 'subject_prefix = "$${NOT_A_VARIABLE} costs $5 $"\n' + ROUTE
    channel = parse_config(text, {}).channel[0]
    assert isinstance(channel, EmailChannel)
    assert channel.subject_prefix == "${NOT_A_VARIABLE} costs $5 $"


def test_a_value_is_not_expanded_twice() -> None:
    text = EMAIL + 'subject_prefix = "${PREFIX}"\n' + ROUTE
    channel = parse_config(text, {"PREFIX": "${OTHER}"}).channel[0]
    assert isinstance(channel, EmailChannel)
    assert channel.subject_prefix == "${OTHER}"


@pytest.mark.parametrize("reference", ["${", "${1ST}", "${A-B}", "${}"])
def test_a_broken_reference_is_an_error(reference: str) -> None:
    assert field_error(EMAIL, f'subject_prefix = "x {reference}"\n') == (
        "channel 'desk' field 'subject_prefix': '${' starts no ${NAME} (NAME: letters, "
        "digits and '_'); write '$${' for a literal '${'")


def test_a_name_cannot_come_from_the_environment() -> None:
    assert field_error(TELEGRAM.replace('name = "desk"', 'name = "${NAME}"')) == (
        "channel #1 field 'name': '${NAME}' is not a name: 1 to 40 of a-z, 0-9, '_' and '-' "
        "(a name cannot come from the environment: it is how logs and metrics name the "
        "channel)")


# --- errors of the document ----------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("", "no [[channel]]: the notifier has nothing to send to"),
    ("# only a comment\n", "no [[channel]]: the notifier has nothing to send to"),
    ("channel = []\n" + ROUTE, "no [[channel]]: the notifier has nothing to send to"),
    (TELEGRAM, "no [[route]]: no alert would go to any channel (add one with channels = [...])"),
    ('[channel]\nname = "desk"\n',
     "[channel] is a single table: write [[channel]] (double brackets), once per channel"),
    ("channel = 3\n", "'channel' must be an array of tables ([[channel]]), got an integer"),
    ("channel = [3]\n", "channel #1 must be a table ([[channel]]), got an integer"),
    ('route = "desk"\n' + TELEGRAM,
     "'route' must be an array of tables ([[route]]), got a string"),
    ('channels = ["desk"]\n' + TELEGRAM + ROUTE,
     "unknown key 'channels' at the top level (the file holds [[channel]] and [[route]] "
     "tables only)"),
    ('[[channel]]\nname = "desk\ntype = "telegram"\n',
     "not valid TOML: Illegal character '\\n' (at line 2, column 13)"),
    ("[[channel]]\nname = desk\n", "not valid TOML: Invalid value (at line 2, column 8)"),
])
def test_document_errors(text: str, expected: str) -> None:
    assert error(text) == f"NOTIFY_CONFIG: {expected}"


def test_duplicate_names_name_both_positions() -> None:
    text = TELEGRAM + WEBHOOK.replace('"desk"', '"hooks"') + TELEGRAM + ROUTE
    assert error(text) == ("NOTIFY_CONFIG: channel #3 field 'name': 'desk' is already the "
                           "name of channel #1")


def test_a_channel_no_route_sends_to_is_a_warning_once(
        caplog: pytest.LogCaptureFixture) -> None:
    text = TELEGRAM + WEBHOOK.replace('"desk"', '"hooks"') + ROUTE + ROUTE
    with caplog.at_level(logging.WARNING, logger="notifier.config"):
        config = parse_config(text, ENV)
    assert [c.name for c in config.channel] == ["desk", "hooks"]
    assert [r.getMessage() for r in caplog.records] == [
        "NOTIFY_CONFIG: channel 'hooks' is in no route's channels: nothing will be sent to it"]


# --- errors of a channel's fields ----------------------------------------------------------

TYPES: Final = "telegram, discord, slack, ntfy, email, webhook, apprise"


@pytest.mark.parametrize(("channel", "extra", "expected"), [
    ('[[channel]]\nname = "desk"\ntype = "fax"\n', "",
     f"channel 'desk' field 'type': 'fax' is not a channel type (one of: {TYPES})"),
    ('[[channel]]\nname = "desk"\ntype = 7\n', "",
     f"channel 'desk' field 'type': 7 is not a channel type (one of: {TYPES})"),
    ('[[channel]]\nname = "desk"\n', "",
     f"channel 'desk' field 'type': is missing (one of: {TYPES})"),
    (TELEGRAM, 'chat = "1"\n',
     "channel 'desk' field 'chat': is not a field of a telegram channel (its fields: "
     "api_url, chat_id, max_per_minute, name, token, type)"),
    (TELEGRAM.replace('chat_id = "-1001234567890"\n', ""), "",
     "channel 'desk' field 'chat_id': is missing"),
    (EMAIL.replace('from = "alerts@example.org"\n', ""), "",
     "channel 'desk' field 'from': is missing"),
    (TELEGRAM.replace('"-1001234567890"', "true"), "",
     "channel 'desk' field 'chat_id': must be a string, got a boolean"),
    (EMAIL.replace('["trader@example.org"]', '"trader@example.org"'), "",
     "channel 'desk' field 'to': must be an array, got a string"),
    (EMAIL.replace('["trader@example.org"]', '["trader@example.org", 3]'), "",
     "channel 'desk' field 'to': item 2 must be a string, got an integer"),
    (EMAIL, 'port = "smtp"\n', "channel 'desk' field 'port': must be an integer, got a string"),
    (EMAIL, "port = 2025-01-01\n",
     "channel 'desk' field 'port': must be an integer, got a date"),
    (EMAIL, "port = 1.5\n", "channel 'desk' field 'port': must be an integer, got a number"),
    (EMAIL, 'security = "ssl"\n',
     "channel 'desk' field 'security': must be one of: starttls, tls, none"),
    # the name
    (TELEGRAM.replace('"desk"', '"Desk"'), "",
     "channel #1 field 'name': 'Desk' is not a name: 1 to 40 of a-z, 0-9, '_' and '-'"),
    (TELEGRAM.replace('"desk"', f'"{"d" * 41}"'), "",
     f"channel #1 field 'name': '{'d' * 41}' is not a name: 1 to 40 of a-z, 0-9, '_' and '-'"),
    (TELEGRAM.replace('"desk"', '""'), "",
     "channel #1 field 'name': '' is not a name: 1 to 40 of a-z, 0-9, '_' and '-'"),
    (TELEGRAM.replace('"desk"', "3"), "",
     "channel #1 field 'name': must be a string, got an integer"),
    (TELEGRAM.replace('name = "desk"\n', ""), "",
     "channel #1 field 'name': is missing (1 to 40 of a-z, 0-9, '_' and '-')"),
    # common
    (TELEGRAM, "max_per_minute = 0\n",
     "channel 'desk' field 'max_per_minute': must be at least 1 (messages a minute), got 0"),
    # telegram
    (TELEGRAM, 'api_url = "ftp://api.telegram.org"\n',
     "channel 'desk' field 'api_url': must be an http:// or https:// URL with a host, got "
     "'ftp://api.telegram.org'"),
    (TELEGRAM, 'api_url = "https://"\n',
     "channel 'desk' field 'api_url': must be an http:// or https:// URL with a host, got "
     "'https://'"),
    (TELEGRAM, 'api_url = "http://[::1"\n',
     "channel 'desk' field 'api_url': must be an http:// or https:// URL with a host, got "
     "'http://[::1'"),
    (TELEGRAM, 'api_url = "api.telegram.org"\n',
     "channel 'desk' field 'api_url': must be an http:// or https:// URL with a host, got "
     "'api.telegram.org'"),
    (TELEGRAM.replace('"-1001234567890"', '"the desk"'), "",
     "channel 'desk' field 'chat_id': must be a chat id (an integer such as -1001234567890) "
     "or @channelusername, got 'the desk'"),
    (TELEGRAM.replace('"${TELEGRAM_BOT_TOKEN}"', '"12:SECRET/../x"'), "",
     "channel 'desk' field 'token': must be the bot's token from @BotFather (no spaces, '/', "
     "'?', '#' or '%')"),
    # discord, slack, apprise: the URL is the secret
    (DISCORD.replace('"${DISCORD_WEBHOOK_URL}"', '"ftp://discord.com/SECRET"'), "",
     "channel 'desk' field 'url': must be an http:// or https:// URL with a host"),
    (DISCORD, f'username = "{"u" * 81}"\n',
     "channel 'desk' field 'username': must be 1 to 80 characters"),
    (SLACK.replace('"${SLACK_WEBHOOK_URL}"', '"hooks.slack.com/services/SECRET"'), "",
     "channel 'desk' field 'url': must be an http:// or https:// URL with a host"),
    (APPRISE.replace('"${APPRISE_URL}"', '"pover:SECRET"'), "",
     "channel 'desk' field 'url': must be an Apprise URL (scheme://..., e.g. tgram://, "
     "mailto://, json://)"),
    # ntfy
    (NTFY, 'server = "ntfy.sh"\n',
     "channel 'desk' field 'server': must be an http:// or https:// URL with a host, got "
     "'ntfy.sh'"),
    (NTFY, "priority = 0\n",
     "channel 'desk' field 'priority': must be between 1 and 5 (ntfy's 1 min to 5 max), got 0"),
    (NTFY, "priority = 6\n",
     "channel 'desk' field 'priority': must be between 1 and 5 (ntfy's 1 min to 5 max), got 6"),
    (NTFY.replace('"alerts"', '"my alerts"'), "",
     "channel 'desk' field 'topic': must be a topic: 1 to 64 of letters, digits, '_' and '-', "
     "got 'my alerts'"),
    (NTFY, 'token = "tk SECRET"\n', "channel 'desk' field 'token': must be a token without "
     "spaces"),
    # email
    (EMAIL.replace('["trader@example.org"]', "[]"), "",
     "channel 'desk' field 'to': is empty: list at least one address"),
    (EMAIL.replace('["trader@example.org"]', '["trader@example.org", "nobody"]'), "",
     "channel 'desk' field 'to': item 2 must be an e-mail address (a@example.org or Name "
     "<a@example.org>), got 'nobody'"),
    (EMAIL.replace('["trader@example.org"]', '["a@example.org, b@example.org"]'), "",
     "channel 'desk' field 'to': item 1 must be an e-mail address (a@example.org or Name "
     "<a@example.org>), got 'a@example.org, b@example.org'"),
    (EMAIL.replace('"alerts@example.org"', '"alerts@example.org\\nBcc: x@example.org"'), "",
     "channel 'desk' field 'from': must be an e-mail address (a@example.org or Name "
     "<a@example.org>), got 'alerts@example.org\\nBcc: x@example.org'"),
    (EMAIL, "port = 0\n", "channel 'desk' field 'port': must be between 1 and 65535, got 0"),
    (EMAIL, "port = 65536\n",
     "channel 'desk' field 'port': must be between 1 and 65535, got 65536"),
    (EMAIL, 'password = "SECRET"\n',
     "channel 'desk' field 'password': is set without 'username': set both or neither"),
    (EMAIL, 'username = "alerts"\n',
     "channel 'desk' field 'username': is set without 'password': set both or neither"),
    (EMAIL.replace('"smtp.example.org"', '"smtp example"'), "",
     "channel 'desk' field 'host': must be a host name or address, got 'smtp example'"),
    (EMAIL, 'ca_file = ""\n',
     "channel 'desk' field 'ca_file': is empty: leave it out to use the system's CAs"),
    # webhook
    (WEBHOOK.replace('"https://example.org/hook"', '"example.org/hook"'), "",
     "channel 'desk' field 'url': must be an http:// or https:// URL with a host, got "
     "'example.org/hook'"),
    (WEBHOOK.replace('"${WEBHOOK_SECRET}"', '"whsec_SECRET!!"'), "",
     "channel 'desk' field 'secret': must be whsec_ followed by the base64 of a key "
     "(Standard Webhooks)"),
    (WEBHOOK.replace('"${WEBHOOK_SECRET}"', '"whsec_"'), "",
     "channel 'desk' field 'secret': must be whsec_ followed by the base64 of a key "
     "(Standard Webhooks)"),
])
def test_channel_field_errors(channel: str, extra: str, expected: str) -> None:
    assert field_error(channel, extra) == expected


def test_an_error_of_a_later_channel_names_that_channel() -> None:
    text = TELEGRAM + NTFY.replace('"desk"', '"phone"') + "priority = 9\n" + ROUTE
    assert error(text) == ("NOTIFY_CONFIG: channel 'phone' field 'priority': must be between "
                           "1 and 5 (ntfy's 1 min to 5 max), got 9")
    unnamed = TELEGRAM + NTFY.replace('name = "desk"\n', 'name = "Phone"\n') + ROUTE
    assert error(unnamed).startswith("NOTIFY_CONFIG: channel #2 field 'name': ")


# --- errors of a route's fields ------------------------------------------------------------


@pytest.mark.parametrize(("route", "expected"), [
    ('[[route]]\nchannels = ["desk", "phone"]\n',
     "route #1 field 'channels': item 2, 'phone', is not a channel (channels: desk)"),
    ("[[route]]\nchannels = []\n", "route #1 field 'channels': is empty: name at least one "
     "channel"),
    ('[[route]]\nrules = ["default"]\n', "route #1 field 'channels': is missing"),
    ('[[route]]\nchanels = ["desk"]\n',
     "route #1 field 'chanels': is not a field of a route (its fields: channels, deny, "
     "directions, kinds, min_change_pct, min_level, rules, symbols)"),
    (ROUTE + 'kinds = ["price", "liquidations"]\n',
     "route #1 field 'kinds': item 2 must be one of: price, liquidation, funding, volume"),
    (ROUTE + 'kinds = "funding"\n', "route #1 field 'kinds': must be an array, got a string"),
    (ROUTE + "kinds = []\n", "route #1 field 'kinds': is empty: leave it out to match every "
     "kind"),
    (ROUTE + 'directions = ["up", "sideways"]\n',
     "route #1 field 'directions': item 2 must be one of: up, down"),
    (ROUTE + 'directions = "up"\n', "route #1 field 'directions': must be an array, got a "
     "string"),
    (ROUTE + "directions = []\n", "route #1 field 'directions': is empty: leave it out to "
     "match both"),
    (ROUTE + "min_change_pct = -1\n",
     "route #1 field 'min_change_pct': must be a number >= 0 (percent), got -1.0"),
    (ROUTE + "min_change_pct = nan\n",
     "route #1 field 'min_change_pct': must be a number >= 0 (percent), got nan"),
    (ROUTE + "min_change_pct = inf\n",
     "route #1 field 'min_change_pct': must be a number >= 0 (percent), got inf"),
    (ROUTE + 'min_change_pct = "3%"\n',
     "route #1 field 'min_change_pct': must be a number, got a string"),
    (ROUTE + "min_level = 0\n",
     "route #1 field 'min_level': must be at least 1 (2: escalations only), got 0"),
    (ROUTE + 'rules = ["Fast"]\n', "route #1 field 'rules': item 1, 'Fast', is not a rule "
     "name (1 to 40 of a-z, 0-9, '_' and '-')"),
    (ROUTE + "rules = []\n", "route #1 field 'rules': is empty: leave it out to match every "
     "rule"),
    (ROUTE + 'symbols = ["*USDT", "*usdc"]\n',
     "route #1 field 'symbols': item 2, '*usdc', is not an uppercase symbol or glob (letters "
     "A-Z, digits, _ . - and the wildcards * ? [ ] !)"),
    (ROUTE + "symbols = []\n", "route #1 field 'symbols': is empty: leave it out to match "
     "every symbol"),
    (ROUTE + 'deny = ["BTC USDT"]\n',
     "route #1 field 'deny': item 1, 'BTC USDT', is not an uppercase symbol or glob (letters "
     "A-Z, digits, _ . - and the wildcards * ? [ ] !)"),
    (ROUTE + "deny = [" + ", ".join(['"X"'] * 501) + "]\n",
     "route #1 field 'deny': has more than 500 patterns"),
    (ROUTE + ROUTE + "min_level = -1\n",
     "route #2 field 'min_level': must be at least 1 (2: escalations only), got -1"),
])
def test_route_field_errors(route: str, expected: str) -> None:
    assert field_error(TELEGRAM, route=route) == expected


def test_a_route_names_the_kinds_it_takes_and_takes_all_without_kinds() -> None:
    text = TELEGRAM + ROUTE + 'kinds = ["liquidation", "funding"]\n' + ROUTE
    routes = parse_config(text, ENV).route
    assert routes[0].kinds == ["liquidation", "funding"]
    assert routes[1].kinds is None


# --- secrets -------------------------------------------------------------------------------


def test_a_value_from_the_environment_is_never_quoted_in_an_error() -> None:
    chat = TELEGRAM.replace('"-1001234567890"', '"${CHAT}"') + ROUTE
    assert error(chat, {**ENV, "CHAT": "SECRET chat"}) == (
        "NOTIFY_CONFIG: channel 'desk' field 'chat_id': must be a chat id (an integer such as "
        "-1001234567890) or @channelusername")
    route = '[[route]]\nchannels = ["${WHERE}"]\n'
    assert error(TELEGRAM + route, {**ENV, "WHERE": "SECRET-place"}) == (
        "NOTIFY_CONFIG: route #1 field 'channels': item 1, the value from the environment, is "
        "not a channel (channels: desk)")
    level = ROUTE + 'min_level = "${LEVEL}"\n'
    assert error(TELEGRAM + level, {**ENV, "LEVEL": "-7"}) == (
        "NOTIFY_CONFIG: route #1 field 'min_level': must be at least 1 (2: escalations only)")
    security = EMAIL + 'security = "${SECURITY}"\n' + ROUTE
    assert error(security, {"SECURITY": "SECRET"}) == (
        "NOTIFY_CONFIG: channel 'desk' field 'security': must be one of: starttls, tls, none")
    url = TELEGRAM + 'api_url = "https://${API}/"\n' + ROUTE
    assert error(url, {**ENV, "API": "SECRET host"}) == (
        "NOTIFY_CONFIG: channel 'desk' field 'api_url': must be an http:// or https:// URL "
        "with a host")


def test_secrets_and_values_from_the_environment_are_masked_in_reprs() -> None:
    text = EXAMPLE_FILE.read_text().replace('"-1001234567890"', '"${CHAT}"').replace(
        'password = "${SMTP_PASSWORD}"', 'password = "SECRET-literal-password"')
    config = parse_config(text, {**ENV, "CHAT": "-100777"})
    shown = [repr(config), str(config), *(repr(c) for c in config.channel)]
    shown += [repr(list(c.__rich_repr__())) for c in config.channel]
    for secret in [*SECRETS, "-100777"]:
        assert not [s for s in shown if secret in s], secret
    desk = config.channel[0]
    assert repr(desk) == ("TelegramChannel(name='desk', token=<secret>, chat_id=<from ${CHAT}>, "
                          "api_url='https://api.telegram.org', max_per_minute=None)")
    assert "url='https://example.org/binance-alerts', secret=<secret>" in repr(config)
    # Masked in the repr only: the value itself is what the channel sends.
    assert isinstance(desk, TelegramChannel)
    assert desk.token == ENV["TELEGRAM_BOT_TOKEN"]
    assert msgspec.to_builtins(desk)["chat_id"] == "-100777"


@pytest.mark.parametrize("channel", [
    TelegramChannel(name="a", token="SECRET", chat_id="1"),
    DiscordChannel(name="a", url="https://discord.com/api/webhooks/1/SECRET"),
    SlackChannel(name="a", url="https://hooks.slack.com/services/SECRET"),
    NtfyChannel(name="a", topic="t", token="SECRET"),
    EmailChannel(name="a", host="h", sender="a@b", to=["c@d"], username="u",
                 password="SECRET"),
    WebhookChannel(name="a", url="https://example.org", secret="whsec_SECRET"),
    AppriseChannel(name="a", url="json://SECRET"),
])
def test_a_struct_built_in_code_masks_its_secret_too(channel: Any) -> None:
    assert "SECRET" not in repr(channel)
    assert "<secret>" in repr(channel)
    assert "SECRET" not in repr(list(channel.__rich_repr__()))
    assert repr(channel).startswith(f"{type(channel).__name__}(name='a', ")


def test_an_unset_optional_secret_shows_as_none() -> None:
    assert "token=None" in repr(NtfyChannel(name="a", topic="t"))


# --- the file ------------------------------------------------------------------------------


def test_a_file_is_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "notify.toml"
    path.write_text(ISSUE_EXAMPLE)
    assert load_config(str(path), ENV) == parse_config(ISSUE_EXAMPLE, ENV)
    path.write_text(ISSUE_EXAMPLE.replace("min_level = 1", "min_level = 0"))
    with pytest.raises(SettingsError, match=r"^NOTIFY_CONFIG: route #1 field 'min_level'"):
        load_config(str(path), ENV)


def test_an_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    with pytest.raises(SettingsError) as caught:
        load_config(str(missing), ENV)
    assert str(caught.value) == f"NOTIFY_CONFIG: cannot read {missing}: No such file or directory"
    with pytest.raises(SettingsError) as caught:
        load_config(str(tmp_path), ENV)
    assert str(caught.value) == f"NOTIFY_CONFIG: cannot read {tmp_path}: Is a directory"


def test_a_file_over_one_mebibyte_is_refused_and_one_of_exactly_that_is_read(
        tmp_path: Path) -> None:
    path = tmp_path / "notify.toml"
    body = (TELEGRAM + ROUTE).encode()
    path.write_bytes(body + b"#" * (MAX_CONFIG_BYTES - len(body)))
    assert load_config(str(path), ENV).channel[0].name == "desk"
    path.write_bytes(body + b"#" * (MAX_CONFIG_BYTES - len(body) + 1))
    with pytest.raises(SettingsError) as caught:
        load_config(str(path), ENV)
    assert str(caught.value) == (f"NOTIFY_CONFIG: {path} is larger than 1048576 bytes: "
                                 "not a notification config")
    with pytest.raises(SettingsError, match="larger than 1048576 bytes"):
        parse_config(TELEGRAM + ROUTE + "#" * MAX_CONFIG_BYTES, ENV)


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "notify.toml"
    path.write_bytes(b'[[channel]]\nname = "d\xe9sk"\n')
    with pytest.raises(SettingsError) as caught:
        load_config(str(path), ENV)
    assert str(caught.value) == f"NOTIFY_CONFIG: {path} is not UTF-8 text (byte 21)"


def test_the_source_names_the_variable_in_every_message() -> None:
    with pytest.raises(SettingsError, match=r"^MY_FILE: no \[\[channel\]\]"):
        parse_config("", {}, source="MY_FILE")


# --- nothing crashes the loader ------------------------------------------------------------

_FIELDS = ["name", "type", "token", "chat_id", "api_url", "url", "secret", "topic", "server",
           "priority", "host", "from", "to", "port", "security", "username", "password",
           "max_per_minute", "channels", "kinds", "rules", "directions", "min_change_pct",
           "min_level", "symbols", "deny", "username", "ca_file", "subject_prefix"]
_WORDS = ["desk", "telegram", "discord", "slack", "ntfy", "email", "webhook", "apprise",
          "up", "down", "default", "price", "liquidation", "funding", "volume", "*USDT",
          "-100123", "https://example.org/x", "a@b.c",
          "${V}", "${UNSET}", "${EMPTY}", "$${V}", "${", "whsec_AAAA", "tls", "json://x", ""]
_scalars = (st.sampled_from(_WORDS) | st.text(max_size=12) | st.integers(-2, 70_000)
            | st.integers() | st.floats() | st.booleans())
_values = _scalars | st.lists(_scalars, max_size=3)
_random_tables = st.dictionaries(st.sampled_from(_FIELDS) | st.text(min_size=1, max_size=5),
                                 _values, max_size=8)
_VALID_CHANNELS: Final[list[dict[str, object]]] = [
    {"name": "desk", "type": "telegram", "token": "${V}", "chat_id": "-100123"},
    {"name": "desk", "type": "discord", "url": "https://example.org/${V}"},
    {"name": "desk", "type": "slack", "url": "https://example.org/x"},
    {"name": "desk", "type": "ntfy", "topic": "alerts", "token": "${V}", "priority": 3},
    {"name": "desk", "type": "email", "host": "h", "from": "a@b.c", "to": ["${V}"],
     "username": "u", "password": "${V}", "port": 25},
    {"name": "desk", "type": "webhook", "url": "https://example.org", "secret": "whsec_AAAA"},
    {"name": "desk", "type": "apprise", "url": "json://${V}"},
]
# Mostly a valid table with a field or two changed, so that every check is reached.
_channel_tables = _random_tables | st.builds(
    lambda base, changes: {**base, **changes}, st.sampled_from(_VALID_CHANNELS),
    st.dictionaries(st.sampled_from(_FIELDS), _values, max_size=2))
_route_tables = _random_tables | st.builds(
    lambda changes: {"channels": ["desk"], **changes},
    st.dictionaries(st.sampled_from(_FIELDS), _values, max_size=3))


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}"
                             for c in value) + '"'
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def _toml(channels: list[dict[str, object]], routes: list[dict[str, object]]) -> str:
    lines = []
    for kind, tables in (("channel", channels), ("route", routes)):
        for table in tables:
            lines.append(f"[[{kind}]]")
            lines += [f"{_toml_value(key)} = {_toml_value(v)}" for key, v in table.items()]
    return "\n".join(lines) + "\n"


_ENVIRON: Final = {"V": "SECRET-v", "EMPTY": ""}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(channels=st.lists(_channel_tables, max_size=3),
       routes=st.lists(_route_tables, max_size=2))
def test_no_config_makes_the_loader_raise_anything_but_a_settings_error(
        channels: list[dict[str, object]], routes: list[dict[str, object]]) -> None:
    text = _toml(channels, routes)
    try:
        shown = repr(parse_config(text, _ENVIRON))
    except SettingsError as exc:
        shown = str(exc)
        assert shown.startswith("NOTIFY_CONFIG: ")
    assert "SECRET" not in shown


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_no_text_makes_the_loader_raise_anything_but_a_settings_error(text: str) -> None:
    with contextlib.suppress(SettingsError):
        parse_config(text, _ENVIRON)
