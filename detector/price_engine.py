"""The price rules of docs/architecture.md#the-detection-rule as a pure state machine, for
several rules at once (``detector.engine`` puts it beside the other kinds).

No I/O and no clock: time comes from the ticks (and ``detected_at_ms`` from the caller), so
the live detector, a restart that replays history and a backtest over a recording all reach
the same alerts from the same ticks, however the ticks were batched.

State, per symbol: one history of (event time, price) observations, shared by every rule,
and per rule one *base index* into it: the last observation at or before t − W of that rule
(the price carried forward), or the oldest one while the symbol is younger than the window.
The history starts at the base of the longest window (index 0), so it holds exactly what
the longest rule needs. Base indices only move forward, so finding each rule's base costs
O(1) amortised per tick. With a single rule (the common case) the base is always index 0
and the loop is the original single-rule one: append, then pop the observations that fell
behind the base.

A tick older than the symbol's newest observation, or with a price that is not positive,
changes nothing; so does a tick of another kind than PRICE.

Per (symbol, rule): the rule's settings for that symbol (allow/deny lists and overrides
resolved once, when the symbol is first seen or the rules change) and the cooldown state.

Firing, for a rule R watching a symbol, on a tick at time t with
``change = (price − base) / base × 100``:

- the change must reach R's threshold (``≥ up`` or ``≤ −down``; exactly the threshold fires);
- R's volume floor, if any, must be met by the symbol's last known 24 h quote volume (from
  the latest tick that carried one; a symbol whose volume was never seen does not fire);
- outside a cooldown (no alert of R for the symbol yet, or t ≥ its cooldown end) it fires at
  level 1 in the change's direction;
- inside a cooldown it fires only by escalation: R has a step, the change has the direction
  of the last alert, and |change| ≥ |last alerted change| + step. Level becomes last + 1.
  Anything else, a reversal included, stays quiet;
- every alert (first or escalation) records its change and restarts the cooldown:
  it ends at t + cooldown.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable, KeysView, Sequence

from common.rule_model import Rule, SymbolOverride
from common.schemas import Alert, Tick, alert_id
from detector.rule_state import (
    THRESHOLD_SLACK_PCT,
    Cooldown,
    forget_symbols,
    has_floor,
    is_plain,
    next_level,
    note_cooldown,
    pick,
    resolve,
    sample_path,
)


class _Params:
    """One rule as it applies to one symbol, overrides resolved; shared, never mutated."""

    __slots__ = ("cooldown_ms", "down", "min_volume", "step", "threshold_down_pct",
                 "threshold_up_pct", "up")

    def __init__(self, rule: Rule, override: SymbolOverride | None) -> None:
        o = override
        up_pct = pick(None if o is None else o.threshold_up_pct, rule.threshold_up_pct)
        down_pct = pick(None if o is None else o.threshold_down_pct, rule.threshold_down_pct)
        step = pick(None if o is None else o.escalation_step_pct, rule.escalation_step_pct)
        floor = pick(None if o is None else o.min_quote_volume, rule.min_quote_volume)
        self.threshold_up_pct = up_pct
        self.threshold_down_pct = down_pct
        self.up = up_pct - THRESHOLD_SLACK_PCT
        self.down = -(down_pct - THRESHOLD_SLACK_PCT)
        self.cooldown_ms = pick(None if o is None else o.cooldown_s, rule.cooldown_s) * 1000
        self.step: float | None = step or None  # 0 turns escalation off
        self.min_volume: float | None = floor or None  # 0 drops the floor


class _Series:
    """Observations of one symbol; ``bases[i]`` indexes rule i's base in them."""

    __slots__ = ("bases", "params", "prices", "times", "volume")

    def __init__(self, tick: Tick, rule_count: int, params: list[_Params | None]) -> None:
        self.times: deque[int] = deque((tick.event_time_ms,))
        self.prices: deque[float] = deque((tick.price,))
        self.bases: list[int] = [0] * rule_count
        self.params = params
        self.volume: float | None = tick.quote_volume


class PriceEngine:
    """Several price rules over one stream of ticks (``DetectionEngine`` checked the set)."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self._series: dict[str, _Series] = {}
        # Rule name → symbol → cooldown; kept across ``set_rules`` for names that stay.
        self._cooldowns: dict[str, dict[str, Cooldown]] = {}
        self._rules: tuple[Rule, ...] = ()
        self.set_rules(rules)

    @property
    def symbols(self) -> KeysView[str]:
        return self._series.keys()

    def set_rules(self, rules: Sequence[Rule]) -> None:
        """Apply a new set of rules at once, keeping what was learnt.

        The observation history stays, so the new rules evaluate the very next tick against
        a full window (a window longer than any before has, until it fills, the oldest kept
        observation as its base, like a young symbol). Cooldowns of rules that keep their
        name stay too (a running cooldown ends as it was set; the next one uses the new
        length); a renamed or new rule starts with none. Volumes are followed only while a
        rule has a volume floor: when the first floor arrives, every symbol's volume is
        unknown until its next tick that carries one.
        """
        new = list(rules)
        self._rules = tuple(new)
        self._window_ms = [r.window_s * 1000 for r in new]
        self._longest = max(range(len(new)), key=lambda i: new[i].window_s)
        self._defaults: list[_Params | None] = [_Params(r, None) for r in new]
        self._plain = is_plain(new)
        tracked = getattr(self, "_track_volume", True)
        self._track_volume = has_floor(new)
        forget_volumes = self._track_volume and not tracked
        self._cooldowns = {r.name: self._cooldowns.get(r.name, {}) for r in new}
        self._cooldown_list = [self._cooldowns[r.name] for r in new]
        for symbol, series in self._series.items():
            series.params = self._resolve(symbol)
            if forget_volumes:  # not kept up to date while no rule needed it
                series.volume = None
            # What the previous rules kept is exactly what the new ones need if their
            # longest window is not longer; then the new longest base becomes the head.
            times, prices = list(series.times), list(series.prices)
            bases = [max(0, bisect_right(times, times[-1] - w) - 1) for w in self._window_ms]
            head = bases[self._longest]
            series.times, series.prices = deque(times[head:]), deque(prices[head:])
            series.bases = [b - head for b in bases]

    def process(self, ticks: Iterable[Tick], detected_at_ms: int | None = None) -> list[Alert]:
        """Feed ticks in arrival order; returns the alerts they cause, in order (for one
        tick, in the order of the rules).

        ``detected_at_ms`` stamps the alerts (the live detector passes its clock); when
        omitted each alert is stamped with its own event time, as a backtest wants.
        """
        if len(self._rules) == 1:
            return self._feed_one(ticks, detected_at_ms, evaluate=True)
        return self._feed_many(ticks, detected_at_ms, evaluate=True)

    def rebuild(self, ticks: Iterable[Tick]) -> None:
        """Update windows from already-processed history without evaluating the rules.

        Replayed history starts mid-stream, so its first window has the wrong base and could
        "fire" where the live run did not; cooldowns come from ``note_alert`` instead.
        """
        if len(self._rules) == 1:
            self._feed_one(ticks, None, evaluate=False)
        else:
            self._feed_many(ticks, None, evaluate=False)

    def note_alert(self, symbol: str, event_time_ms: int, *, rule: str | None = None,
                   change_pct: float | None = None, level: int = 1) -> None:
        """Start the cooldown of an alert published by an earlier run (restart recovery).

        ``rule`` names the rule (``None``: every rule, for alerts written before rules had
        names); ``change_pct`` and ``level`` let an escalation continue from it. Alerts are
        expected oldest first; a cooldown already running longer is kept.
        """
        for i, candidate in enumerate(self._rules):
            if rule is not None and candidate.name != rule:
                continue
            series = self._series.get(symbol)
            params = series.params[i] if series is not None else self._resolve(symbol)[i]
            if params is None:
                continue
            note_cooldown(self._cooldown_list[i], symbol, event_time_ms + params.cooldown_ms,
                          change_pct, level)

    def forget(self, predicate: Callable[[str], bool]) -> None:
        """Drop everything known about the symbols ``predicate`` picks (their windows,
        volumes and cooldowns): another detector took them over."""
        for symbol in [s for s in self._series if predicate(s)]:
            del self._series[symbol]
        forget_symbols(self._cooldowns, predicate)

    # --- the hot loops: everything local, nothing allocated per tick ----------------------

    def _feed_one(self, ticks: Iterable[Tick], detected_at_ms: int | None, *,
                  evaluate: bool) -> list[Alert]:
        """One rule: the common case, kept as tight as the single-rule engine was."""
        alerts: list[Alert] = []
        all_series = self._series
        get = all_series.get
        window_ms = self._window_ms[0]
        track_volume = self._track_volume
        plain = self._defaults[0] if self._plain else None
        for tick in ticks:
            if tick.kind:  # not PRICE
                continue
            symbol = tick.symbol
            series = get(symbol)
            if series is None:
                if tick.price > 0.0:
                    all_series[symbol] = _Series(tick, 1, self._resolve(symbol))
                continue
            times = series.times
            time_ms = tick.event_time_ms
            price = tick.price
            if time_ms < times[-1] or not price > 0.0:
                continue
            prices = series.prices
            times.append(time_ms)
            prices.append(price)
            if track_volume:
                volume = tick.quote_volume
                if volume is not None:
                    series.volume = volume
            cutoff = time_ms - window_ms
            while times[1] <= cutoff:
                times.popleft()
                prices.popleft()
            if not evaluate:
                continue
            params = plain or series.params[0]
            if params is None:
                continue
            base = prices[0]
            change = (price - base) / base * 100.0
            if change >= params.up or change <= params.down:
                alert = self._fire(0, params, tick, series, 0, change, detected_at_ms)
                if alert is not None:
                    alerts.append(alert)
        return alerts

    def _feed_many(self, ticks: Iterable[Tick], detected_at_ms: int | None, *,
                   evaluate: bool) -> list[Alert]:
        alerts: list[Alert] = []
        all_series = self._series
        get = all_series.get
        windows_ms = self._window_ms
        count = len(windows_ms)
        indices = range(count)
        longest = self._longest
        track_volume = self._track_volume
        for tick in ticks:
            if tick.kind:  # not PRICE
                continue
            symbol = tick.symbol
            series = get(symbol)
            if series is None:
                if tick.price > 0.0:
                    all_series[symbol] = _Series(tick, count, self._resolve(symbol))
                continue
            times = series.times
            time_ms = tick.event_time_ms
            price = tick.price
            if time_ms < times[-1] or not price > 0.0:
                continue
            prices = series.prices
            times.append(time_ms)
            prices.append(price)
            if track_volume:
                volume = tick.quote_volume
                if volume is not None:
                    series.volume = volume
            bases = series.bases
            all_params = series.params
            for i, window_ms in enumerate(windows_ms):
                b = bases[i]
                cutoff = time_ms - window_ms
                if times[b + 1] <= cutoff:
                    b += 1
                    while times[b + 1] <= cutoff:
                        b += 1
                    bases[i] = b
                if not evaluate:
                    continue
                params = all_params[i]
                if params is None:
                    continue
                base = prices[b]
                change = (price - base) / base * 100.0
                if change >= params.up or change <= params.down:
                    alert = self._fire(i, params, tick, series, b, change, detected_at_ms)
                    if alert is not None:
                        alerts.append(alert)
            head = bases[longest]
            if head:
                for _ in range(head):
                    times.popleft()
                    prices.popleft()
                for i in indices:
                    bases[i] -= head
        return alerts

    # --- off the hot path: a threshold was crossed -------------------------------------

    def _fire(self, index: int, params: _Params, tick: Tick, series: _Series, base_index: int,
              change: float, detected_at_ms: int | None) -> Alert | None:
        floor = params.min_volume
        if floor is not None and (series.volume is None or series.volume < floor):
            return None
        symbol = tick.symbol
        time_ms = tick.event_time_ms
        cooldowns = self._cooldown_list[index]
        level = next_level(cooldowns.get(symbol), time_ms, change, params.step,
                           THRESHOLD_SLACK_PCT)
        if not level:
            return None
        cooldowns[symbol] = Cooldown(time_ms + params.cooldown_ms, change, level)
        rule = self._rules[index]
        up = change > 0
        base = series.prices[base_index]
        return Alert(
            id=alert_id(symbol, rule.window_s, time_ms),
            symbol=symbol,
            direction="up" if up else "down",
            change_pct=change,
            price=tick.price,
            base_price=base,
            window_s=rule.window_s,
            threshold_pct=params.threshold_up_pct if up else params.threshold_down_pct,
            event_time_ms=time_ms,
            detected_at_ms=time_ms if detected_at_ms is None else detected_at_ms,
            source=tick.source,
            path=sample_path(series.times, series.prices, base_index),
            rule=rule.name,
            level=level,
        )

    def _resolve(self, symbol: str) -> list[_Params | None]:
        """Each rule's settings for ``symbol`` (``None``: the rule does not watch it)."""
        return resolve(self._rules, self._defaults, self._plain, symbol, _Params)
