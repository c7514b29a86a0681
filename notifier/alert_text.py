"""The words of a notification, shared by every channel: each channel only adds its markup
(and escapes for it). Pure functions of the alert, so a message reads the same on
Telegram, Discord, Slack, ntfy and in an e-mail.

Every message carries the symbol, arrow and direction, change, price and base, window,
rule, level, event time and the TradingView chart of the perpetual.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final
from urllib.parse import quote

from common.schemas import Alert

CHART_URL: Final = "https://www.tradingview.com/chart/?symbol=BINANCE:{symbol}.P"
ARROWS: Final = {"up": "▲", "down": "▼"}
MINUS: Final = "\u2212"  # a real minus sign: "−2.40 %" reads better than "-2.40 %"


def chart_url(symbol: str) -> str:
    # Percent-encoded, so that the URL stays one URL inside any markup's link syntax.
    return CHART_URL.format(symbol=quote(symbol, safe=""))


def arrow(alert: Alert) -> str:
    return ARROWS[alert.direction]


def signed_pct(change_pct: float) -> str:
    """``+3.10 %`` / ``−2.40 %``."""
    sign = "+" if change_pct >= 0 else MINUS
    return f"{sign}{abs(change_pct):.2f} %"


def price(value: float) -> str:
    """Enough digits for a coin worth 0.0000123 and for one worth 97,000."""
    return f"{value:.8g}" if abs(value) < 1e8 else f"{value:,.0f}"


def window(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0 and seconds >= 120:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def event_time(ms: int) -> str:
    """UTC, to the millisecond: ``2026-12-02 16:41:54.123 UTC``."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d} UTC"


def level_text(level: int) -> str:
    return "1 (first move)" if level <= 1 else f"{level} (escalation)"


def headline(alert: Alert) -> str:
    """``▲ SOLUSDT +3.10 % in 60 s``: the title of a single message."""
    return f"{short_line(alert)} in {window(alert.window_s)}"


def short_line(alert: Alert, symbol: str | None = None) -> str:
    """``▲ SOLUSDT +3.10 %``: one alert in a digest. A channel passes ``symbol`` already
    marked up (escaped and linked to its chart); the arrow and the change need no escaping
    in any markup."""
    shown = alert.symbol if symbol is None else symbol
    return f"{arrow(alert)} {shown} {signed_pct(alert.change_pct)}"


def facts(alert: Alert) -> list[tuple[str, str]]:
    """The fields of a single message, in reading order, as (label, value)."""
    return [
        ("Direction", f"{arrow(alert)} {alert.direction}"),
        ("Change", signed_pct(alert.change_pct)),
        ("Price", f"{price(alert.price)} (from {price(alert.base_price)})"),
        ("Window", window(alert.window_s)),
        ("Rule", alert.rule or "default"),
        ("Level", level_text(alert.level)),
        ("Event time", event_time(alert.event_time_ms)),
    ]


def by_significance(alerts: Sequence[Alert]) -> list[Alert]:
    """Most significant first: the largest move, then the higher level, then the newest."""
    return sorted(alerts, key=lambda a: (-abs(a.change_pct), -a.level, -a.event_time_ms))


def digest_title(alerts: Sequence[Alert]) -> str:
    """``14 alerts in 6 s``: how many, over how long (their event times)."""
    times = [a.event_time_ms for a in alerts]
    span_s = max(1, round((max(times) - min(times)) / 1000))
    return f"{len(alerts)} alerts in {span_s} s"


def digest_rest(alerts: Sequence[Alert], listed: int) -> str | None:
    """The last line of a digest that lists only the first ``listed``: ``… and 12 more``."""
    rest = len(alerts) - listed
    return f"… and {rest} more" if rest > 0 else None
