"""Alerts for the notifier's tests, built as the detector writes them."""

from __future__ import annotations

import itertools
import time
from typing import Any

from common.schemas import Alert, alert_id

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
