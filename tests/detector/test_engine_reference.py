"""The engine against a brute-force reference of the rules, for any ticks, rules and batching."""

from __future__ import annotations

import itertools
from fnmatch import fnmatchcase
from typing import TypeVar

from hypothesis import example, given, settings
from hypothesis import strategies as st

from common.rule_model import Rule, SymbolOverride
from common.schemas import Alert, Tick
from detector.engine import DetectionEngine
from tests.support.engine import run

R = TypeVar("R", Rule, Tick)

# --- brute-force reference, written from the rules' description, not from the engine -----

Fired = tuple[str, str, str, int, float, int]  # symbol, rule, direction, time, base, level


class Effective:
    """A rule's settings for one symbol, resolved the slow, obvious way."""

    def __init__(self, rule: Rule, symbol: str) -> None:
        exact = [o for o in rule.overrides if o.pattern == symbol]
        globbed = [o for o in rule.overrides if fnmatchcase(symbol, o.pattern)
                   and not set("*?[") .isdisjoint(o.pattern)]
        chosen = (exact + globbed + [None])[0]

        def get(field: str) -> object:
            value = getattr(chosen, field) if chosen is not None else None
            return getattr(rule, field) if value is None else value

        self.up = float(get("threshold_up_pct"))  # type: ignore[arg-type]
        self.down = float(get("threshold_down_pct"))  # type: ignore[arg-type]
        self.cooldown_ms = int(get("cooldown_s")) * 1000  # type: ignore[call-overload]
        step = get("escalation_step_pct")
        self.step = float(step) if step else None  # type: ignore[arg-type]
        floor = get("min_quote_volume")
        self.floor = float(floor) if floor else None  # type: ignore[arg-type]
        denied = any(fnmatchcase(symbol, p) for p in rule.deny)
        allowed = not rule.allow or any(fnmatchcase(symbol, p) for p in rule.allow)
        self.watched = allowed and not denied


def reference(ticks: list[Tick], rules: list[Rule]) -> list[Fired]:
    history: dict[str, list[tuple[int, float]]] = {}
    volume: dict[str, float] = {}
    last: dict[tuple[str, str], tuple[int, float, int]] = {}  # until, change, level
    out: list[Fired] = []
    for t in ticks:
        seen = history.setdefault(t.symbol, [])
        if seen and t.event_time_ms < seen[-1][0]:
            continue
        seen.append((t.event_time_ms, t.price))
        if t.quote_volume is not None:
            volume[t.symbol] = t.quote_volume
        if len(seen) == 1:
            continue
        for rule in rules:
            eff = Effective(rule, t.symbol)
            if not eff.watched:
                continue
            horizon = t.event_time_ms - rule.window_s * 1000
            old = [obs for obs in seen if obs[0] <= horizon]
            base = old[-1][1] if old else seen[0][1]
            change = (t.price - base) / base * 100
            if change >= eff.up - 1e-9:
                direction = "up"
            elif change <= -eff.down + 1e-9:
                direction = "down"
            else:
                continue
            if eff.floor is not None and volume.get(t.symbol, -1.0) < eff.floor:
                continue
            level = 1
            previous = last.get((t.symbol, rule.name))
            if previous is not None and t.event_time_ms < previous[0]:
                _, previous_change, previous_level = previous
                same_way = (previous_change > 0) == (direction == "up")
                if not (eff.step and same_way
                        and abs(change) >= abs(previous_change) + eff.step - 1e-9):
                    continue
                level = previous_level + 1
            last[(t.symbol, rule.name)] = (t.event_time_ms + eff.cooldown_ms, change, level)
            out.append((t.symbol, rule.name, direction, t.event_time_ms, base, level))
    return out


def fired(alerts: list[Alert]) -> list[Fired]:
    return [(a.symbol, a.rule or "", a.direction, a.event_time_ms, a.base_price, a.level)
            for a in alerts]


SYMBOLS = ["BTCUSDT", "ETHUSDT", "1000PEPEUSDT", "1000SHIBUSDT"]

volumes = st.none() | st.sampled_from([1e5, 1e6, 1e7])

# Prices anywhere in a band, at any time (out of order too): bases and cooldowns.
scattered = st.lists(
    st.builds(
        Tick,
        symbol=st.sampled_from(SYMBOLS),
        price=st.floats(min_value=90, max_value=110),
        event_time_ms=st.integers(min_value=0, max_value=200_000),
        source=st.just("mini_ticker"),
        quote_volume=volumes,
    ),
    max_size=120,
).map(lambda ticks: sorted(ticks, key=lambda t: t.event_time_ms) if len(ticks) % 3 else ticks)


@st.composite
def walks(draw: st.DrawFn) -> list[Tick]:
    """Trending random walks with a few late ticks: moves that grow inside a cooldown."""
    symbols = st.sampled_from(["BTCUSDT", "1000PEPEUSDT"])
    steps = draw(st.lists(st.tuples(symbols, st.integers(-500, 3_000), st.integers(-60, 200),
                                    volumes), min_size=5, max_size=120))
    prices = dict.fromkeys(SYMBOLS, 100.0)
    now = 0
    ticks = []
    for symbol, dt, move, volume in steps:
        now = max(0, now + dt)
        prices[symbol] *= 1 + move / 10_000
        ticks.append(Tick(symbol, prices[symbol], now, "mini_ticker", volume))
    return ticks


tick_lists = scattered | walks()

percent = st.floats(min_value=0.5, max_value=8)
optional_step = st.none() | st.sampled_from([0.0, 0.5, 1.0, 2.5])
optional_floor = st.none() | st.sampled_from([0.0, 1e6, 5e6])
overrides = st.lists(
    st.builds(SymbolOverride,
              pattern=st.sampled_from(["1000*", "1000PEPEUSDT", "*USDT", "ETH?SDT", "B*"]),
              threshold_up_pct=st.none() | percent, threshold_down_pct=st.none() | percent,
              cooldown_s=st.none() | st.integers(0, 120), escalation_step_pct=optional_step,
              min_quote_volume=optional_floor),
    max_size=3, unique_by=lambda o: o.pattern)


@st.composite
def rule_sets(draw: st.DrawFn, max_rules: int = 3) -> list[Rule]:
    windows = draw(st.lists(st.integers(min_value=1, max_value=90), min_size=1,
                            max_size=max_rules, unique=True))
    return [Rule(name=f"r{i}", window_s=window, threshold_up_pct=draw(percent),
                 threshold_down_pct=draw(percent),
                 cooldown_s=draw(st.integers(min_value=0, max_value=120)),
                 escalation_step_pct=draw(optional_step),
                 min_quote_volume=draw(optional_floor),
                 allow=draw(st.sampled_from([[], ["1000*"], ["BTCUSDT", "ETH*"]])),
                 deny=draw(st.sampled_from([[], ["ETHUSDT"], ["1000SHIB*"]])),
                 overrides=draw(overrides))
            for i, window in enumerate(windows)]


plain_rules = st.builds(
    Rule,
    window_s=st.integers(min_value=1, max_value=90),
    threshold_up_pct=percent,
    threshold_down_pct=percent,
    cooldown_s=st.integers(min_value=0, max_value=120),
)


@settings(max_examples=300, deadline=None)
@given(ticks=tick_lists, rule=plain_rules)
def test_one_plain_rule_matches_the_reference(ticks: list[Tick], rule: Rule) -> None:
    assert fired(run(ticks, rule)) == reference(ticks, [rule])


@settings(max_examples=400, deadline=None)
@given(ticks=tick_lists, rules=rule_sets())
def test_several_rules_match_the_reference(ticks: list[Tick], rules: list[Rule]) -> None:
    assert fired(run(ticks, rules)) == reference(ticks, rules)


@settings(max_examples=200, deadline=None)
@given(ticks=tick_lists, rules=rule_sets(max_rules=1))
def test_one_rule_with_every_option_matches_the_reference(ticks: list[Tick],
                                                          rules: list[Rule]) -> None:
    assert fired(run(ticks, rules)) == reference(ticks, rules)


@settings(max_examples=200, deadline=None)
@given(ticks=tick_lists, rules=rule_sets(),
       cuts=st.lists(st.integers(min_value=0, max_value=120), max_size=8))
def test_batches_split_differently_give_the_same_alerts(ticks: list[Tick], rules: list[Rule],
                                                        cuts: list[int]) -> None:
    engine = DetectionEngine(rules)
    batched: list[Alert] = []
    bounds = [0, *sorted(c for c in cuts if c <= len(ticks)), len(ticks)]
    for start, end in itertools.pairwise(bounds):
        batched.extend(engine.process(ticks[start:end]))
    assert batched == run(ticks, rules)


@settings(max_examples=200, deadline=None)
@given(ticks=tick_lists, rules=rule_sets())
def test_nothing_fires_inside_a_cooldown_except_a_growing_escalation(
        ticks: list[Tick], rules: list[Rule]) -> None:
    by_name = {r.name: r for r in rules}
    last: dict[tuple[str, str], Alert] = {}
    for alert in run(ticks, rules):
        assert alert.rule is not None
        eff = Effective(by_name[alert.rule], alert.symbol)
        assert eff.watched
        previous = last.get((alert.symbol, alert.rule))
        if previous is not None and alert.event_time_ms < previous.event_time_ms + eff.cooldown_ms:
            assert eff.step is not None
            assert alert.direction == previous.direction
            assert abs(alert.change_pct) >= abs(previous.change_pct) + eff.step - 1e-9
            assert alert.level == previous.level + 1
        else:
            assert alert.level == 1
        threshold = eff.up if alert.direction == "up" else eff.down
        assert alert.threshold_pct == threshold
        last[(alert.symbol, alert.rule)] = alert


@settings(max_examples=200, deadline=None)
@given(ticks=tick_lists, before=rule_sets(), after=rule_sets(), cut=st.integers(0, 120))
# The first volume floor arrives after a tick that carried the volume: both forget it.
@example(ticks=[Tick("ETHUSDT", 91.0, 0, "mini_ticker", 1e6),
                Tick("ETHUSDT", 90.0, 0, "mini_ticker")],
         before=[Rule(name="r0", window_s=1, threshold_up_pct=1.0, threshold_down_pct=1.0,
                      cooldown_s=0)],
         after=[Rule(name="r1", window_s=1, threshold_up_pct=1.0, threshold_down_pct=1.0,
                     cooldown_s=0, min_quote_volume=1e6)], cut=1)
def test_set_rules_mid_stream_equals_a_rebuild_with_the_new_rules(
        ticks: list[Tick], before: list[Rule], after: list[Rule], cut: int) -> None:
    """New names start without cooldowns; as long as the old rules kept enough history
    (their longest window at least the new longest), switching live gives exactly what a
    detector restarted with the new rules would give."""
    after = [msgspec_replace(r, name=f"new{i}") for i, r in enumerate(after)]
    if max(r.window_s for r in after) > max(r.window_s for r in before):
        before = [*before[:-1], msgspec_replace(before[-1], window_s=91)]
    live = DetectionEngine(before)
    live.process(ticks[:cut])
    live.set_rules(after)
    history = ticks[:cut]
    if has_floor(after) and not has_floor(before):
        # The first floor: volumes were not followed, so every symbol's is unknown until
        # its next tick that carries one (DetectionEngine.set_rules).
        history = [msgspec_replace(t, quote_volume=None) for t in history]
    restarted = DetectionEngine(after)
    restarted.rebuild(history)
    assert live.process(ticks[cut:]) == restarted.process(ticks[cut:])


def has_floor(rules: list[Rule]) -> bool:
    return any(r.min_quote_volume or any(o.min_quote_volume for o in r.overrides)
               for r in rules)


def msgspec_replace(value: R, **changes: object) -> R:
    import msgspec

    return msgspec.structs.replace(value, **changes)
