"""Liquidation rules (docs/architecture.md#rule-kinds) as a pure state machine.

A forced order at t on side s (SELL: a long liquidated, alert ``down``; BUY: a short,
``up``) with notional ``price × quantity`` makes sum_s = the notional of the symbol's side-s
orders with time in (t − W, t]. A rule fires when sum_s ≥ its ``min_notional_usdt``; inside
its cooldown only the side of the last alert fires, when sum_s ≥ the last alerted sum +
``escalation_step_usdt``, one level up; every alert restarts the cooldown (t + C).

State per symbol: the orders of each side within the longest window (the exchange sends at
most one forced order per symbol per second, so a side holds at most W of them), and per
rule the cooldown. Sums are ``math.fsum`` of the orders in the window, so they are the
correctly rounded sum whatever the order of the additions. A forced order older than the
symbol's newest one, or without a positive finite notional and a side, changes nothing.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, KeysView, Sequence
from typing import Final

from common.rule_model import Rule, SymbolOverride
from common.schemas import Alert, Tick, kind_alert_id
from detector.rule_state import (
    Cooldown,
    cooldown_ms,
    forget_symbols,
    has_floor,
    is_plain,
    next_level,
    note_cooldown,
    required,
    resolve,
    sample_path,
    setting,
)

SIDES: Final = ("BUY", "SELL")

# (tick, the symbol's last known 24 h quote volume when it arrived)
Observed = tuple[Tick, float | None]


class _Params:
    """One liquidation rule as it applies to one symbol, overrides resolved."""

    __slots__ = ("cooldown_ms", "min_notional", "min_volume", "step")

    def __init__(self, rule: Rule, override: SymbolOverride | None) -> None:
        self.min_notional = required(rule, override, "min_notional_usdt")
        self.step = setting(rule, override, "escalation_step_usdt") or None  # 0: none
        self.min_volume = setting(rule, override, "min_quote_volume") or None
        self.cooldown_ms = cooldown_ms(rule, override)


class _Book:
    """The forced orders of one symbol within the longest window, per side: (time,
    notional, price)."""

    __slots__ = ("buy", "newest_ms", "params", "sell")

    def __init__(self, newest_ms: int, params: list[_Params | None]) -> None:
        self.newest_ms = newest_ms
        self.buy: deque[tuple[int, float, float]] = deque()
        self.sell: deque[tuple[int, float, float]] = deque()
        self.params = params


class LiquidationEngine:
    def __init__(self, rules: Sequence[Rule]) -> None:
        self._books: dict[str, _Book] = {}
        self._cooldowns: dict[str, dict[str, Cooldown]] = {}
        self._rules: tuple[Rule, ...] = ()
        self.set_rules(rules)

    @property
    def symbols(self) -> KeysView[str]:
        return self._books.keys()

    @property
    def needs_volume(self) -> bool:
        """Whether a rule has a 24 h volume floor (the caller then passes volumes)."""
        return has_floor(self._rules)

    def set_rules(self, rules: Sequence[Rule]) -> None:
        """Orders already seen stay (kept for the new longest window from the next order
        on); cooldowns of rules that keep their name stay."""
        self._rules = tuple(rules)
        self._windows_ms = [r.window_s * 1000 for r in rules]
        self._longest_ms = max(self._windows_ms)
        self._plain = is_plain(rules)
        self._defaults: list[_Params | None] = [_Params(r, None) for r in rules]
        self._cooldowns = {r.name: self._cooldowns.get(r.name, {}) for r in rules}
        self._cooldown_list = [self._cooldowns[r.name] for r in rules]
        for symbol, book in self._books.items():
            book.params = self._resolve(symbol)

    def process(self, observed: Sequence[Observed], detected_at_ms: int | None, *,
                evaluate: bool = True) -> list[Alert]:
        alerts: list[Alert] = []
        books = self._books
        longest_ms = self._longest_ms
        for tick, volume in observed:
            price, quantity, side = tick.price, tick.quantity, tick.side
            if quantity is None or side not in SIDES:
                continue
            notional = price * quantity
            # Written so that NaN fails too.
            if not (price > 0.0 and quantity > 0.0 and notional < math.inf):
                continue
            symbol, time_ms = tick.symbol, tick.event_time_ms
            book = books.get(symbol)
            if book is None:
                book = books[symbol] = _Book(time_ms, self._resolve(symbol))
            elif time_ms < book.newest_ms:
                continue
            book.newest_ms = time_ms
            orders = book.buy if side == "BUY" else book.sell
            orders.append((time_ms, notional, price))
            cutoff = time_ms - longest_ms
            for kept in (book.buy, book.sell):
                while kept and kept[0][0] <= cutoff:
                    kept.popleft()
            if not evaluate:
                continue
            for i, params in enumerate(book.params):
                if params is not None:
                    alert = self._evaluate(i, params, tick, orders, volume, detected_at_ms)
                    if alert is not None:
                        alerts.append(alert)
        return alerts

    def _evaluate(self, index: int, params: _Params, tick: Tick,
                  orders: deque[tuple[int, float, float]], volume: float | None,
                  detected_at_ms: int | None) -> Alert | None:
        time_ms = tick.event_time_ms
        cutoff = time_ms - self._windows_ms[index]
        start = len(orders)
        while start and orders[start - 1][0] > cutoff:
            start -= 1
        window = [orders[i] for i in range(start, len(orders))]
        total = math.fsum(notional for _, notional, _ in window)
        if total < params.min_notional:
            return None
        floor = params.min_volume
        if floor is not None and (volume is None or volume < floor):
            return None
        up = tick.side == "BUY"
        figure = total if up else -total
        symbol = tick.symbol
        cooldowns = self._cooldown_list[index]
        level = next_level(cooldowns.get(symbol), time_ms, figure, params.step)
        if not level:
            return None
        cooldowns[symbol] = Cooldown(time_ms + params.cooldown_ms, figure, level)
        rule = self._rules[index]
        base = window[0][2]
        return Alert(
            id=kind_alert_id(symbol, "liquidation", rule.name, time_ms),
            symbol=symbol,
            direction="up" if up else "down",
            change_pct=(tick.price - base) / base * 100.0,
            price=tick.price,
            base_price=base,
            window_s=rule.window_s,
            threshold_pct=0.0,
            event_time_ms=time_ms,
            detected_at_ms=time_ms if detected_at_ms is None else detected_at_ms,
            source=tick.source,
            path=sample_path([t for t, _, _ in window], [p for _, _, p in window], 0),
            rule=rule.name,
            level=level,
            kind="liquidation",
            threshold=params.min_notional,
            notional_usdt=total,
            liquidations=len(window),
        )

    def note(self, alert: Alert) -> None:
        """Restore the cooldown (and escalation) of a liquidation alert of an earlier run."""
        for i, rule in enumerate(self._rules):
            if rule.name != alert.rule:
                continue
            book = self._books.get(alert.symbol)
            params = book.params[i] if book is not None else self._resolve(alert.symbol)[i]
            if params is None:
                return
            notional = alert.notional_usdt
            figure = None if notional is None else (
                notional if alert.direction == "up" else -notional)
            note_cooldown(self._cooldown_list[i], alert.symbol,
                          alert.event_time_ms + params.cooldown_ms, figure, alert.level)

    def forget(self, predicate: Callable[[str], bool]) -> None:
        for symbol in [s for s in self._books if predicate(s)]:
            del self._books[symbol]
        forget_symbols(self._cooldowns, predicate)

    def _resolve(self, symbol: str) -> list[_Params | None]:
        return resolve(self._rules, self._defaults, self._plain, symbol, _Params)
