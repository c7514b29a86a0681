"""Several rules at once, escalation, the volume floor, per-symbol overrides, allow/deny
lists and rules changed live, case by case."""

from __future__ import annotations

import pytest

from common.rule_model import Rule, SymbolOverride
from detector.engine import MAX_PATH_POINTS, DetectionEngine
from tests.support.engine import RULE, run, tick

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


def test_a_volume_floor_added_live_waits_for_a_fresh_volume() -> None:
    engine = DetectionEngine(RULE)
    engine.process([tick("A", 0, 100.0, 5e9), tick("A", 1, 100.0, 1.0)])  # not followed
    engine.set_rules([Rule(min_quote_volume=1e6)])
    assert engine.process([tick("A", 2, 103.0)]) == []  # the 5e9 seen at first is stale
    assert len(engine.process([tick("A", 3, 103.0, 2e6)])) == 1
