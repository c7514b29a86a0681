"""The detection rule of DESIGN.md as a pure state machine.

No I/O and no clock: time comes from the ticks (and ``detected_at_ms`` from the caller), so
the live detector, a restart that replays history and a backtest over a recording all reach
the same alerts from the same ticks, however the ticks were batched.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Final

from common.schemas import Alert, Rule, Tick, alert_id

# A move of exactly the threshold must fire even when float division lands a hair below it
# (102.1 / 100.1 style inputs), so comparisons allow this much slack, in percent points.
THRESHOLD_SLACK_PCT: Final = 1e-9
MAX_PATH_POINTS: Final = 60


class _Window:
    """Observations of one symbol: everything newer than t − W plus the one carried base.

    ``times[0]``/``prices[0]`` is always the base: the last observation at or before
    t − W when one exists, else the oldest observation seen. Two parallel deques avoid a
    tuple allocation per tick.
    """

    __slots__ = ("prices", "times")

    def __init__(self, time_ms: int, price: float) -> None:
        self.times: deque[int] = deque((time_ms,))
        self.prices: deque[float] = deque((price,))


class DetectionEngine:
    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self._window_ms = rule.window_s * 1000
        self._cooldown_ms = rule.cooldown_s * 1000
        self._up = rule.threshold_up_pct - THRESHOLD_SLACK_PCT
        self._down = -(rule.threshold_down_pct - THRESHOLD_SLACK_PCT)
        self._windows: dict[str, _Window] = {}
        # Looked up only when a threshold is crossed, so it stays off the per-tick path.
        self._quiet_until_ms: dict[str, int] = {}

    @property
    def symbols_tracked(self) -> int:
        return len(self._windows)

    def process(self, ticks: Iterable[Tick], detected_at_ms: int | None = None) -> list[Alert]:
        """Feed ticks in arrival order; returns the alerts they cause, in order.

        ``detected_at_ms`` stamps the alerts (the live detector passes its clock); when
        omitted each alert is stamped with its own event time, as a backtest wants.
        """
        return self._feed(ticks, detected_at_ms, evaluate=True)

    def rebuild(self, ticks: Iterable[Tick]) -> None:
        """Update windows from already-processed history without evaluating the rule.

        Replayed history starts mid-stream, so its first window has the wrong base and could
        "fire" where the live run did not; cooldowns come from ``note_alert`` instead.
        """
        self._feed(ticks, None, evaluate=False)

    def _feed(self, ticks: Iterable[Tick], detected_at_ms: int | None, *,
              evaluate: bool) -> list[Alert]:
        alerts: list[Alert] = []
        windows = self._windows
        window_ms = self._window_ms
        up = self._up
        down = self._down
        for tick in ticks:
            symbol = tick.symbol
            time_ms = tick.event_time_ms
            price = tick.price
            window = windows.get(symbol)
            if window is None:
                windows[symbol] = _Window(time_ms, price)
                continue
            times = window.times
            if time_ms < times[-1]:
                continue
            prices = window.prices
            times.append(time_ms)
            prices.append(price)
            cutoff = time_ms - window_ms
            while times[1] <= cutoff:
                times.popleft()
                prices.popleft()
            if not evaluate:
                continue
            base = prices[0]
            if base <= 0.0:
                continue
            change = (price - base) / base * 100.0
            if (change >= up or change <= down) and time_ms >= self._quiet_until_ms.get(
                symbol, time_ms
            ):
                self._quiet_until_ms[symbol] = time_ms + self._cooldown_ms
                alerts.append(self._alert(tick, window, change, base, detected_at_ms))
        return alerts

    def note_alert(self, symbol: str, event_time_ms: int) -> None:
        """Start a cooldown for an alert published by an earlier run (restart recovery)."""
        until = event_time_ms + self._cooldown_ms
        self._quiet_until_ms[symbol] = max(self._quiet_until_ms.get(symbol, until), until)

    def _alert(self, tick: Tick, window: _Window, change: float, base: float,
               detected_at_ms: int | None) -> Alert:
        up = change > 0
        rule = self.rule
        return Alert(
            id=alert_id(tick.symbol, rule.window_s, tick.event_time_ms),
            symbol=tick.symbol,
            direction="up" if up else "down",
            change_pct=change,
            price=tick.price,
            base_price=base,
            window_s=rule.window_s,
            threshold_pct=rule.threshold_up_pct if up else rule.threshold_down_pct,
            event_time_ms=tick.event_time_ms,
            detected_at_ms=tick.event_time_ms if detected_at_ms is None else detected_at_ms,
            source=tick.source,
            path=_sample_path(window),
        )


def _sample_path(window: _Window) -> list[tuple[int, float]]:
    """At most MAX_PATH_POINTS points, always keeping the base and the triggering tick."""
    times, prices = window.times, window.prices
    count = len(times)
    if count <= MAX_PATH_POINTS:
        return list(zip(times, prices, strict=True))
    step = (count - 1) / (MAX_PATH_POINTS - 1)
    picks = [round(i * step) for i in range(MAX_PATH_POINTS)]
    return [(times[i], prices[i]) for i in picks]
