"""Detection, every kind of rule at once, as one pure engine (docs/architecture.md#rule-kinds).

No I/O and no clock: time comes from the ticks (and ``detected_at_ms`` from the caller), so
the live detector, a restart that replays history and a backtest over a recording all reach
the same alerts from the same ticks, however the ticks were batched.

``DetectionEngine`` splits the rules by ``kind`` and hands each kind's rules to its own
detector: ``PriceEngine`` (the detection rule), ``LiquidationEngine``, ``FundingEngine``
and ``VolumeEngine``. Each reads only its ticks (``Tick.kind``: PRICE for price and volume
rules, LIQUIDATION, FUNDING). One call's alerts are the price alerts, then liquidation,
funding and volume, each kind's in the order of its ticks.

The 24 h volume floor (``min_quote_volume``) of liquidation and funding rules reads the
last PRICE tick that carried a 24 h volume *before* the forced order or mark price in the
stream (price and volume rules follow it themselves), so that it does not depend on how
the ticks were batched. With price rules only, ticks go straight to the price engine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, KeysView, Sequence
from typing import Final, Protocol, TypeVar

from common.rule_model import Rule, check_rules
from common.schemas import FUNDING, LIQUIDATION, PRICE, Alert, Tick
from detector.funding_engine import FundingEngine
from detector.liquidation_engine import LiquidationEngine
from detector.price_engine import PriceEngine
from detector.rule_state import MAX_PATH_POINTS, THRESHOLD_SLACK_PCT
from detector.volume_engine import VolumeEngine

__all__ = ["MAX_PATH_POINTS", "THRESHOLD_SLACK_PCT", "DetectionEngine"]

Observed = tuple[Tick, float | None]
_NO_TICKS: Final[list[Observed]] = []


class _KindEngine(Protocol):
    @property
    def symbols(self) -> KeysView[str]: ...

    def set_rules(self, rules: Sequence[Rule]) -> None: ...

    def forget(self, predicate: Callable[[str], bool]) -> None: ...


E = TypeVar("E", bound=_KindEngine)


def _update(engine: E | None, rules: list[Rule], make: Callable[[list[Rule]], E]) -> E | None:
    """The kind's engine for ``rules``: kept (with what it learnt) while the kind has rules."""
    if not rules:
        return None
    if engine is None:
        return make(rules)
    engine.set_rules(rules)
    return engine


class DetectionEngine:
    """Every rule over one stream of ticks. ``rules`` may also be a single ``Rule``."""

    def __init__(self, rules: Sequence[Rule] | Rule) -> None:
        self._rules: tuple[Rule, ...] = ()
        self._price: PriceEngine | None = None
        self._liquidation: LiquidationEngine | None = None
        self._funding: FundingEngine | None = None
        self._volume: VolumeEngine | None = None
        # For the floors of liquidation and funding rules: per symbol, the newest PRICE
        # tick's time and the last 24 h quote volume a PRICE tick carried.
        self._track_volume = False
        self._price_newest: dict[str, int] = {}
        self._volumes: dict[str, float] = {}
        self.set_rules(rules)

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self._rules

    @property
    def rule(self) -> Rule:
        """The first rule (the only one of a single-rule engine)."""
        return self._rules[0]

    @property
    def history_s(self) -> int:
        """How far back the windows reach: the longest price or liquidation window, or
        volume window plus baseline (what a restart must replay to rebuild them)."""
        spans = [r.window_s + (r.baseline_s or 0) for r in self._rules if r.kind != "funding"]
        return max(spans, default=0)

    @property
    def symbols_tracked(self) -> int:
        keys = self._symbols()
        if len(keys) == 1:
            return len(keys[0])
        return len(set().union(*keys))

    def set_rules(self, rules: Sequence[Rule] | Rule) -> None:
        """Apply a new set of rules at once, keeping what was learnt.

        Each kind's engine keeps its history and the cooldowns of the rules that keep their
        name, as ``PriceEngine.set_rules`` says; a kind left without rules forgets its
        state. Raises ``ValueError`` for a set that ``check_rules`` refuses.
        """
        new = [rules] if isinstance(rules, Rule) else list(rules)
        check_rules(new)
        self._rules = tuple(new)
        by_kind = {kind: [r for r in new if r.kind == kind]
                   for kind in ("price", "liquidation", "funding", "volume")}
        self._price = _update(self._price, by_kind["price"], PriceEngine)
        self._liquidation = _update(self._liquidation, by_kind["liquidation"],
                                    LiquidationEngine)
        self._funding = _update(self._funding, by_kind["funding"], FundingEngine)
        self._volume = _update(self._volume, by_kind["volume"], VolumeEngine)
        track = any(e is not None and e.needs_volume for e in (self._liquidation, self._funding))
        if track and not self._track_volume:  # not kept up to date while no rule needed it
            self._price_newest.clear()
            self._volumes.clear()
        self._track_volume = track
        self._price_only = self._liquidation is None and self._funding is None and (
            self._volume is None)

    def process(self, ticks: Iterable[Tick], detected_at_ms: int | None = None) -> list[Alert]:
        """Feed ticks in arrival order; returns the alerts they cause, in order (price,
        liquidation, funding, volume; for one tick, in the order of the rules).

        ``detected_at_ms`` stamps the alerts (the live detector passes its clock); when
        omitted each alert is stamped with its own event time, as a backtest wants.
        """
        if self._price_only:
            assert self._price is not None
            return self._price.process(ticks, detected_at_ms)
        return self._feed(ticks, detected_at_ms, evaluate=True)

    def rebuild(self, ticks: Iterable[Tick]) -> None:
        """Update every kind's windows from already-processed history without evaluating
        the rules: replayed history starts mid-stream, so its first windows could "fire"
        where the live run did not. Cooldowns come from ``note`` instead."""
        if self._price_only:
            assert self._price is not None
            self._price.rebuild(ticks)
        else:
            self._feed(ticks, None, evaluate=False)

    def note_alert(self, symbol: str, event_time_ms: int, *, rule: str | None = None,
                   change_pct: float | None = None, level: int = 1) -> None:
        """Start the cooldown of a price alert published by an earlier run (restart
        recovery); ``PriceEngine.note_alert``."""
        if self._price is not None:
            self._price.note_alert(symbol, event_time_ms, rule=rule, change_pct=change_pct,
                                   level=level)

    def note(self, alert: Alert) -> None:
        """Restore what an alert of an earlier run started, whatever its kind: the cooldown
        and escalation of a price, liquidation or volume alert, the funding period of a
        funding alert. Alerts are expected oldest first; an alert of a rule not in force
        (or of another kind under that name) changes nothing."""
        kind = alert.kind
        if kind == "price":
            name = alert.rule
            if name is None:  # written before rules had names: its window tells the rule
                rule = self.rule_for_window(alert.window_s)
                if rule is None:
                    return
                name = rule.name
            self.note_alert(alert.symbol, alert.event_time_ms, rule=name,
                            change_pct=alert.change_pct, level=alert.level)
        elif kind == "liquidation" and self._liquidation is not None:
            self._liquidation.note(alert)
        elif kind == "funding" and self._funding is not None:
            self._funding.note(alert)
        elif kind == "volume" and self._volume is not None:
            self._volume.note(alert)

    def forget(self, predicate: Callable[[str], bool]) -> int:
        """Drop everything known about the symbols ``predicate`` picks (their windows,
        volumes, cooldowns and funding periods): another detector took them over. If they
        come back, the replay of their history and the alerts on the bus rebuild it.
        Returns how many symbols with state were forgotten."""
        gone = {symbol for keys in self._symbols() for symbol in keys if predicate(symbol)}
        for engine in self._engines():
            engine.forget(predicate)
        for symbol in [s for s in self._price_newest if predicate(s)]:
            del self._price_newest[symbol]
            self._volumes.pop(symbol, None)
        return len(gone)

    def rule_for_window(self, window_s: int) -> Rule | None:
        """The price rule with this window (windows are unique among price rules), for
        alerts without a rule name."""
        return next((r for r in self._rules if r.kind == "price" and r.window_s == window_s),
                    None)

    def _engines(self) -> list[_KindEngine]:
        engines: list[_KindEngine | None] = [self._price, self._liquidation, self._funding,
                                             self._volume]
        return [e for e in engines if e is not None]

    def _symbols(self) -> list[KeysView[str]]:
        return [e.symbols for e in self._engines()]

    def _feed(self, ticks: Iterable[Tick], detected_at_ms: int | None, *,
              evaluate: bool) -> list[Alert]:
        batch = ticks if isinstance(ticks, list) else list(ticks)
        liquidations, fundings = self._split(batch)
        alerts: list[Alert] = []
        if self._price is not None:
            if evaluate:
                alerts += self._price.process(batch, detected_at_ms)
            else:
                self._price.rebuild(batch)
        if self._liquidation is not None and liquidations:
            alerts += self._liquidation.process(liquidations, detected_at_ms, evaluate=evaluate)
        if self._funding is not None and fundings:
            alerts += self._funding.process(fundings, detected_at_ms, evaluate=evaluate)
        if self._volume is not None:
            alerts += self._volume.process(batch, detected_at_ms, evaluate=evaluate)
        return alerts

    def _split(self, batch: list[Tick]) -> tuple[list[Observed], list[Observed]]:
        """The forced orders and mark prices of ``batch``, each with the symbol's 24 h
        volume as the PRICE ticks before it left it (when a floor needs it)."""
        if self._liquidation is None and self._funding is None:
            return _NO_TICKS, _NO_TICKS
        liquidations: list[Observed] = []
        fundings: list[Observed] = []
        track = self._track_volume
        newest, volumes = self._price_newest, self._volumes
        for tick in batch:
            kind = tick.kind
            if kind == PRICE:
                if track:
                    symbol, time_ms = tick.symbol, tick.event_time_ms
                    last = newest.get(symbol)
                    if (last is None or time_ms >= last) and tick.price > 0.0:
                        newest[symbol] = time_ms
                        if tick.quote_volume is not None:
                            volumes[symbol] = tick.quote_volume
            elif kind == LIQUIDATION:
                liquidations.append((tick, volumes.get(tick.symbol)))
            elif kind == FUNDING:
                fundings.append((tick, volumes.get(tick.symbol)))
        return liquidations, fundings
