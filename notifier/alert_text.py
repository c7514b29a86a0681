"""The words of a notification, shared by every channel: each channel only adds its markup
(and escapes for it). Pure functions of the alert, so a message reads the same on
Telegram, Discord, Slack, ntfy and in an e-mail.

Every message carries the symbol, the arrow and what it means, the kind's figures (a
price move; a liquidated sum, always marked as the lower bound it is; a funding rate and
the time to the next funding; a volume and its ratio to the baseline), the rule, the
event time and the TradingView chart of the perpetual. Digests list the alerts most
significant first: ``significance`` says how far each is over its threshold.
"""

from __future__ import annotations

import math
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


def signed_pct(change_pct: float, digits: int = 2) -> str:
    """``+3.10 %`` / ``−2.40 %``."""
    sign = "+" if change_pct >= 0 else MINUS
    return f"{sign}{abs(change_pct):.{digits}f} %"


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


# --- the figures of the other kinds ---------------------------------------------------------

# Said wherever a liquidated sum is: the exchange's ``!forceOrder@arr`` carries at most the
# latest liquidation per symbol per second, so every sum is a lower bound.
LIQUIDATION_CAVEAT: Final = ("at least: the exchange reports at most one order per symbol "
                             "per second, so the sum may be larger")
LIQUIDATION_NOTE: Final = ("≥: liquidated sums are lower bounds (the exchange reports at most "
                           "one liquidation per symbol per second)")
# Who was liquidated (``direction`` "down": longs, SELL orders) and who pays funding.
LIQUIDATED: Final = {"down": "longs", "up": "shorts"}
PAYS: Final = {"up": "longs pay", "down": "shorts pay"}
_UNITS: Final = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k"))
UNKNOWN: Final = "?"  # a figure the alert lacks (a malformed alert still gets its message)


def usd(value: float | None, *, at_least: bool = False) -> str:
    """``$2.4M``, ``$12M``, ``$950``: a sum at a glance. With ``at_least`` the figure is
    rounded down, so that "≥ $2.4M" stays true of 2.46 million."""
    if value is None or not math.isfinite(value):
        return UNKNOWN
    for size, unit in _UNITS:
        if abs(value) >= size:
            scaled = value / size
            digits = 1 if abs(scaled) < 10 else 0
            if at_least:
                scaled = math.floor(scaled * 10**digits) / 10**digits
            return f"${scaled:.{digits}f}{unit}"
    return f"${math.floor(value) if at_least else round(value):,}"


def usd_exact(value: float | None, *, at_least: bool = False) -> str:
    """``$2,412,345``: the whole figure, for the facts of a single message (rounded down
    with ``at_least``)."""
    if value is None or not math.isfinite(value):
        return UNKNOWN
    return f"${math.floor(value):,}" if at_least else f"${value:,.0f}"


def rate_pct(value: float | None) -> str:
    """A funding rate in percent, to the exchange's precision: ``+0.2100 %``."""
    return UNKNOWN if value is None else signed_pct(value, 4)


def countdown(ms: int) -> str:
    """``3 h 12 min``, ``12 min``, ``45 s``: how long until a time, rounded down."""
    seconds = max(0, ms // 1000)
    if seconds < 60:
        return f"{seconds} s"
    hours, minutes = divmod(seconds // 60, 60)
    if not hours:
        return f"{minutes} min"
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def next_funding_in(alert: Alert) -> str:
    """Time from the alert's event to the next funding (both are exchange times)."""
    if alert.next_funding_ms is None:
        return UNKNOWN
    return countdown(alert.next_funding_ms - alert.event_time_ms)


def volume_ratio(alert: Alert) -> float | None:
    """The window's volume over the baseline's mean per window; None when either is
    missing or the baseline traded nothing."""
    volume, baseline = alert.volume_usdt, alert.baseline_volume_usdt
    if volume is None or baseline is None or not baseline > 0:
        return None
    return volume / baseline


def over_baseline(alert: Alert) -> str:
    """`` over the last 1 h``: the baseline the mean is of (alerts before it was sent: "")."""
    return "" if alert.baseline_s is None else f" over the last {window(alert.baseline_s)}"


def _ratio_text(alert: Alert) -> str:
    ratio = volume_ratio(alert)
    if ratio is not None:
        return f"{ratio:.1f}×"
    return "none in its baseline" if alert.baseline_volume_usdt == 0 else UNKNOWN


def _orders(count: int | None) -> str:
    if count is None:
        return "orders unknown"
    return f"{count} order" if count == 1 else f"{count} orders"


# --- what a message says, per kind ------------------------------------------------------------


def headline(alert: Alert) -> str:
    """The title of a single message: ``▲ SOLUSDT +3.10 % in 60 s`` for a price alert,
    ``▼ BTCUSDT longs liquidated: ≥ $2.4M in 60 s (5 orders)``, ``▲ BTCUSDT funding
    +0.2100 % (longs pay), next funding in 3 h 12 min``, ``▲ BTCUSDT volume $5.1M in 60 s,
    7.3× its mean per 60 s over the last 1 h``."""
    span = window(alert.window_s)
    head = f"{arrow(alert)} {alert.symbol}"
    if alert.kind == "liquidation":
        return (f"{head} {LIQUIDATED[alert.direction]} liquidated: "
                f"≥ {usd(alert.notional_usdt, at_least=True)} in {span} "
                f"({_orders(alert.liquidations)})")
    if alert.kind == "funding":
        return (f"{head} funding {rate_pct(alert.funding_rate_pct)} "
                f"({PAYS[alert.direction]}), next funding in {next_funding_in(alert)}")
    if alert.kind == "volume":
        ratio = _ratio_text(alert)
        per = "" if volume_ratio(alert) is None else f" its mean per {span}{over_baseline(alert)}"
        return f"{head} volume {usd(alert.volume_usdt)} in {span}, {ratio}{per}"
    return f"{short_line(alert)} in {span}"


def short_line(alert: Alert, symbol: str | None = None) -> str:
    """One alert in a digest: ``▲ SOLUSDT +3.10 %``, ``▼ BTCUSDT longs liquidated
    ≥ $2.4M in 60 s``, ``▲ BTCUSDT funding +0.2100 % (longs pay), next in 3 h 12 min``,
    ``▲ BTCUSDT volume $5.1M in 60 s, 7.3×``. A channel passes ``symbol`` already marked
    up (escaped and linked to its chart); nothing else here needs escaping in any markup."""
    shown = alert.symbol if symbol is None else symbol
    head = f"{arrow(alert)} {shown}"
    if alert.kind == "liquidation":
        return (f"{head} {LIQUIDATED[alert.direction]} liquidated "
                f"≥ {usd(alert.notional_usdt, at_least=True)} in {window(alert.window_s)}")
    if alert.kind == "funding":
        return (f"{head} funding {rate_pct(alert.funding_rate_pct)} "
                f"({PAYS[alert.direction]}), next in {next_funding_in(alert)}")
    if alert.kind == "volume":
        return (f"{head} volume {usd(alert.volume_usdt)} in {window(alert.window_s)}, "
                f"{_ratio_text(alert)}")
    return f"{head} {signed_pct(alert.change_pct)}"


def window_suffix(alert: Alert) -> str:
    """`` · 60 s`` for a price alert, whose ``short_line`` does not say its window; ""
    for the others, whose lines do."""
    return f" · {window(alert.window_s)}" if alert.kind == "price" else ""


def listing(alert: Alert, symbol: str | None = None) -> str:
    """A digest's line in the plain-text channels: ``▲ SOLUSDT +3.10 % · 60 s``."""
    return short_line(alert, symbol) + window_suffix(alert)


def digest_notes(alerts: Sequence[Alert]) -> list[str]:
    """What a digest says once below its lines: the lower-bound caveat when it lists a
    liquidation."""
    return [LIQUIDATION_NOTE] if any(a.kind == "liquidation" for a in alerts) else []


def facts(alert: Alert) -> list[tuple[str, str]]:
    """The fields of a single message, in reading order, as (label, value)."""
    rule = ("Rule", alert.rule or "default")
    when = ("Event time", event_time(alert.event_time_ms))
    if alert.kind == "liquidation":
        return [
            ("Liquidated", f"{arrow(alert)} {LIQUIDATED[alert.direction]}"),
            ("Notional", f"≥ {usd_exact(alert.notional_usdt, at_least=True)} in "
                         f"{_orders(alert.liquidations)}"),
            ("Lower bound", LIQUIDATION_CAVEAT),
            ("Threshold", usd_exact(alert.threshold)),
            ("Price", f"{price(alert.price)} (first order {price(alert.base_price)})"),
            ("Window", window(alert.window_s)), rule, ("Level", level_text(alert.level)),
            when,
        ]
    if alert.kind == "funding":
        next_at = ("" if alert.next_funding_ms is None
                   else f" ({event_time(alert.next_funding_ms)})")
        return [
            ("Direction", f"{arrow(alert)} {PAYS[alert.direction]}"),
            ("Funding rate", rate_pct(alert.funding_rate_pct)),
            ("Threshold", f"|rate| ≥ {rate_pct(alert.threshold_pct).lstrip('+')}"),
            ("Next funding", f"in {next_funding_in(alert)}{next_at}"),
            ("Mark price", price(alert.price)), rule, when,
        ]
    if alert.kind == "volume":
        factor = "?" if alert.threshold is None else f"{alert.threshold:g}×"
        return [
            ("Direction", f"{arrow(alert)} price {alert.direction}"),
            ("Volume", f"{usd_exact(alert.volume_usdt)} in {window(alert.window_s)}"),
            ("Baseline", f"{usd_exact(alert.baseline_volume_usdt)} per "
                         f"{window(alert.window_s)} (mean{over_baseline(alert)})"),
            ("Ratio", f"{_ratio_text(alert)} (threshold {factor})"),
            ("Price", f"{price(alert.price)} (from {price(alert.base_price)}, "
                      f"{signed_pct(alert.change_pct)})"),
            rule, when,
        ]
    return [
        ("Direction", f"{arrow(alert)} {alert.direction}"),
        ("Change", signed_pct(alert.change_pct)),
        ("Price", f"{price(alert.price)} (from {price(alert.base_price)})"),
        ("Window", window(alert.window_s)),
        rule,
        ("Level", level_text(alert.level)),
        when,
    ]


def significance(alert: Alert) -> float:
    """How far over its threshold an alert is, as a multiple of it, so that the kinds
    compare: |change| / threshold_pct (price), notional / min_notional_usdt
    (liquidation), |rate| / min_funding_rate_pct (funding), (volume / baseline mean) /
    volume_factor (volume). A figure or threshold the alert lacks, and a volume alert
    whose baseline traded nothing (no ratio to speak of), count as 1: just at it."""
    measure: float | None
    limit: float | None
    if alert.kind == "liquidation":
        measure, limit = alert.notional_usdt, alert.threshold
    elif alert.kind == "funding":
        rate = alert.funding_rate_pct
        measure, limit = (abs(rate) if rate is not None else None), alert.threshold_pct
    elif alert.kind == "volume":
        measure, limit = volume_ratio(alert), alert.threshold
    else:
        measure, limit = abs(alert.change_pct), alert.threshold_pct
    if measure is None or limit is None or not limit > 0 or not math.isfinite(measure):
        return 1.0
    return measure / limit


def by_significance(alerts: Sequence[Alert]) -> list[Alert]:
    """Most significant first (``significance``), then the higher level, then the newest."""
    return sorted(alerts, key=lambda a: (-significance(a), -a.level, -a.event_time_ms))


def digest_title(alerts: Sequence[Alert]) -> str:
    """``14 alerts in 6 s``: how many, over how long (their event times)."""
    times = [a.event_time_ms for a in alerts]
    span_s = max(1, round((max(times) - min(times)) / 1000))
    return f"{len(alerts)} alerts in {span_s} s"


def digest_rest(alerts: Sequence[Alert], listed: int) -> str | None:
    """The last line of a digest that lists only the first ``listed``: ``… and 12 more``."""
    rest = len(alerts) - listed
    return f"… and {rest} more" if rest > 0 else None
