"""Alerts for the notifier's tests, built as the detector writes them."""

from __future__ import annotations

import itertools
import time
from typing import Any

from common.rule_model import RuleKind
from common.schemas import Alert, alert_id, kind_alert_id

_sequence = itertools.count()


def make_alert(symbol: str = "SOLUSDT", change_pct: float = 3.1, **overrides: Any) -> Alert:
    """A fresh alert (detected now, a unique id); ``overrides`` sets any other field."""
    now_ms = int(time.time() * 1000) - next(_sequence) % 1000  # ids stay unique
    values: dict[str, Any] = {
        "symbol": symbol, "direction": "up" if change_pct >= 0 else "down",
        "change_pct": change_pct, "price": 23.45, "base_price": 22.74, "window_s": 60,
        "threshold_pct": 2.0, "event_time_ms": now_ms - 5, "detected_at_ms": now_ms,
        "source": "mini_ticker", "rule": "default", "level": 1,
    }
    values.update(overrides)
    values.setdefault("id", alert_id(values["symbol"], values["window_s"],
                                     values["event_time_ms"]))
    return Alert(**values)


def burst(count: int, **overrides: Any) -> list[Alert]:
    """``count`` alerts of distinct symbols and moves (the whole market moving at once)."""
    return [make_alert(f"C{i:04d}USDT", (2.0 + i % 17 * 0.3) * (1 if i % 3 else -1),
                       **overrides) for i in range(count)]


def kind_alert(kind: RuleKind, symbol: str = "BTCUSDT", **overrides: Any) -> Alert:
    """An alert of another kind, with its figures as the detector writes them (a
    liquidation of longs worth 2.46 M in 5 orders, a funding rate of +0.21 % with the next
    funding 3 h 12 min 30 s away, a volume of 5.1 M at 7.3× its baseline); ``overrides``
    sets any field."""
    now_ms = int(time.time() * 1000) - next(_sequence) % 1000
    values: dict[str, Any] = {
        "symbol": symbol, "kind": kind, "price": 97_000.0, "base_price": 97_500.0,
        "window_s": 60, "threshold_pct": 0.0, "event_time_ms": now_ms - 5,
        "detected_at_ms": now_ms, "source": "trade", "rule": f"{kind}-rule", "level": 1,
    }
    values.update(_KIND_FIGURES[kind])
    values.update(overrides)
    values.setdefault("change_pct", (values["price"] - values["base_price"])
                      / values["base_price"] * 100)
    if kind == "funding":
        values.setdefault("next_funding_ms", values["event_time_ms"] + (3 * 3600 + 12 * 60
                                                                        + 30) * 1000)
        time_ms = values["next_funding_ms"]
    else:
        time_ms = values["event_time_ms"]
    values.setdefault("id", kind_alert_id(values["symbol"], kind, values["rule"], time_ms))
    return Alert(**values)


_KIND_FIGURES: dict[str, dict[str, Any]] = {
    "liquidation": {"direction": "down", "notional_usdt": 2_460_000.0, "liquidations": 5,
                    "threshold": 1_000_000.0},
    "funding": {"direction": "up", "funding_rate_pct": 0.21, "threshold_pct": 0.1,
                "threshold": 0.1, "window_s": 0, "price": 97_000.0, "base_price": 97_000.0,
                "change_pct": 0.21, "source": "mark_price"},
    "volume": {"direction": "up", "volume_usdt": 5_100_000.0, "baseline_volume_usdt": 698_630.0,
               "baseline_s": 3600, "threshold": 5.0, "price": 97_500.0,
               "base_price": 97_000.0},
}
