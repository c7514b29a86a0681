"""The detection rules, checked case by case and against a brute-force reference."""

from __future__ import annotations

import itertools
from fnmatch import fnmatchcase

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.schemas import Alert, Rule, SymbolOverride, Tick
from detector.engine import MAX_PATH_POINTS, DetectionEngine

RULE = Rule(window_s=60, threshold_up_pct=2.0, threshold_down_pct=2.0, cooldown_s=60)


def tick(symbol: str, seconds: float, price: float, volume: float | None = None) -> Tick:
    return Tick(symbol, price, int(seconds * 1000), "mini_ticker", volume)


def run(ticks: list[Tick], rule: Rule | list[Rule] = RULE) -> list[Alert]:
    return DetectionEngine(rule).process(ticks)


def test_first_observation_never_fires() -> None:
    assert run([tick("A", 0, 100.0)]) == []


def test_up_move_fires_with_every_field() -> None:
    [alert] = run([tick("BTCUSDT", 0, 100.0), tick("BTCUSDT", 30, 103.0)])
    assert alert.id == "BTCUSDT:60:30000"
    assert alert.direction == "up"
    assert alert.change_pct == pytest.approx(3.0)
    assert (alert.price, alert.base_price) == (103.0, 100.0)
    assert (alert.window_s, alert.threshold_pct) == (60, 2.0)
    assert alert.event_time_ms == alert.detected_at_ms == 30_000
    assert alert.source == "mini_ticker"
    assert alert.path == [(0, 100.0), (30_000, 103.0)]


def test_down_move_fires_on_its_own_threshold() -> None:
    rule = Rule(window_s=60, threshold_up_pct=5.0, threshold_down_pct=1.0, cooldown_s=60)
    [alert] = run([tick("A", 0, 100.0), tick("A", 10, 98.9)], rule)
    assert alert.direction == "down"
    assert alert.change_pct == pytest.approx(-1.1)
    assert alert.threshold_pct == 1.0
    assert run([tick("A", 0, 100.0), tick("A", 10, 104.0)], rule) == []


@pytest.mark.parametrize(
    ("base", "price", "fires"),
    [
        (100.0, 102.0, True),
        (100.0, 101.999, False),
        (0.1, 0.102, True),  # 1.99999...% in floating point: the boundary still fires
        (100.0, 98.0, True),
        (100.0, 98.001, False),
        (3.3, 3.234, True),  # exactly -2 % in decimal
    ],
)
def test_thresholds_at_the_boundary(base: float, price: float, fires: bool) -> None:
    alerts = run([tick("A", 0, base), tick("A", 1, price)])
    assert bool(alerts) is fires


def test_base_is_carried_forward_from_before_the_window() -> None:
    # 100 at t=0, 101 at t=10; at t=65 the base is the last price at or before t-60=5 → 100.
    alerts = run([tick("A", 0, 100.0), tick("A", 10, 101.0), tick("A", 65, 102.0)])
    assert [a.base_price for a in alerts] == [100.0]
    # At t=75 the last observation at or before 15 is 101: +0.99 % does not fire.
    assert run([tick("A", 0, 100.0), tick("A", 10, 101.0), tick("A", 75, 102.0)]) == []


def test_symbol_silent_for_longer_than_window_then_jumping_fires() -> None:
    [alert] = run([tick("A", 0, 100.0), tick("A", 300, 103.0)])
    assert alert.base_price == 100.0
    assert alert.path == [(0, 100.0), (300_000, 103.0)]


def test_before_a_full_window_the_base_is_the_oldest_observation() -> None:
    [alert] = run([tick("A", 0, 100.0), tick("A", 20, 101.5), tick("A", 40, 102.5)])
    assert alert.base_price == 100.0


def test_cooldown_suppresses_both_directions_until_it_expires() -> None:
    ticks = [
        tick("A", 0, 100.0),
        tick("A", 10, 103.0),   # fires up; quiet until 70
        tick("A", 20, 104.0),   # inside cooldown
        tick("A", 69, 99.0),    # -4.8 % from 104, still inside cooldown
        tick("A", 70, 94.0),    # cooldown over: fires down
    ]
    alerts = run(ticks)
    assert [(a.direction, a.event_time_ms) for a in alerts] == [("up", 10_000), ("down", 70_000)]


def test_cooldown_is_per_symbol() -> None:
    ticks = [tick("A", 0, 100.0), tick("B", 0, 10.0), tick("A", 5, 103.0), tick("B", 6, 10.3)]
    assert [a.symbol for a in run(ticks)] == ["A", "B"]


def test_zero_cooldown_allows_consecutive_alerts() -> None:
    rule = Rule(window_s=60, threshold_up_pct=2.0, threshold_down_pct=2.0, cooldown_s=0)
    alerts = run([tick("A", 0, 100.0), tick("A", 1, 103.0), tick("A", 2, 104.0)], rule)
    assert len(alerts) == 2


def test_tick_older_than_newest_observation_updates_nothing() -> None:
    ticks = [tick("A", 0, 100.0), tick("A", 30, 100.5), tick("A", 20, 150.0), tick("A", 31, 101.0)]
    assert run(ticks) == []
    engine = DetectionEngine(RULE)
    engine.process([tick("A", 0, 100.0), tick("A", 30, 100.0)])
    engine.process([tick("A", 10, 50.0)])  # late and wildly off: ignored
    [alert] = engine.process([tick("A", 40, 102.5)])
    assert alert.base_price == 100.0


def test_note_alert_restores_a_cooldown_from_an_earlier_run() -> None:
    engine = DetectionEngine(RULE)
    engine.note_alert("A", 5_000)
    assert engine.process([tick("A", 0, 100.0), tick("A", 30, 103.0)]) == []
    assert [a.event_time_ms for a in engine.process([tick("A", 66, 106.0)])] == [66_000]


def test_path_is_sampled_down_to_the_limit_keeping_both_ends() -> None:
    ticks = [tick("A", i * 0.25, 100.0) for i in range(200)] + [tick("A", 50, 103.0)]
    [alert] = run(ticks)
    assert alert.path is not None
    assert len(alert.path) == MAX_PATH_POINTS
    assert alert.path[0] == (0, 100.0)
    assert alert.path[-1] == (50_000, 103.0)
    assert [t for t, _ in alert.path] == sorted(t for t, _ in alert.path)


def test_detected_at_is_the_callers_clock_when_given() -> None:
    [alert] = DetectionEngine(RULE).process(
        [tick("A", 0, 100.0), tick("A", 1, 103.0)], detected_at_ms=123)
    assert alert.detected_at_ms == 123


def test_rule_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="window_s"):
        Rule(window_s=0)
    with pytest.raises(ValueError, match="threshold_up_pct"):
        Rule(threshold_up_pct=0)


def test_rebuild_fills_windows_without_alerting_or_starting_cooldowns() -> None:
    engine = DetectionEngine(RULE)
    engine.rebuild([tick("A", 0, 100.0), tick("A", 10, 110.0)])
    # The +10 % seen during the rebuild neither alerted nor started a cooldown, and the
    # rebuilt window supplies the base of the next live tick.
    [alert] = engine.process([tick("A", 20, 103.0)])
    assert alert.base_price == 100.0


# --- several rules, escalation, volume, overrides, allow/deny ------------------------------

FAST = Rule(name="fast", window_s=10, threshold_up_pct=1.0, threshold_down_pct=1.0,
            cooldown_s=10)
SLOW = Rule(name="slow", window_s=300, threshold_up_pct=5.0, threshold_down_pct=5.0,
            cooldown_s=300)


def test_each_rule_has_its_own_base_and_names_itself_on_its_alerts() -> None:
    # A slow climb of 0.4 % per 5 s never moves 1 % within 10 s, then a jump at t=65.
    ticks = [tick("A", t, 100.0 + 0.4 * t / 5) for t in range(0, 61, 5)]
    alerts = run([*ticks, tick("A", 65, 106.5)], [FAST, SLOW])
    # At t=65 the 10 s base is the price at 55 (104.4) and the 300 s base the oldest (100).
    assert [(a.rule, a.window_s, a.base_price, a.id) for a in alerts] == [
        ("fast", 10, pytest.approx(104.4), "A:10:65000"),
        ("slow", 300, 100.0, "A:300:65000")]
    assert [a.level for a in alerts] == [1, 1]


def test_history_is_kept_for_the_longest_window() -> None:
    engine = DetectionEngine([FAST, SLOW])
    assert engine.process([tick("A", i, 100.0 + (i % 2) * 0.1) for i in range(1000)]) == []
    fast, slow = engine.process([tick("A", 1000, 106.0)])
    assert slow.path is not None
    assert slow.path[0] == (700_000, 100.0)  # the base: the price at t - 300 s
    assert len(slow.path) == MAX_PATH_POINTS
    assert fast.path is not None
    assert fast.path[0] == (990_000, 100.0)


def test_escalation_fires_each_step_then_stays_quiet() -> None:
    rule = Rule(window_s=60, cooldown_s=60, escalation_step_pct=2.0)
    ticks = [tick("A", 0, 100.0), tick("A", 5, 102.0),  # +2 %: level 1
             tick("A", 10, 103.5),                      # +3.5 %: below 2 + 2, quiet
             tick("A", 15, 104.0),                      # +4 %: level 2
             tick("A", 20, 105.0),                      # quiet
             tick("A", 25, 106.0),                      # +6 %: level 3
             tick("A", 30, 90.0)]                       # a reversal in the cooldown: quiet
    alerts = run(ticks, rule)
    assert [(a.level, a.event_time_ms, a.direction) for a in alerts] == [
        (1, 5_000, "up"), (2, 15_000, "up"), (3, 25_000, "up")]
    assert [round(a.change_pct, 6) for a in alerts] == [2.0, 4.0, 6.0]


def test_each_escalation_restarts_the_cooldown_and_levels_reset_after_it() -> None:
    rule = Rule(window_s=60, cooldown_s=20, escalation_step_pct=1.0)
    ticks = [tick("A", 0, 100.0), tick("A", 10, 102.0),   # level 1, quiet until 30
             tick("A", 25, 103.0),                        # level 2, quiet until 45
             tick("A", 40, 97.0),                         # reversal at 40 < 45: quiet
             tick("A", 45, 97.0)]                         # cooldown over: down, level 1
    alerts = run(ticks, rule)
    assert [(a.level, a.direction, a.event_time_ms) for a in alerts] == [
        (1, "up", 10_000), (2, "up", 25_000), (1, "down", 45_000)]


def test_without_a_step_a_bigger_move_stays_quiet_in_the_cooldown() -> None:
    alerts = run([tick("A", 0, 100.0), tick("A", 5, 102.0), tick("A", 10, 120.0)])
    assert [a.level for a in alerts] == [1]


def test_a_volume_floor_needs_a_known_volume_at_least_that_big() -> None:
    rule = Rule(window_s=60, min_quote_volume=1_000_000)
    assert run([tick("A", 0, 100.0), tick("A", 5, 103.0)], rule) == []  # unknown
    assert run([tick("A", 0, 100.0, 999_999), tick("A", 5, 103.0, 999_999)], rule) == []
    # The last known volume counts, even from a tick that carried none of its own.
    alerts = run([tick("A", 0, 100.0, 1_000_000), tick("A", 5, 103.0)], rule)
    assert [a.price for a in alerts] == [103.0]


def test_a_tick_below_the_floor_still_feeds_the_window() -> None:
    rule = Rule(window_s=60, min_quote_volume=1_000_000)
    ticks = [tick("A", 0, 100.0, 10.0), tick("A", 5, 103.0, 10.0),
             tick("A", 6, 103.0, 2_000_000)]
    [alert] = run(ticks, rule)
    assert (alert.event_time_ms, alert.base_price) == (6_000, 100.0)


def test_overrides_exact_beats_glob_and_first_glob_wins() -> None:
    rule = Rule(window_s=60, threshold_up_pct=5.0, overrides=[
        SymbolOverride(pattern="1000*", threshold_up_pct=3.0),
        SymbolOverride(pattern="1000P*", threshold_up_pct=1.0),  # never: the first glob wins
        SymbolOverride(pattern="1000PEPEUSDT", threshold_up_pct=10.0)])
    ticks = [tick(s, 0, 100.0) for s in ("BTCUSDT", "1000SHIBUSDT", "1000PEPEUSDT")]
    ticks += [tick(s, 5, 104.0) for s in ("BTCUSDT", "1000SHIBUSDT", "1000PEPEUSDT")]
    alerts = run(ticks, rule)
    assert [(a.symbol, a.threshold_pct) for a in alerts] == [("1000SHIBUSDT", 3.0)]


def test_override_can_turn_escalation_and_the_volume_floor_off() -> None:
    rule = Rule(window_s=60, escalation_step_pct=1.0, min_quote_volume=1e9, overrides=[
        SymbolOverride(pattern="B*", escalation_step_pct=0, min_quote_volume=0)])
    ticks = [tick("BTCUSDT", 0, 100.0), tick("BTCUSDT", 1, 103.0), tick("BTCUSDT", 2, 110.0)]
    assert [a.level for a in run(ticks, rule)] == [1]


def test_allow_and_deny_lists_with_deny_winning() -> None:
    rule = Rule(window_s=60, allow=["*USDT"], deny=["1000*", "ETHUSDT"])
    symbols = ["BTCUSDT", "ETHUSDT", "1000PEPEUSDT", "BTCUSDC"]
    ticks = [tick(s, 0, 100.0) for s in symbols] + [tick(s, 1, 103.0) for s in symbols]
    assert [a.symbol for a in run(ticks, rule)] == ["BTCUSDT"]


def test_set_rules_applies_at_once_on_the_history_already_seen() -> None:
    engine = DetectionEngine(RULE)
    assert engine.process([tick("A", 0, 100.0), tick("A", 10, 101.0)]) == []
    engine.set_rules([Rule(name="tight", window_s=60, threshold_up_pct=1.0)])
    [alert] = engine.process([tick("A", 11, 101.0)])
    assert (alert.rule, alert.base_price, alert.threshold_pct) == ("tight", 100.0, 1.0)


def test_set_rules_keeps_cooldowns_by_name_and_drops_them_with_the_name() -> None:
    engine = DetectionEngine(RULE)
    assert len(engine.process([tick("A", 0, 100.0), tick("A", 1, 103.0)])) == 1
    engine.set_rules([Rule(window_s=60, threshold_up_pct=1.0)])  # still "default"
    assert engine.process([tick("A", 2, 104.0)]) == []
    engine.set_rules([Rule(name="other", window_s=60, threshold_up_pct=1.0)])
    assert len(engine.process([tick("A", 3, 104.0)])) == 1


def test_set_rules_refuses_an_invalid_set() -> None:
    engine = DetectionEngine(RULE)
    with pytest.raises(ValueError, match=r"rules\[1\].window_s"):
        engine.set_rules([Rule(name="a"), Rule(name="b")])
    with pytest.raises(ValueError, match=r"rules\[1\].name"):
        engine.set_rules([Rule(name="a", window_s=1), Rule(name="a", window_s=2)])
    with pytest.raises(ValueError, match="at least one"):
        engine.set_rules([])
    assert engine.rules == (RULE,)


def test_note_alert_lets_an_escalation_continue_after_a_restart() -> None:
    rule = Rule(window_s=60, cooldown_s=60, escalation_step_pct=2.0)
    engine = DetectionEngine(rule)
    engine.note_alert("A", 5_000, rule="default", change_pct=2.5, level=1)
    engine.note_alert("A", 5_000, rule="unknown", change_pct=9.0, level=7)  # ignored
    alerts = engine.process([tick("A", 0, 100.0), tick("A", 10, 104.0), tick("A", 11, 104.5)])
    assert [(a.level, a.event_time_ms) for a in alerts] == [(2, 11_000)]


def test_rule_for_window() -> None:
    engine = DetectionEngine([FAST, SLOW])
    assert engine.rule_for_window(300) == SLOW
    assert engine.rule_for_window(60) is None


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
    restarted = DetectionEngine(after)
    restarted.rebuild(ticks[:cut])
    assert live.process(ticks[cut:]) == restarted.process(ticks[cut:])


def msgspec_replace(rule: Rule, **changes: object) -> Rule:
    import msgspec

    return msgspec.structs.replace(rule, **changes)


def test_a_price_that_is_not_positive_changes_nothing() -> None:
    ticks = [tick("A", 0, 0.0), tick("A", 1, 100.0), tick("A", 2, -5.0), tick("A", 3, 103.0)]
    [alert] = run(ticks)
    assert alert.base_price == 100.0


def test_a_volume_floor_added_live_waits_for_a_fresh_volume() -> None:
    engine = DetectionEngine(RULE)
    engine.process([tick("A", 0, 100.0, 5e9), tick("A", 1, 100.0, 1.0)])  # not followed
    engine.set_rules([Rule(min_quote_volume=1e6)])
    assert engine.process([tick("A", 2, 103.0)]) == []  # the 5e9 seen at first is stale
    assert len(engine.process([tick("A", 3, 103.0, 2e6)])) == 1
