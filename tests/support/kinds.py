"""The rule kinds other than price (docs/architecture.md#rule-kinds) by brute force, written
from their description and not from the engine: every accepted tick kept, every sum taken
afresh over the whole history. Also ticks of each kind in seconds, and hypothesis strategies
of mixed tick streams and rules, for the engine's property tests."""

from __future__ import annotations

import itertools
import math
from fnmatch import fnmatchcase
from typing import NamedTuple

from hypothesis import strategies as st

from common.rule_model import Rule, SymbolOverride
from common.schemas import FUNDING, LIQUIDATION, PRICE, Alert, Side, Tick


def trade(symbol: str, seconds: float, price: float, quantity: float | None = 1.0,
          volume: float | None = None) -> Tick:
    return Tick(symbol, price, round(seconds * 1000), "agg_trade", volume, PRICE, quantity)


def forced(symbol: str, seconds: float, price: float, quantity: float | None,
           side: Side | None) -> Tick:
    return Tick(symbol, price, round(seconds * 1000), "force_order", None, LIQUIDATION,
                quantity, side)


def mark(symbol: str, seconds: float, rate: float | None, next_s: float | None,
         price: float = 100.0) -> Tick:
    return Tick(symbol, price, round(seconds * 1000), "mark_price", None, FUNDING,
                funding_rate=rate,
                next_funding_ms=None if next_s is None else round(next_s * 1000))


# --- settings, resolved the slow way --------------------------------------------------------

def setting(rule: Rule, symbol: str, field: str) -> object:
    """The exact override, else the first glob that matches, else the rule."""
    exact = [o for o in rule.overrides if o.pattern == symbol]
    globbed = [o for o in rule.overrides if fnmatchcase(symbol, o.pattern)
               and not set("*?[").isdisjoint(o.pattern)]
    for override in exact + globbed:
        value = getattr(override, field)
        return getattr(rule, field) if value is None else value
    return getattr(rule, field)


def watched(rule: Rule, symbol: str) -> bool:
    denied = any(fnmatchcase(symbol, p) for p in rule.deny)
    return not denied and (not rule.allow or any(fnmatchcase(symbol, p) for p in rule.allow))


def floor_met(rule: Rule, symbol: str, volume: float | None) -> bool:
    floor = setting(rule, symbol, "min_quote_volume")
    return not floor or (volume is not None and volume >= floor)  # type: ignore[operator]


class Fired(NamedTuple):
    kind: str
    symbol: str
    rule: str
    direction: str
    time_ms: int
    figure: float  # the sum, the rate in percent, or V in USDT
    number: int  # liquidations in the sum; the next funding time; 0
    base: float
    level: int


def fired(alerts: list[Alert]) -> list[Fired]:
    out = []
    for a in alerts:
        if a.kind == "liquidation":
            figure, count = a.notional_usdt, a.liquidations
        elif a.kind == "funding":
            figure, count = a.funding_rate_pct, a.next_funding_ms
        else:
            figure, count = a.volume_usdt, 0
        assert figure is not None
        assert count is not None
        out.append(Fired(a.kind, a.symbol, a.rule or "", a.direction, a.event_time_ms, figure,
                         count, a.base_price, a.level))
    return out


def accepted(ticks: list[Tick]) -> list[tuple[int, Tick, float | None]]:
    """The ticks that change something, each with its index and the symbol's 24 h volume
    known at it (from the PRICE ticks before it, or up to it for a PRICE tick)."""
    newest: dict[tuple[str, int], int] = {}
    volume: dict[str, float] = {}
    out = []
    for i, t in enumerate(ticks):
        if t.kind == PRICE:
            valid = t.price > 0
        elif t.kind == LIQUIDATION:
            valid = (t.quantity is not None and t.side in ("BUY", "SELL") and t.price > 0
                     and t.quantity > 0 and math.isfinite(t.price * t.quantity))
        else:
            valid = (t.funding_rate is not None and t.next_funding_ms is not None
                     and math.isfinite(t.funding_rate) and t.next_funding_ms >= t.event_time_ms
                     and t.price > 0)
        key = (t.symbol, t.kind)
        if not valid or t.event_time_ms < newest.get(key, t.event_time_ms):
            continue
        newest[key] = t.event_time_ms
        if t.kind == PRICE and t.quote_volume is not None:
            volume[t.symbol] = t.quote_volume
        out.append((i, t, volume.get(t.symbol)))
    return out


# --- liquidation ----------------------------------------------------------------------------

def reference_liquidation(ticks: list[Tick], rules: list[Rule]) -> list[Fired]:
    orders: dict[str, list[Tick]] = {}
    last: dict[tuple[str, str], tuple[int, str, float, int]] = {}  # until, side, sum, level
    out = []
    for _, t, volume in accepted(ticks):
        if t.kind != LIQUIDATION:
            continue
        assert t.quantity is not None
        assert t.side is not None
        seen = orders.setdefault(t.symbol, [])
        seen.append(t)
        for rule in [r for r in rules if r.kind == "liquidation"]:
            if not watched(rule, t.symbol):
                continue
            window = [o for o in seen if o.side == t.side
                      and t.event_time_ms - rule.window_s * 1000 < o.event_time_ms
                      <= t.event_time_ms]
            total = math.fsum(o.price * o.quantity for o in window)  # type: ignore[operator]
            if total < setting(rule, t.symbol, "min_notional_usdt"):  # type: ignore[operator]
                continue
            if not floor_met(rule, t.symbol, volume):
                continue
            step = setting(rule, t.symbol, "escalation_step_usdt")
            level = 1
            previous = last.get((t.symbol, rule.name))
            if previous is not None and t.event_time_ms < previous[0]:
                _, side, previous_sum, previous_level = previous
                if not (step and side == t.side and total >= previous_sum + step):  # type: ignore[operator]
                    continue
                level = previous_level + 1
            cooldown = int(setting(rule, t.symbol, "cooldown_s"))  # type: ignore[call-overload]
            last[(t.symbol, rule.name)] = (t.event_time_ms + cooldown * 1000, t.side, total,
                                           level)
            out.append(Fired("liquidation", t.symbol, rule.name,
                             "up" if t.side == "BUY" else "down", t.event_time_ms, total,
                             len(window), window[0].price, level))
    return out


# --- funding --------------------------------------------------------------------------------

def reference_funding(ticks: list[Tick], rules: list[Rule]) -> list[Fired]:
    alerted: set[tuple[str, str, int]] = set()
    out = []
    for _, t, volume in accepted(ticks):
        if t.kind != FUNDING:
            continue
        assert t.funding_rate is not None
        assert t.next_funding_ms is not None
        rate_pct = t.funding_rate * 100
        for rule in [r for r in rules if r.kind == "funding"]:
            threshold = float(setting(rule, t.symbol, "min_funding_rate_pct"))  # type: ignore[arg-type]
            key = (t.symbol, rule.name, t.next_funding_ms)
            if (not watched(rule, t.symbol) or abs(rate_pct) < threshold - 1e-9
                    or not floor_met(rule, t.symbol, volume) or key in alerted):
                continue
            alerted.add(key)
            out.append(Fired("funding", t.symbol, rule.name, "up" if rate_pct > 0 else "down",
                             t.event_time_ms, rate_pct, t.next_funding_ms, t.price, 1))
    return out


# --- volume ---------------------------------------------------------------------------------

def micro_usdt(volume: float) -> int:
    return round(volume * 1_000_000) if 0 < volume <= 1e12 else 0


def reference_volume(ticks: list[Tick], rules: list[Rule]) -> list[Fired]:
    history: dict[str, list[tuple[int, float, int]]] = {}  # time, price, micro-USDT
    last_q: dict[str, float] = {}
    quiet_until: dict[tuple[str, str], int] = {}
    out = []
    for _, t, volume in accepted(ticks):
        if t.kind != PRICE:
            continue
        previous = last_q.get(t.symbol)
        if t.quantity is not None:
            units = micro_usdt(t.price * t.quantity)
        elif t.quote_volume is not None and previous is not None:
            units = micro_usdt(t.quote_volume - previous)
        else:
            units = 0
        if t.quote_volume is not None:
            last_q[t.symbol] = t.quote_volume
        seen = history.setdefault(t.symbol, [])
        seen.append((t.event_time_ms, t.price, units))
        s = t.event_time_ms // 1000
        for rule in [r for r in rules if r.kind == "volume"]:
            w, b = rule.window_s, rule.baseline_s
            assert b is not None
            v = sum(u for time_ms, _, u in seen if s - w + 1 <= time_ms // 1000 <= s)
            base_sum = sum(u for time_ms, _, u in seen
                           if s - w - b + 1 <= time_ms // 1000 <= s - w)
            mean = base_sum * w / b
            minimum = round(float(setting(rule, t.symbol, "min_window_volume_usdt"))  # type: ignore[arg-type]
                            * 1_000_000)
            factor = float(setting(rule, t.symbol, "volume_factor"))  # type: ignore[arg-type]
            covered = seen[0][0] // 1000 <= s - w - b + 1
            if (not watched(rule, t.symbol) or not covered or v < minimum or v < factor * mean
                    or not floor_met(rule, t.symbol, volume)
                    or t.event_time_ms < quiet_until.get((t.symbol, rule.name), -1)):
                continue
            cooldown = int(setting(rule, t.symbol, "cooldown_s"))  # type: ignore[call-overload]
            quiet_until[(t.symbol, rule.name)] = t.event_time_ms + cooldown * 1000
            base = next(p for time_ms, p, _ in seen if time_ms // 1000 >= s - w + 1)
            out.append(Fired("volume", t.symbol, rule.name, "up" if t.price >= base else "down",
                             t.event_time_ms, v / 1_000_000, 0, base, 1))
    return out


def reference(ticks: list[Tick], rules: list[Rule]) -> list[Fired]:
    """Liquidation, funding and volume alerts, in the engine's order for one call."""
    return (reference_liquidation(ticks, rules) + reference_funding(ticks, rules)
            + reference_volume(ticks, rules))


# --- strategies -----------------------------------------------------------------------------

SYMBOLS = ["BTCUSDT", "ETHUSDT", "1000PEPEUSDT"]
PATTERNS = ["1000*", "BTCUSDT", "*USDT", "ETH?SDT"]
volumes_24h = st.none() | st.sampled_from([1e5, 1e6, 1e7])


@st.composite
def streams(draw: st.DrawFn, kinds: tuple[int, ...] = (PRICE, LIQUIDATION, FUNDING),
            max_size: int = 150) -> list[Tick]:
    """Mixed ticks moving forward in time with a few late ones, and some that are not
    valid for their kind."""
    count = draw(st.integers(0, max_size))
    now = 0
    ticks = []
    for _ in range(count):
        now = max(0, now + draw(st.integers(-3_000, 4_000)))
        symbol = draw(st.sampled_from(SYMBOLS))
        kind = draw(st.sampled_from(kinds))
        if kind == PRICE:
            price = draw(st.sampled_from([99.0, 100.0, 100.5, 101.0, 0.0]))
            if draw(st.booleans()):  # a trade
                ticks.append(Tick(symbol, price, now, "agg_trade", draw(volumes_24h), PRICE,
                                  draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 10.0, 100.0]))))
            else:  # a ticker: its 24 h volume mostly grows
                grown = draw(st.none() | st.integers(0, 40))
                q = None if grown is None else grown * 250.0 + now / 10
                ticks.append(Tick(symbol, price, now, "mini_ticker", q))
        elif kind == LIQUIDATION:
            ticks.append(Tick(symbol, draw(st.sampled_from([10.0, 20.5, 100.0, 0.0])), now,
                              "force_order", None, LIQUIDATION,
                              draw(st.none() | st.sampled_from([1.0, 3.0, 10.0, 50.0])),
                              draw(st.none() | st.sampled_from(["BUY", "SELL", "SELL"]))))
        else:
            period = 60_000
            next_ms = (now // period + draw(st.sampled_from([1, 1, 1, 2, -1]))) * period
            ticks.append(Tick(symbol, 100.0, now, "mark_price", None, FUNDING,
                              funding_rate=draw(st.none() | st.sampled_from(
                                  [-0.003, -0.001, -0.0007, 0.0, 0.0005, 0.0007, 0.001, 0.003])),
                              next_funding_ms=next_ms))
    return ticks


optional_floor = st.none() | st.sampled_from([0.0, 1e6, 5e6])
allows = st.sampled_from([[], ["1000*"], ["BTCUSDT", "ETH*"]])
denies = st.sampled_from([[], ["ETHUSDT"], ["1000*"]])


@st.composite
def liquidation_rules(draw: st.DrawFn, name: str = "liq") -> Rule:
    notional = st.sampled_from([100.0, 300.0, 500.0, 1_000.0, 2_050.0])
    step = st.none() | st.sampled_from([0.0, 100.0, 500.0])
    overrides = draw(st.lists(st.builds(
        SymbolOverride, pattern=st.sampled_from(PATTERNS), min_notional_usdt=st.none() | notional,
        escalation_step_usdt=step, cooldown_s=st.none() | st.integers(0, 60),
        min_quote_volume=optional_floor), max_size=2, unique_by=lambda o: o.pattern))
    return Rule(name=name, kind="liquidation", window_s=draw(st.integers(1, 30)),
                cooldown_s=draw(st.integers(0, 60)), min_notional_usdt=draw(notional),
                escalation_step_usdt=draw(step), min_quote_volume=draw(optional_floor),
                allow=draw(allows), deny=draw(denies), overrides=overrides)


@st.composite
def funding_rules(draw: st.DrawFn, name: str = "fund") -> Rule:
    rate = st.sampled_from([0.05, 0.07, 0.1, 0.3])
    overrides = draw(st.lists(st.builds(
        SymbolOverride, pattern=st.sampled_from(PATTERNS), min_funding_rate_pct=st.none() | rate,
        min_quote_volume=optional_floor), max_size=2, unique_by=lambda o: o.pattern))
    return Rule(name=name, kind="funding", min_funding_rate_pct=draw(rate),
                min_quote_volume=draw(optional_floor), allow=draw(allows), deny=draw(denies),
                overrides=overrides)


@st.composite
def volume_rules(draw: st.DrawFn, name: str = "vol") -> Rule:
    window = draw(st.integers(1, 10))
    factor = st.sampled_from([1.0, 1.5, 3.0, 5.0])
    minimum = st.sampled_from([1.0, 50.0, 500.0])
    overrides = draw(st.lists(st.builds(
        SymbolOverride, pattern=st.sampled_from(PATTERNS), volume_factor=st.none() | factor,
        min_window_volume_usdt=st.none() | minimum, cooldown_s=st.none() | st.integers(0, 30),
        min_quote_volume=optional_floor), max_size=2, unique_by=lambda o: o.pattern))
    return Rule(name=name, kind="volume", window_s=window,
                baseline_s=window + draw(st.integers(1, 40)), volume_factor=draw(factor),
                min_window_volume_usdt=draw(minimum), cooldown_s=draw(st.integers(0, 30)),
                min_quote_volume=draw(optional_floor), allow=draw(allows), deny=draw(denies),
                overrides=overrides)


def in_batches(rules: list[Rule], ticks: list[Tick], cuts: list[int]) -> list[Alert]:
    """The alerts of one engine fed ``ticks`` cut at ``cuts``, one ``process`` per piece."""
    from detector.engine import DetectionEngine

    engine = DetectionEngine(rules)
    bounds = [0, *sorted(c for c in cuts if c <= len(ticks)), len(ticks)]
    alerts: list[Alert] = []
    for start, end in itertools.pairwise(bounds):
        alerts += engine.process(ticks[start:end])
    return alerts


def by_kind(alerts: list[Alert]) -> dict[str, list[Alert]]:
    """Each kind's alerts in order (batching moves kinds against each other, not within)."""
    out: dict[str, list[Alert]] = {}
    for alert in alerts:
        out.setdefault(alert.kind, []).append(alert)
    return out
