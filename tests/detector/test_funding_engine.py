"""Funding rules: against the brute-force reference (tests/support/kinds.py) for any ticks,
rules and batching, and case by case: once per symbol, rule and funding period (again at
the next one), the threshold at its boundary, late ticks, and restart recovery."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from common.rule_model import Rule, SymbolOverride
from common.schemas import Tick
from detector.engine import DetectionEngine
from tests.support.kinds import (
    fired,
    funding_rules,
    in_batches,
    mark,
    reference_funding,
    streams,
)

RULE = Rule(name="extreme", kind="funding", min_funding_rate_pct=0.1)
HOUR = 3_600


def times(ticks: list[Tick], rule: Rule = RULE) -> list[tuple[int, int | None]]:
    return [(a.event_time_ms, a.next_funding_ms) for a in DetectionEngine(rule).process(ticks)]


@settings(max_examples=200, deadline=None)
@given(ticks=streams(), rules=st.tuples(funding_rules("f0"), funding_rules("f1")).map(list)
       | funding_rules().map(lambda r: [r]))
def test_the_engine_matches_the_reference(ticks: list[Tick], rules: list[Rule]) -> None:
    assert fired(DetectionEngine(rules).process(ticks)) == reference_funding(ticks, rules)


@settings(max_examples=100, deadline=None)
@given(ticks=streams(), rule=funding_rules(), cuts=st.lists(st.integers(0, 150), max_size=8))
def test_any_batching_gives_the_same_alerts(ticks: list[Tick], rule: Rule,
                                            cuts: list[int]) -> None:
    assert in_batches([rule], ticks, cuts) == DetectionEngine(rule).process(ticks)


def test_an_extreme_rate_fires_once_per_period_and_again_at_the_next() -> None:
    ticks = [mark("BTCUSDT", s, 0.0012, 8 * HOUR) for s in range(10)]
    ticks += [mark("BTCUSDT", 8 * HOUR + s, -0.0015, 16 * HOUR) for s in range(3)]
    alerts = DetectionEngine(RULE).process(ticks, detected_at_ms=5)
    assert [(a.event_time_ms, a.direction, a.next_funding_ms) for a in alerts] == [
        (0, "up", 8 * HOUR * 1000), (8 * HOUR * 1000, "down", 16 * HOUR * 1000)]
    first = alerts[0]
    assert first.id == f"BTCUSDT:funding.extreme:{8 * HOUR * 1000}"
    assert (first.kind, first.rule, first.level, first.window_s) == ("funding", "extreme", 1, 0)
    assert first.funding_rate_pct == first.change_pct == 0.12
    assert (first.threshold, first.threshold_pct) == (0.1, 0.1)
    assert first.price == first.base_price == 100.0
    assert (first.source, first.detected_at_ms, first.path) == ("mark_price", 5, None)


def test_the_threshold_fires_exactly_and_a_mild_rate_does_not() -> None:
    rule = Rule(name="r", kind="funding", min_funding_rate_pct=0.07)
    assert times([mark("A", 0, 0.0007, 60)], rule) == [(0, 60_000)]  # 0.06999… in floats
    assert times([mark("A", 0, 0.00069, 60)], rule) == []
    assert times([mark("A", 0, -0.0007, 60)], rule) == [(0, 60_000)]


def test_late_and_invalid_marks_change_nothing() -> None:
    ticks = [mark("A", 10, 0.0001, 60), mark("A", 5, 0.01, 60),  # older than the newest
             mark("A", 11, None, 60), mark("A", 11, 0.01, None),
             mark("A", 70, 0.01, 60),  # a next funding time already past
             mark("A", 11, float("nan"), 60), mark("A", 12, 0.01, 60, price=0.0),
             mark("A", 13, 0.01, 60)]
    assert times(ticks) == [(13_000, 60_000)]


def test_overrides_and_the_volume_floor_of_the_price_ticks_before() -> None:
    rule = Rule(name="r", kind="funding", min_funding_rate_pct=0.5, min_quote_volume=1e6,
                overrides=[SymbolOverride(pattern="1000*", min_funding_rate_pct=0.1,
                                          min_quote_volume=0)])
    ticks = [mark("1000PEPEUSDT", 0, 0.002, 60), mark("BTCUSDT", 0, 0.006, 60),
             Tick("BTCUSDT", 1.0, 1_000, "mini_ticker", 2e6), mark("BTCUSDT", 2, 0.006, 60)]
    alerts = DetectionEngine(rule).process(ticks)
    assert [(a.symbol, a.event_time_ms, a.threshold) for a in alerts] == [
        ("1000PEPEUSDT", 0, 0.1), ("BTCUSDT", 2_000, 0.5)]


def test_note_keeps_a_period_alerted_across_a_restart() -> None:
    [alert] = DetectionEngine(RULE).process([mark("A", 0, 0.002, 60)])
    restarted = DetectionEngine(RULE)
    restarted.note(alert)
    assert restarted.process([mark("A", 1, 0.002, 60)]) == []
    assert times([mark("A", 61, 0.002, 120)]) == [(61_000, 120_000)]
    assert [a.next_funding_ms for a in restarted.process([mark("A", 61, 0.002, 120)])] == [
        120_000]
    other = Rule(name="other", kind="funding", min_funding_rate_pct=0.1)
    renamed = DetectionEngine(other)
    renamed.note(alert)  # an alert of a rule not in force
    assert len(renamed.process([mark("A", 1, 0.002, 60)])) == 1
