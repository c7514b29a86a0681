"""How ``binance-alerter backtest`` prints alerts (table, JSON lines, CSV) and its summary.

Alerts are written as they are found, so a long backtest shows its first results at once
and never holds them all. ``jsonl`` is exactly the ``Alert`` struct (docs/architecture.md)
encoded by msgspec (the same JSON a browser gets), one per line, so it can be piped into ``jq`` or
compared with a live run; ``csv`` has every field but the nested ``path``. For both, the
summary goes to stderr so that stdout stays machine-readable.
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol, TextIO

import msgspec

from common.rule_model import Rule
from common.schemas import Alert

FORMATS: Final = ("table", "jsonl", "csv")
_json: Final = msgspec.json.Encoder()
CSV_FIELDS: Final = tuple(f for f in Alert.__struct_fields__ if f != "path")


@dataclass
class BacktestStats:
    files: int = 0
    bytes: int = 0
    frames: int = 0
    ticks: int = 0
    alerts: int = 0
    filtered: int = 0  # entries that carry no price we use: depth, bookTicker, COIN-M…
    bad_entries: int = 0
    malformed: int = 0  # frames the ingestor would have rejected whole
    skipped: int = 0  # lines that are no WebSocket frame: headers, REST snapshots
    truncated: int = 0  # files that ended mid-stream (a killed recorder)
    elapsed_s: float = 0.0
    interrupted: bool = False


class AlertWriter(Protocol):
    def write(self, alerts: Sequence[Alert]) -> None: ...

    def finish(self) -> None: ...


class JsonLinesWriter:
    def __init__(self, out: TextIO) -> None:
        self._out = out

    def write(self, alerts: Sequence[Alert]) -> None:
        self._out.write("".join(_json.encode(a).decode() + "\n" for a in alerts))

    def finish(self) -> None:
        """Nothing to close: every line is complete as written."""


class CsvWriter:
    def __init__(self, out: TextIO) -> None:
        self._writer = csv.writer(out, lineterminator="\n")
        self._writer.writerow(CSV_FIELDS)

    def write(self, alerts: Sequence[Alert]) -> None:
        # str(float) is the shortest text that reads back to the same float.
        self._writer.writerows([[_cell(getattr(a, f)) for f in CSV_FIELDS] for a in alerts])

    def finish(self) -> None:
        """Nothing to close: the header went out first, every row is complete."""


def _cell(value: object) -> object:
    return "" if value is None else value


class TableWriter:
    """Fixed-width columns, so rows line up without waiting for the widest value; the last
    but two says the alert's kind and its figures (``figures``)."""

    HEADER: Final = (f"{'event time (UTC)':<23}  {'symbol':<16} {'dir':<4} {'lvl':>3} "
                     f"{'change %':>9}  {'price':>14} {'base':>14}  {'window':>7} "
                     f"{'thresh %':>8}  {'kind':<11} {'figures':<44} {'rule':<16} source")

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._header_written = False

    def write(self, alerts: Sequence[Alert]) -> None:
        if alerts and not self._header_written:
            self._out.write(self.HEADER + "\n")
            self._header_written = True
        for a in alerts:
            self._out.write(
                f"{format_time_ms(a.event_time_ms):<23}  {a.symbol:<16} {a.direction:<4} "
                f"{a.level:>3} {a.change_pct:>+9.4f}  {a.price:>14.10g} {a.base_price:>14.10g}  "
                f"{a.window_s:>5} s {a.threshold_pct:>8g}  {a.kind:<11} {figures(a):<44} "
                f"{a.rule or '':<16} {a.source}\n")

    def finish(self) -> None:
        if not self._header_written:
            self._out.write("no alerts\n")


def figures(alert: Alert) -> str:
    """What fired, in the kind's own units: empty for a price alert (its change and
    threshold have their columns)."""
    if alert.kind == "liquidation":
        return (f"{alert.notional_usdt or 0:,.0f} USDT in {alert.liquidations or 0} orders "
                f">= {alert.threshold or 0:,.0f}")
    if alert.kind == "funding":
        return (f"rate {alert.funding_rate_pct or 0:+.4f} % >= {alert.threshold or 0:g} %, "
                f"next {format_time_ms(alert.next_funding_ms or 0)[11:16]}")
    if alert.kind == "volume":
        return (f"{alert.volume_usdt or 0:,.0f} USDT >= {alert.threshold or 0:g} x "
                f"{alert.baseline_volume_usdt or 0:,.0f}")
    return ""


def make_writer(fmt: str, out: TextIO) -> AlertWriter:
    if fmt == "jsonl":
        return JsonLinesWriter(out)
    if fmt == "csv":
        return CsvWriter(out)
    return TableWriter(out)


def format_time_ms(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}"


class Summary:
    """Alert counts per symbol, per UTC hour and (with several kinds) per kind, split by
    direction."""

    def __init__(self) -> None:
        self.by_symbol: Counter[tuple[str, str]] = Counter()
        self.by_hour: Counter[tuple[str, str]] = Counter()
        self.by_kind: Counter[tuple[str, str]] = Counter()

    def add(self, alerts: Sequence[Alert]) -> None:
        for a in alerts:
            self.by_symbol[(a.symbol, a.direction)] += 1
            self.by_kind[(a.kind, a.direction)] += 1
            hour = time.strftime("%Y-%m-%d %H:00", time.gmtime(a.event_time_ms // 1000))
            self.by_hour[(hour, a.direction)] += 1

    def render(self, stats: BacktestStats, rules: Sequence[Rule]) -> str:
        lines = [_headline(stats)]
        lines.append(f"skipped: {stats.skipped:,} lines that are not stream frames, "
                     f"{stats.malformed:,} malformed frames, {stats.bad_entries:,} bad entries, "
                     f"{stats.filtered:,} entries without a price (depth, bookTicker, …)"
                     + (f"; {stats.truncated} file(s) cut short" if stats.truncated else ""))
        lines.extend(f"rule {describe_rule(rule)}" for rule in rules)
        if stats.alerts:
            lines.extend(_counts("alerts by symbol", "symbol", self.by_symbol))
            lines.extend(_counts("alerts by hour (UTC)", "hour", self.by_hour))
            if len({kind for kind, _ in self.by_kind}) > 1:
                lines.extend(_counts("alerts by kind", "kind", self.by_kind))
        return "\n".join(lines) + "\n"


def _headline(stats: BacktestStats) -> str:
    elapsed = max(stats.elapsed_s, 1e-9)
    state = " (interrupted)" if stats.interrupted else ""
    return (f"backtest{state}: {stats.files} file(s), {stats.bytes / 1e6:,.1f} MB, "
            f"{stats.frames:,} frames, {stats.ticks:,} ticks, {stats.alerts:,} alerts in "
            f"{stats.elapsed_s:.2f} s ({stats.ticks / elapsed:,.0f} ticks/s, "
            f"{stats.bytes / 1e6 / elapsed:,.1f} MB/s)")


def describe_rule(rule: Rule) -> str:
    if rule.kind == "liquidation":
        text = (f"{rule.name}: liquidation, window {rule.window_s} s, at least "
                f"{rule.min_notional_usdt:,.0f} USDT on one side, cooldown {rule.cooldown_s} s")
        if rule.escalation_step_usdt:
            text += f", escalation step {rule.escalation_step_usdt:,.0f} USDT"
    elif rule.kind == "funding":
        text = (f"{rule.name}: funding, |rate| at least {rule.min_funding_rate_pct:g} %, once "
                "per funding period")
    elif rule.kind == "volume":
        text = (f"{rule.name}: volume, window {rule.window_s} s at least {rule.volume_factor:g} x "
                f"its mean over {rule.baseline_s} s and {rule.min_window_volume_usdt:,.0f} USDT, "
                f"cooldown {rule.cooldown_s} s")
    else:
        text = (f"{rule.name}: window {rule.window_s} s, up {rule.threshold_up_pct:g} %, "
                f"down {rule.threshold_down_pct:g} %, cooldown {rule.cooldown_s} s")
        if rule.escalation_step_pct:
            text += f", escalation step {rule.escalation_step_pct:g} %"
    if rule.min_quote_volume:
        text += f", min 24 h quote volume {rule.min_quote_volume:,.0f}"
    for name, patterns in (("allow", rule.allow), ("deny", rule.deny)):
        if patterns:
            text += f", {name} {' '.join(patterns)}"
    if rule.overrides:
        text += f", {len(rule.overrides)} symbol override(s)"
    return text


def _counts(title: str, key: str, counts: Counter[tuple[str, str]]) -> list[str]:
    names = sorted({name for name, _ in counts})
    width = max(len(key), *(len(n) for n in names))
    lines = [f"{title}:", f"  {key:<{width}}  {'up':>6} {'down':>6} {'total':>6}"]
    for name in names:
        up, down = counts[(name, "up")], counts[(name, "down")]
        lines.append(f"  {name:<{width}}  {up:>6,} {down:>6,} {up + down:>6,}")
    return lines
