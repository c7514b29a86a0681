"""Rules of all four kinds in one ``DetectionEngine``: each kind reads only its ticks, the
output is price, liquidation, funding, volume, batching changes nothing within a kind, and
a restart (alerts noted, history rebuilt) goes on exactly as the run it replaces."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from common.rule_model import Rule
from common.schemas import PRICE, Alert, Tick
from detector.engine import DetectionEngine
from tests.support.kinds import (
    by_kind,
    fired,
    forced,
    funding_rules,
    in_batches,
    liquidation_rules,
    mark,
    reference,
    streams,
    trade,
    volume_rules,
)

PRICE_RULE = Rule(name="move", window_s=10, threshold_up_pct=0.5, threshold_down_pct=0.5,
                  cooldown_s=10, escalation_step_pct=0.5)


@st.composite
def four_kinds(draw: st.DrawFn) -> list[Rule]:
    return [PRICE_RULE, draw(liquidation_rules()), draw(funding_rules()), draw(volume_rules())]


@settings(max_examples=200, deadline=None)
@given(ticks=streams(), rules=four_kinds())
def test_each_kind_matches_its_reference_in_the_kind_order(ticks: list[Tick],
                                                           rules: list[Rule]) -> None:
    alerts = DetectionEngine(rules).process(ticks)
    price = [a for a in alerts if a.kind == "price"]
    assert alerts[:len(price)] == price  # price first
    only_prices = [t for t in ticks if t.kind == PRICE]
    assert price == DetectionEngine(PRICE_RULE).process(only_prices)
    assert fired(alerts[len(price):]) == reference(ticks, rules)


@settings(max_examples=100, deadline=None)
@given(ticks=streams(), rules=four_kinds(), cuts=st.lists(st.integers(0, 150), max_size=8))
def test_any_batching_gives_each_kind_the_same_alerts(ticks: list[Tick], rules: list[Rule],
                                                      cuts: list[int]) -> None:
    assert by_kind(in_batches(rules, ticks, cuts)) == by_kind(
        DetectionEngine(rules).process(ticks))


@settings(max_examples=100, deadline=None)
@given(ticks=streams(), rules=four_kinds(), cut=st.integers(0, 150))
def test_a_restart_from_the_alerts_and_the_history_goes_on_as_the_run_it_replaces(
        ticks: list[Tick], rules: list[Rule], cut: int) -> None:
    """What a restarted detector does: note the alerts on the stream, rebuild the windows
    from the history, then process what comes next: nothing repeated, nothing lost."""
    running = DetectionEngine(rules)
    published = running.process(ticks[:cut])
    restarted = DetectionEngine(rules)
    for alert in published:
        restarted.note(alert)
    restarted.rebuild(ticks[:cut])
    assert restarted.process(ticks[cut:]) == running.process(ticks[cut:])


def mixed() -> list[Tick]:
    return [trade("A", 0, 100.0, 1.0), forced("A", 0, 100.0, 20.0, "SELL"),
            mark("A", 0, 0.005, 60), trade("A", 1, 102.0, 1.0)]


ALL = [PRICE_RULE,
       Rule(name="liq", kind="liquidation", min_notional_usdt=1_000),
       Rule(name="fund", kind="funding", min_funding_rate_pct=0.1),
       Rule(name="vol", kind="volume", window_s=1, baseline_s=2, volume_factor=1.0,
            min_window_volume_usdt=1, cooldown_s=0)]


def test_one_call_gives_price_then_liquidation_then_funding_then_volume() -> None:
    ticks = [trade("A", s, 100.0, 1.0) for s in range(3)]
    ticks += [mark("A", 3, 0.005, 60), forced("A", 3, 100.0, 20.0, "SELL"),
              trade("A", 3, 102.0, 5.0)]
    alerts = DetectionEngine(ALL).process(ticks)
    assert [a.kind for a in alerts] == ["price", "liquidation", "funding", "volume",
                                        "volume"]
    assert [a.id for a in alerts] == ["A:10:3000", "A:liquidation.liq:3000",
                                      "A:funding.fund:60000", "A:volume.vol:2000",
                                      "A:volume.vol:3000"]


def test_symbols_forget_and_history() -> None:
    engine = DetectionEngine(ALL)
    engine.process([*mixed(), forced("B", 0, 1.0, 1.0, "BUY"), mark("C", 0, 0.0, 60)])
    assert engine.symbols_tracked == 3
    assert engine.forget(lambda s: s in ("A", "B")) == 2
    assert engine.symbols_tracked == 1
    assert engine.history_s == 60  # the liquidation rule's default window
    assert DetectionEngine([*ALL[1:], Rule(name="v2", kind="volume", window_s=60,
                                           baseline_s=3_600, volume_factor=5.0,
                                           min_window_volume_usdt=1)]).history_s == 3_660
    assert DetectionEngine(ALL[2]).history_s == 0  # funding keeps no window


def test_a_kind_dropped_from_the_rules_stops_and_the_others_keep_their_state() -> None:
    engine = DetectionEngine(ALL)
    engine.process([trade("A", 0, 100.0, 1.0), forced("A", 0, 100.0, 5.0, "SELL")])
    engine.set_rules([PRICE_RULE, ALL[1]])
    alerts = engine.process([trade("A", 1, 101.0, 1.0), forced("A", 1, 100.0, 5.0, "SELL"),
                             mark("A", 1, 0.01, 60)])
    assert [(a.kind, a.base_price) for a in alerts] == [("price", 100.0),
                                                        ("liquidation", 100.0)]
    assert engine.rule_for_window(10) == PRICE_RULE
    assert engine.rule_for_window(60) is None  # the liquidation rule's window: not a price


def test_note_of_an_alert_written_before_kinds_is_a_price_alert() -> None:
    engine = DetectionEngine(PRICE_RULE)
    old = Alert(id="A:10:5000", symbol="A", direction="up", change_pct=1.0, price=101.0,
                base_price=100.0, window_s=10, threshold_pct=0.5, event_time_ms=5_000,
                detected_at_ms=5_000, source="mini_ticker")
    engine.note(old)
    assert engine.process([trade("A", 0, 100.0), trade("A", 6, 101.2)]) == []
    assert [a.level for a in engine.process([trade("A", 7, 101.6)])] == [2]
