"""Volume rules (docs/architecture.md#rule-kinds) as a pure state machine.

A PRICE tick's quote volume is ``price × quantity`` for a trade, else the increase of the
ticker's 24 h quote volume since the last one the symbol's ticks carried (0 when it fell, and
for the first). Time is cut into whole seconds; at a tick in second s, V = the volume of
seconds s − W + 1 … s (this tick included) and B = the volume of seconds s − W − L + 1 …
s − W, × W / L (the mean per window over the baseline before the window). A rule fires when
the symbol's first PRICE tick is in second s − W − L + 1 or earlier (the baseline is
covered), V ≥ M, V ≥ k × B and it is outside its cooldown (no escalation); ``up`` when the
tick's price is at or above the first price of the window's seconds.

Volumes are counted in whole micro-USDT (``round(volume × 1e6)``) so that sums are exact
integers: adding a second to a window and taking it out again leaves no rounding behind,
and V, B and M (also rounded to micro-USDT) compare the same however the ticks were
batched.

State per symbol: a ring of the last R = max(W + L) seconds' volumes (8 bytes a second:
R = 3,660 for a minute over an hour costs 29 kB per symbol), each rule's two running sums,
the first price of each second of the longest window, the newest tick's time and the last
24 h volume (the floor ``min_quote_volume`` reads it). A tick older than the symbol's
newest PRICE tick, or with a price that is not positive, changes nothing.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from collections.abc import Callable, KeysView, Sequence
from typing import Final

from common.rule_model import Rule, SymbolOverride
from common.schemas import Alert, Tick, kind_alert_id
from detector.rule_state import (
    Cooldown,
    cooldown_ms,
    forget_symbols,
    is_plain,
    note_cooldown,
    required,
    resolve,
    setting,
)

UNITS_PER_USDT: Final = 1_000_000
_MAX_UNITS_VOLUME: Final = 1e12  # a tick's volume beyond this (USDT) is bad data: 0


def to_units(volume: float) -> int:
    """A volume in whole micro-USDT; a volume that is not a sane positive number is 0."""
    if not 0.0 < volume <= _MAX_UNITS_VOLUME:  # NaN fails too
        return 0
    return round(volume * UNITS_PER_USDT)


class _Params:
    __slots__ = ("cooldown_ms", "factor", "min_units", "min_volume")

    def __init__(self, rule: Rule, override: SymbolOverride | None) -> None:
        self.factor = required(rule, override, "volume_factor")
        self.min_units = round(required(rule, override, "min_window_volume_usdt")
                               * UNITS_PER_USDT)
        self.min_volume = setting(rule, override, "min_quote_volume") or None  # 0: none
        self.cooldown_ms = cooldown_ms(rule, override)


class _Flow:
    """The traded volume of one symbol, per second."""

    __slots__ = ("base", "first_sec", "firsts", "need", "newest_ms", "params", "quote_volume",
                 "ring", "sec", "units", "win")

    def __init__(self, tick: Tick, second: int, span: int, rules: int,
                 params: list[_Params | None]) -> None:
        self.newest_ms = tick.event_time_ms
        self.first_sec = self.sec = second
        self.quote_volume: float | None = None
        self.ring = array("q", bytes(8 * span))  # second x at x % span, for x in (sec − span, sec]
        self.firsts: deque[tuple[int, float]] = deque(((second, tick.price),))
        self.units = 0  # second ``sec``'s units so far, not yet in ``ring`` nor ``win``
        self.win = [0] * rules  # per rule: units in seconds sec − W + 1 … sec, but ``units``
        self.base = [0] * rules  # per rule: units in seconds sec − W − L + 1 … sec − W
        self.params = params
        # Per rule, the V that fires in second ``sec`` (max(M, k × B); infinite while the
        # baseline is not covered or the rule does not watch the symbol): B only changes
        # when a second ends, so a tick costs one comparison per rule.
        self.need = [math.inf] * rules


class VolumeEngine:
    def __init__(self, rules: Sequence[Rule]) -> None:
        self._flows: dict[str, _Flow] = {}
        self._cooldowns: dict[str, dict[str, Cooldown]] = {}
        self._rules: tuple[Rule, ...] = ()
        self._sizes: list[tuple[int, int]] = []
        self._span = 0
        self.set_rules(rules)

    @property
    def symbols(self) -> KeysView[str]:
        return self._flows.keys()

    def set_rules(self, rules: Sequence[Rule]) -> None:
        """Volumes already counted stay: rules of new sizes start from the seconds kept
        (their baseline counts as covered only as far back as those go); cooldowns of
        rules that keep their name stay."""
        old_span, old_sizes = self._span, self._sizes
        self._rules = tuple(rules)
        self._sizes = [(r.window_s, r.baseline_s or r.window_s + 1) for r in rules]
        self._span = max(w + b for w, b in self._sizes)
        self._longest_window = max(w for w, _ in self._sizes)
        self._plain = is_plain(rules)
        self._defaults: list[_Params | None] = [_Params(r, None) for r in rules]
        self._cooldowns = {r.name: self._cooldowns.get(r.name, {}) for r in rules}
        self._cooldown_list = [self._cooldowns[r.name] for r in rules]
        for symbol, flow in self._flows.items():
            flow.params = self._resolve(symbol)
            if self._sizes != old_sizes:
                self._relayout(flow, old_span)
            self._set_need(flow)

    def process(self, ticks: Sequence[Tick], detected_at_ms: int | None, *,
                evaluate: bool = True) -> list[Alert]:
        alerts: list[Alert] = []
        flows = self._flows
        get = flows.get
        span = self._span
        rules = len(self._rules)
        rules_range = range(rules)
        longest = self._longest_window
        for tick in ticks:
            if tick.kind:  # not PRICE
                continue
            price = tick.price
            if not price > 0.0:
                continue
            symbol, time_ms = tick.symbol, tick.event_time_ms
            flow = get(symbol)
            if flow is None:
                flow = flows[symbol] = _Flow(tick, time_ms // 1000, span, rules,
                                             self._resolve(symbol))
                previous = None
            elif time_ms < flow.newest_ms:
                continue
            else:
                previous = flow.quote_volume
            flow.newest_ms = time_ms
            quantity, quote_volume = tick.quantity, tick.quote_volume
            if quantity is not None:
                volume = price * quantity
            elif quote_volume is not None and previous is not None:
                volume = quote_volume - previous
            else:
                volume = 0.0
            # to_units, inlined: this is the hot loop of every trade.
            units = round(volume * UNITS_PER_USDT) if 0.0 < volume <= _MAX_UNITS_VOLUME else 0
            if quote_volume is not None:
                flow.quote_volume = quote_volume
            second = time_ms // 1000
            if second != flow.sec:
                self._advance(flow, second)
                firsts = flow.firsts
                firsts.append((second, price))
                cutoff = second - longest
                while firsts[0][0] <= cutoff:
                    firsts.popleft()
            flow.units += units
            if not evaluate:
                continue
            win, need, in_second = flow.win, flow.need, flow.units
            for i in rules_range:
                if win[i] + in_second >= need[i]:  # _evaluate checks everything again
                    alert = self._evaluate(i, flow.params[i], tick, flow, second,
                                           detected_at_ms)
                    if alert is not None:
                        alerts.append(alert)
        return alerts

    def _advance(self, flow: _Flow, second: int) -> None:
        """Move the seconds that left each window into its baseline, and those that left
        the baseline out, from ``flow.sec`` to ``second``."""
        current, span, ring = flow.sec, self._span, flow.ring
        win, base = flow.win, flow.base
        units = flow.units
        if units:  # the second that ends goes into the ring and the windows
            ring[current % span] += units
            for i in range(len(win)):
                win[i] += units
            flow.units = 0
        for i, (window, baseline) in enumerate(self._sizes):
            if second - window - baseline >= current:  # everything kept is behind both
                win[i] = base[i] = 0
                continue
            in_window, in_base = win[i], base[i]
            for x in range(current + 1 - window, min(second - window, current) + 1):
                units = ring[x % span]
                in_window -= units
                in_base += units
            for x in range(current + 1 - window - baseline,
                           min(second - window - baseline, current) + 1):
                in_base -= ring[x % span]
            win[i], base[i] = in_window, in_base
        for x in range(max(current + 1, second - span + 1), second + 1):
            ring[x % span] = 0
        flow.sec = second
        self._set_need(flow)

    def _set_need(self, flow: _Flow) -> None:
        """``flow.need`` for the second ``flow.sec``."""
        age = flow.sec - flow.first_sec
        need = []
        for i, params in enumerate(flow.params):
            window, baseline = self._sizes[i]
            if params is None or age < window + baseline - 1:  # the baseline is not covered
                need.append(math.inf)
            else:
                need.append(max(params.min_units,
                                params.factor * (flow.base[i] * window / baseline)))
        flow.need = need

    def _evaluate(self, index: int, params: _Params | None, tick: Tick, flow: _Flow,
                  second: int, detected_at_ms: int | None) -> Alert | None:
        if params is None:
            return None
        window, baseline = self._sizes[index]
        if flow.first_sec > second - window - baseline + 1:
            return None  # the baseline is not covered yet
        volume = flow.win[index] + flow.units
        if volume < params.min_units:
            return None
        mean = flow.base[index] * window / baseline
        if volume < params.factor * mean:
            return None
        floor = params.min_volume
        if floor is not None and (flow.quote_volume is None or flow.quote_volume < floor):
            return None
        symbol, time_ms = tick.symbol, tick.event_time_ms
        cooldowns = self._cooldown_list[index]
        state = cooldowns.get(symbol)
        if state is not None and time_ms < state.until_ms:
            return None
        cooldowns[symbol] = Cooldown(time_ms + params.cooldown_ms, math.nan, 1)
        start = second - window + 1
        base_price = next(p for s, p in flow.firsts if s >= start)
        rule = self._rules[index]
        return Alert(
            id=kind_alert_id(symbol, "volume", rule.name, time_ms),
            symbol=symbol,
            direction="up" if tick.price >= base_price else "down",
            change_pct=(tick.price - base_price) / base_price * 100.0,
            price=tick.price,
            base_price=base_price,
            window_s=window,
            threshold_pct=0.0,
            event_time_ms=time_ms,
            detected_at_ms=time_ms if detected_at_ms is None else detected_at_ms,
            source=tick.source,
            rule=rule.name,
            kind="volume",
            threshold=params.factor,
            volume_usdt=volume / UNITS_PER_USDT,
            baseline_volume_usdt=mean / UNITS_PER_USDT,
            baseline_s=baseline,
        )

    def _relayout(self, flow: _Flow, old_span: int) -> None:
        """The ring at the new span and every rule's sums recounted from the seconds kept."""
        current, span = flow.sec, self._span
        flow.ring[current % old_span] += flow.units  # the second in progress, as a whole
        flow.units = 0
        known = current - min(old_span, span) + 1  # the oldest second both rings hold
        old = flow.ring
        if span != old_span:
            flow.ring = array("q", bytes(8 * span))
            for x in range(known, current + 1):
                flow.ring[x % span] = old[x % old_span]
        ring = flow.ring
        flow.first_sec = max(flow.first_sec, current - old_span + 1)

        def total(first: int, last: int) -> int:
            return sum(ring[x % span] for x in range(max(first, known), last + 1))

        flow.win = [total(current - w + 1, current) for w, _ in self._sizes]
        flow.base = [total(current - w - b + 1, current - w) for w, b in self._sizes]

    def note(self, alert: Alert) -> None:
        """Restore the cooldown of a volume alert of an earlier run."""
        for i, rule in enumerate(self._rules):
            if rule.name != alert.rule:
                continue
            flow = self._flows.get(alert.symbol)
            params = flow.params[i] if flow is not None else self._resolve(alert.symbol)[i]
            if params is not None:
                note_cooldown(self._cooldown_list[i], alert.symbol,
                              alert.event_time_ms + params.cooldown_ms, None, 1)

    def forget(self, predicate: Callable[[str], bool]) -> None:
        for symbol in [s for s in self._flows if predicate(s)]:
            del self._flows[symbol]
        forget_symbols(self._cooldowns, predicate)

    def _resolve(self, symbol: str) -> list[_Params | None]:
        return resolve(self._rules, self._defaults, self._plain, symbol, _Params)
