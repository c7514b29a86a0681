"""Funding rules (docs/architecture.md#rule-kinds) as a pure state machine.

A mark price at t with funding rate r (a fraction) and next funding time T fires a rule
when |100 r| ≥ its ``min_funding_rate_pct``, once per (symbol, rule, T): the alert's id
carries T, so the "once per funding period" also survives a restart (``note``) and a
failover (the id is recognised). ``up`` for a positive rate (longs pay).

State per symbol: the newest mark price's time, and per rule the funding times already
alerted that have not passed yet (a period whose T is behind the newest tick cannot come
back: a tick whose T is before its own time is refused). A tick older than the symbol's
newest one, or without a finite rate, a next funding time at or after its own time and a
positive price, changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, KeysView, Sequence

from common.rule_model import Rule, SymbolOverride
from common.schemas import Alert, Tick, kind_alert_id
from detector.rule_state import (
    THRESHOLD_SLACK_PCT,
    forget_symbols,
    has_floor,
    is_plain,
    required,
    resolve,
    setting,
)

Observed = tuple[Tick, float | None]


class _Params:
    __slots__ = ("min_rate_pct", "min_volume", "reach")

    def __init__(self, rule: Rule, override: SymbolOverride | None) -> None:
        self.min_rate_pct = required(rule, override, "min_funding_rate_pct")
        self.reach = self.min_rate_pct - THRESHOLD_SLACK_PCT  # exactly the threshold fires
        self.min_volume = setting(rule, override, "min_quote_volume") or None  # 0: none


class _Mark:
    __slots__ = ("newest_ms", "params")

    def __init__(self, newest_ms: int, params: list[_Params | None]) -> None:
        self.newest_ms = newest_ms
        self.params = params


class FundingEngine:
    def __init__(self, rules: Sequence[Rule]) -> None:
        self._marks: dict[str, _Mark] = {}
        # Rule name → symbol → the funding times alerted (at most a few: pruned as they pass).
        self._fired: dict[str, dict[str, set[int]]] = {}
        self._rules: tuple[Rule, ...] = ()
        self.set_rules(rules)

    @property
    def symbols(self) -> KeysView[str]:
        return self._marks.keys()

    @property
    def needs_volume(self) -> bool:
        return has_floor(self._rules)

    def set_rules(self, rules: Sequence[Rule]) -> None:
        """The periods alerted by rules that keep their name stay alerted."""
        self._rules = tuple(rules)
        self._plain = is_plain(rules)
        self._defaults: list[_Params | None] = [_Params(r, None) for r in rules]
        self._fired = {r.name: self._fired.get(r.name, {}) for r in rules}
        self._fired_list = [self._fired[r.name] for r in rules]
        for symbol, mark in self._marks.items():
            mark.params = self._resolve(symbol)

    def process(self, observed: Sequence[Observed], detected_at_ms: int | None, *,
                evaluate: bool = True) -> list[Alert]:
        alerts: list[Alert] = []
        marks = self._marks
        for tick, volume in observed:
            rate, next_ms, time_ms = tick.funding_rate, tick.next_funding_ms, tick.event_time_ms
            if (rate is None or next_ms is None or not math.isfinite(rate)
                    or next_ms < time_ms or not tick.price > 0.0):
                continue
            symbol = tick.symbol
            mark = marks.get(symbol)
            if mark is None:
                mark = marks[symbol] = _Mark(time_ms, self._resolve(symbol))
            elif time_ms < mark.newest_ms:
                continue
            mark.newest_ms = time_ms
            if not evaluate:
                continue
            rate_pct = rate * 100.0
            for i, params in enumerate(mark.params):
                if params is None or abs(rate_pct) < params.reach:
                    continue
                floor = params.min_volume
                if floor is not None and (volume is None or volume < floor):
                    continue
                fired = self._fired_list[i].get(symbol)
                if fired is not None and next_ms in fired:
                    continue
                self._mark_fired(i, symbol, next_ms, time_ms)
                alerts.append(self._alert(i, params, tick, rate_pct, next_ms, detected_at_ms))
        return alerts

    def _mark_fired(self, index: int, symbol: str, next_ms: int, now_ms: int) -> None:
        by_symbol = self._fired_list[index]
        kept = {t for t in by_symbol.get(symbol, ()) if t >= now_ms}
        kept.add(next_ms)
        by_symbol[symbol] = kept

    def _alert(self, index: int, params: _Params, tick: Tick, rate_pct: float, next_ms: int,
               detected_at_ms: int | None) -> Alert:
        rule = self._rules[index]
        time_ms = tick.event_time_ms
        return Alert(
            id=kind_alert_id(tick.symbol, "funding", rule.name, next_ms),
            symbol=tick.symbol,
            direction="up" if rate_pct > 0 else "down",
            change_pct=rate_pct,
            price=tick.price,
            base_price=tick.price,
            window_s=0,
            threshold_pct=params.min_rate_pct,
            event_time_ms=time_ms,
            detected_at_ms=time_ms if detected_at_ms is None else detected_at_ms,
            source=tick.source,
            rule=rule.name,
            kind="funding",
            threshold=params.min_rate_pct,
            funding_rate_pct=rate_pct,
            next_funding_ms=next_ms,
        )

    def note(self, alert: Alert) -> None:
        """The funding period of an alert of an earlier run is alerted already."""
        if alert.next_funding_ms is None:
            return
        for i, rule in enumerate(self._rules):
            if rule.name == alert.rule:
                self._mark_fired(i, alert.symbol, alert.next_funding_ms, alert.event_time_ms)

    def forget(self, predicate: Callable[[str], bool]) -> None:
        for symbol in [s for s in self._marks if predicate(s)]:
            del self._marks[symbol]
        forget_symbols(self._fired, predicate)

    def _resolve(self, symbol: str) -> list[_Params | None]:
        return resolve(self._rules, self._defaults, self._plain, symbol, _Params)
