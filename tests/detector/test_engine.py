"""The detection rule, one rule at a time, case by case (several rules: ``test_engine_rules``;
against a brute-force reference: ``test_engine_reference``)."""

from __future__ import annotations

import pytest

from common.rule_model import Rule
from detector.engine import MAX_PATH_POINTS, DetectionEngine
from tests.support.engine import RULE, run, tick


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


def test_a_price_that_is_not_positive_changes_nothing() -> None:
    ticks = [tick("A", 0, 0.0), tick("A", 1, 100.0), tick("A", 2, -5.0), tick("A", 3, 103.0)]
    [alert] = run(ticks)
    assert alert.base_price == 100.0


def test_forget_drops_the_windows_and_cooldowns_of_the_symbols_picked_only() -> None:
    engine = DetectionEngine(RULE)
    engine.process([tick("A", 0, 100.0), tick("B", 0, 100.0)])
    assert [a.symbol for a in engine.process([tick("A", 1, 103.0), tick("B", 1, 103.0)])
            ] == ["A", "B"]
    assert engine.forget(lambda symbol: symbol == "A") == 1
    assert engine.symbols_tracked == 1
    # A starts over: its first tick again is only a base, and no cooldown holds it back.
    assert engine.process([tick("A", 2, 97.0), tick("B", 2, 97.0)]) == []
    assert [a.base_price for a in engine.process([tick("A", 3, 100.0)])] == [97.0]
    # B kept its window and its cooldown: a reversal inside it stays quiet.
    assert engine.process([tick("B", 3, 99.0)]) == []
