"""Liquidation rules: against the brute-force reference (tests/support/kinds.py) for any
ticks, rules and batching, and case by case: the per-side sum over (t − W, t], escalation
by the USDT step, cooldown, late ticks, the 24 h volume floor and restart recovery."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from common.rule_model import Rule, SymbolOverride
from common.schemas import Tick
from detector.engine import DetectionEngine
from tests.support.kinds import (
    fired,
    forced,
    in_batches,
    liquidation_rules,
    reference_liquidation,
    streams,
    trade,
)

RULE = Rule(name="cascade", kind="liquidation", window_s=60, cooldown_s=60,
            min_notional_usdt=1_000_000, escalation_step_usdt=500_000)


def run(ticks: list[Tick], rules: list[Rule] | Rule = RULE) -> list[tuple[object, ...]]:
    return [(a.direction, a.event_time_ms, a.notional_usdt, a.liquidations, a.level)
            for a in DetectionEngine(rules).process(ticks)]


@settings(max_examples=200, deadline=None)
@given(ticks=streams(), rules=st.tuples(liquidation_rules("liq0"), liquidation_rules("liq1"))
       .map(list) | liquidation_rules().map(lambda r: [r]))
def test_the_engine_matches_the_reference(ticks: list[Tick], rules: list[Rule]) -> None:
    assert fired(DetectionEngine(rules).process(ticks)) == reference_liquidation(ticks, rules)


@settings(max_examples=100, deadline=None)
@given(ticks=streams(), rule=liquidation_rules(),
       cuts=st.lists(st.integers(0, 150), max_size=8))
def test_any_batching_gives_the_same_alerts(ticks: list[Tick], rule: Rule,
                                            cuts: list[int]) -> None:
    assert in_batches([rule], ticks, cuts) == DetectionEngine(rule).process(ticks)


def test_a_side_fires_when_its_sum_within_the_window_reaches_the_threshold() -> None:
    ticks = [forced("BTCUSDT", 0, 50_000.0, 8.0, "SELL"),    # 400 k
             forced("BTCUSDT", 1, 50_000.0, 8.0, "BUY"),     # the other side: its own sum
             forced("BTCUSDT", 30, 49_000.0, 10.0, "SELL"),  # 890 k
             forced("BTCUSDT", 59, 48_000.0, 3.0, "SELL")]   # 1.034 M: fires
    [alert] = DetectionEngine(RULE).process(ticks, detected_at_ms=99)
    assert alert.id == "BTCUSDT:liquidation.cascade:59000"
    assert (alert.kind, alert.rule, alert.direction, alert.level) == (
        "liquidation", "cascade", "down", 1)
    assert (alert.notional_usdt, alert.liquidations) == (1_034_000.0, 3)
    assert (alert.price, alert.base_price) == (48_000.0, 50_000.0)
    assert alert.change_pct == -4.0
    assert (alert.threshold, alert.threshold_pct, alert.window_s) == (1_000_000.0, 0.0, 60)
    assert (alert.event_time_ms, alert.detected_at_ms, alert.source) == (
        59_000, 99, "force_order")
    assert alert.path == [(0, 50_000.0), (30_000, 49_000.0), (59_000, 48_000.0)]


def test_orders_at_or_before_t_minus_w_are_out_of_the_sum() -> None:
    ticks = [forced("A", 0, 100.0, 6_000.0, "BUY"), forced("A", 60, 100.0, 6_000.0, "BUY")]
    assert run(ticks) == []  # 600 k each: the first left the window exactly at 60
    ticks[1] = forced("A", 59.999, 100.0, 6_000.0, "BUY")
    assert run(ticks) == [("up", 59_999, 1_200_000.0, 2, 1)]


def test_escalation_by_the_step_inside_the_cooldown_and_only_on_the_same_side() -> None:
    ticks = [forced("A", 0, 100.0, 10_000.0, "SELL"),   # 1 M: level 1
             forced("A", 1, 100.0, 4_000.0, "SELL"),    # 1.4 M < 1.5 M: quiet
             forced("A", 2, 100.0, 20_000.0, "BUY"),    # the other side, in the cooldown
             forced("A", 3, 100.0, 1_000.0, "SELL"),    # 1.5 M: level 2
             forced("A", 4, 100.0, 5_000.0, "SELL")]    # 2.0 M: level 3
    assert run(ticks) == [("down", 0, 1e6, 1, 1), ("down", 3_000, 1.5e6, 3, 2),
                          ("down", 4_000, 2e6, 4, 3)]


def test_the_cooldown_restarts_with_every_alert_and_then_either_side_fires() -> None:
    rule = Rule(name="c", kind="liquidation", window_s=10, cooldown_s=30,
                min_notional_usdt=1_000)
    ticks = [forced("A", 0, 10.0, 100.0, "SELL"),     # fires, quiet until 30
             forced("A", 20, 10.0, 200.0, "SELL"),    # in the cooldown, no step: quiet
             forced("A", 30, 10.0, 100.0, "BUY"),     # 1 k BUY after the cooldown: fires
             forced("A", 31, 10.0, 300.0, "SELL")]    # 3 k SELL in the new cooldown: quiet
    assert run(ticks, rule) == [("down", 0, 1_000.0, 1, 1), ("up", 30_000, 1_000.0, 1, 1)]


def test_late_and_invalid_forced_orders_change_nothing() -> None:
    ticks = [forced("A", 10, 100.0, 5_000.0, "SELL"),
             forced("A", 5, 100.0, 9_000.0, "SELL"),    # older than the newest: ignored
             forced("A", 11, 100.0, None, "SELL"),
             forced("A", 11, 0.0, 9_000.0, "SELL"),
             forced("A", 11, 100.0, 9_000.0, None),
             forced("A", 11, 100.0, float("nan"), "SELL"),
             forced("A", 12, 100.0, 5_000.0, "SELL")]
    assert run(ticks) == [("down", 12_000, 1e6, 2, 1)]


def test_price_ticks_are_not_forced_orders() -> None:
    assert run([trade("A", 0, 100.0, 20_000.0), trade("A", 1, 100.0, 20_000.0)]) == []


def test_the_24h_volume_floor_is_the_last_price_tick_before_the_order() -> None:
    rule = Rule(name="floor", kind="liquidation", window_s=60, cooldown_s=0,
                min_notional_usdt=1_000, min_quote_volume=1e6)
    orders = [forced("A", 1, 10.0, 100.0, "SELL"), forced("A", 3, 10.0, 100.0, "SELL")]
    ticks = [orders[0], Tick("A", 10.0, 2_000, "mini_ticker", 2e6), orders[1]]
    assert [t for _, t, *_ in run(ticks, rule)] == [3_000]
    # The same in pieces: the order at 1 s never saw the volume that came after it.
    engine = DetectionEngine(rule)
    assert engine.process(ticks[:1]) == []
    assert [a.event_time_ms for a in engine.process(ticks[1:])] == [3_000]


def test_overrides_allow_and_deny() -> None:
    rule = Rule(name="o", kind="liquidation", window_s=60, min_notional_usdt=1_000,
                deny=["ETH*"], overrides=[SymbolOverride(pattern="1000*",
                                                         min_notional_usdt=100)])
    ticks = [forced(s, 0, 10.0, 50.0, "BUY") for s in ("BTCUSDT", "ETHUSDT", "1000PEPEUSDT")]
    alerts = DetectionEngine(rule).process(ticks)
    assert [(a.symbol, a.threshold) for a in alerts] == [("1000PEPEUSDT", 100.0)]


def test_note_restores_the_cooldown_and_lets_the_escalation_continue() -> None:
    first = DetectionEngine(RULE)
    [alert] = first.process([forced("A", 0, 100.0, 12_000.0, "SELL")])
    restarted = DetectionEngine(RULE)
    restarted.note(alert)
    ticks = [forced("A", 1, 100.0, 2_000.0, "SELL"),   # 1.4 M over the restart: quiet
             forced("A", 2, 100.0, 3_000.0, "SELL")]   # nothing replayed: 500 k alone, quiet
    assert restarted.process(ticks) == []
    restarted = DetectionEngine(RULE)
    restarted.note(alert)
    restarted.rebuild([forced("A", 0, 100.0, 12_000.0, "SELL")])
    assert [(a.level, a.notional_usdt) for a in restarted.process(ticks)] == [(2, 1.7e6)]
    # Without the note, the rebuilt window alone fires a level 1 again.
    fresh = DetectionEngine(RULE)
    fresh.rebuild([forced("A", 0, 100.0, 12_000.0, "SELL")])
    assert [a.level for a in fresh.process(ticks[:1])] == [1]
