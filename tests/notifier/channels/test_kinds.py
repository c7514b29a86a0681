"""Every channel's format for every kind of alert: the single message and a digest carry
the kind's figures (the liquidated sum with "≥" and its lower-bound caveat, the funding
rate and the time to the next funding, the volume and its ratio to the baseline) and the
TradingView chart of the perpetual, in each API's own markup; a webhook gets the alert's
fields, kind included."""

from __future__ import annotations

import html
import re
from typing import Any, Final

import msgspec
import pytest

from common.rule_model import RuleKind
from common.schemas import Alert
from fake_notify import telegram as fake_telegram
from notifier.alert_text import by_significance
from notifier.channels import discord, ntfy, plain, slack, smtp, telegram, webhook
from notifier.config import EmailChannel
from tests.support.notify import kind_alert, make_alert

CHART: Final = "https://www.tradingview.com/chart/?symbol=BINANCE:BTCUSDT.P"
# What each kind's single message must say, whatever the markup (as a regex over its text).
SAID: Final[dict[str, tuple[str, ...]]] = {
    "liquidation": (r"longs liquidated", r"≥ \$2\.4M in 60 s", r"5 orders",
                    r"≥ \$2,460,000", r"at most one order per symbol per second"),
    "funding": (r"funding \+0\.2100 %", r"longs pay", r"next funding in 3 h 12 min"),
    "volume": (r"volume \$5\.1M in 60 s", r"7\.3×", r"\$698,630 per 60 s",
               r"threshold 5×"),
}
CAVEAT: Final = r"lower bounds.*one liquidation per symbol per second"


def text_of_telegram(alerts: list[Alert]) -> tuple[str, list[tuple[str, str]]]:
    parsed = fake_telegram.parse_html(telegram.message_html(alerts))  # Telegram would parse it
    return parsed.text, parsed.links


def text_of_discord(alerts: list[Alert]) -> str:
    embed = discord.message_embed(alerts)
    fields = " ".join(f"{f['name']}: {f['value']}" for f in embed.get("fields", []))
    # Discord's markdown escapes shown as they read.
    text = f"{embed['title']} {embed.get('url', '')} {embed.get('description', '')} {fields}"
    return re.sub(r"\\(.)", r"\1", text)


def text_of_slack(alerts: list[Alert]) -> str:
    message = slack.message_of(alerts)
    parts = [message["text"]]
    for block in message["blocks"]:
        if "text" in block:
            parts.append(block["text"]["text"])
        parts += [f["text"] for f in block.get("fields", [])]
    return html.unescape(" ".join(parts))


def text_of_ntfy(alerts: list[Alert]) -> str:
    body = ntfy.payload(alerts, topic="desk", priority=None)
    return f"{body['title']} {body['message']} {body['click']}"


def email_parts(alerts: list[Alert]) -> tuple[str, str, str]:
    config = msgspec.convert({"name": "inbox", "host": "127.0.0.1", "from": "a@example.org",
                              "to": ["b@example.org"]}, EmailChannel)
    message = smtp.build_message(config, alerts)
    text_part, html_part = (part.get_content() for part in message.iter_parts())
    return message["Subject"], text_part, html.unescape(html_part)


def renderings(alerts: list[Alert]) -> dict[str, str]:
    """The text of ``alerts`` as each channel format sends it."""
    telegram_text, telegram_links = text_of_telegram(alerts)
    subject, text_part, html_part = email_parts(alerts)
    return {
        "plain (apprise)": f"{plain.title(alerts)} {plain.body(alerts)}",
        "telegram": telegram_text + " " + " ".join(href for href, _ in telegram_links),
        "discord": text_of_discord(alerts),
        "slack": text_of_slack(alerts),
        "ntfy": text_of_ntfy(alerts),
        "email text": f"{subject} {text_part}",
        "email html": html_part,
    }


@pytest.mark.parametrize("kind", ["liquidation", "funding", "volume"])
def test_every_format_of_a_single_alert_says_its_kind_figures_and_links_its_chart(
        kind: RuleKind) -> None:
    for channel, text in renderings([kind_alert(kind)]).items():
        for wanted in SAID[kind]:
            assert re.search(wanted, text), f"{channel} lacks {wanted!r}: {text}"
        assert CHART in text, channel


def test_every_format_of_a_digest_lists_each_kind_and_the_caveat_once() -> None:
    alerts = [kind_alert("liquidation"), kind_alert("funding", symbol="ETHUSDT"),
              kind_alert("volume", symbol="SOLUSDT"), make_alert("XRPUSDT", -4.2)]
    for channel, text in renderings(alerts).items():
        for wanted in (r"BTCUSDT.{0,80}longs liquidated ≥ \$2\.4M in 60 s",
                       r"ETHUSDT.{0,80}funding \+0\.2100 % \(longs pay\), next in 3 h 12 min",
                       r"SOLUSDT.{0,80}volume \$5\.1M in 60 s, 7\.3×",
                       r"XRPUSDT.{0,80}−4\.20 %"):
            assert re.search(wanted, text), f"{channel} lacks {wanted!r}: {text}"
        assert len(re.findall(CAVEAT, text)) == 1, f"{channel}: {text}"
    quiet = [kind_alert("funding"), make_alert("XRPUSDT", -4.2)]
    for channel, text in renderings(quiet).items():
        assert not re.search(CAVEAT, text), channel


def test_a_digest_lists_the_alert_furthest_over_its_threshold_first() -> None:
    big = kind_alert("liquidation", notional_usdt=9_000_000.0)  # 9× its threshold
    small = make_alert("XRPUSDT", 2.1)  # 1.05×
    text = plain.body(by_significance([small, big]), links=False)
    assert text.index("BTCUSDT") < text.index("XRPUSDT")


def test_ntfy_tags_a_kind_with_its_emoji() -> None:
    tags: list[Any] = ntfy.payload([kind_alert("liquidation")], topic="t", priority=None)["tags"]
    assert tags[:2] == ["boom", "chart_with_downwards_trend"]
    assert ntfy.payload([kind_alert("funding")], topic="t", priority=None)["tags"][0] == (
        "moneybag")


@pytest.mark.parametrize("kind", ["price", "liquidation", "funding", "volume"])
def test_a_webhook_gets_the_alert_with_its_kind_and_figures(kind: RuleKind) -> None:
    alert = make_alert("BTCUSDT") if kind == "price" else kind_alert(kind)
    document = msgspec.json.decode(webhook.body(alert))
    assert document["type"] == "alert"
    sent = document["alert"]
    assert sent["kind"] == kind
    assert sent["id"] == alert.id
    every: dict[str, dict[str, object]] = {"price": {"change_pct": alert.change_pct},
               "liquidation": {"notional_usdt": 2_460_000.0, "liquidations": 5,
                               "threshold": 1_000_000.0},
               "funding": {"funding_rate_pct": 0.21, "next_funding_ms": alert.next_funding_ms},
               "volume": {"volume_usdt": 5_100_000.0, "baseline_volume_usdt": 698_630.0,
                          "threshold": 5.0}}
    figures = every[kind]
    for field, value in figures.items():
        assert sent[field] == value, field
