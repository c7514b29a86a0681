"""Volume rules: against the brute-force reference (tests/support/kinds.py) for any ticks,
rules and batching, and case by case: V and B over whole seconds, the baseline that must be
covered, the absolute minimum for dead contracts, volumes from a ticker's 24 h figure,
cooldown without escalation, late ticks, rules changed live and restart recovery."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from common.rule_model import Rule
from common.schemas import PRICE, Tick
from detector.engine import DetectionEngine
from tests.support.kinds import (
    fired,
    in_batches,
    reference_volume,
    streams,
    trade,
    volume_rules,
)

# A minute's volume 5x its mean per minute over the hour before, and at least 1,000 USDT.
RULE = Rule(name="spike", kind="volume", window_s=60, baseline_s=3_600, volume_factor=5.0,
            min_window_volume_usdt=1_000, cooldown_s=300)
SMALL = Rule(name="small", kind="volume", window_s=2, baseline_s=10, volume_factor=3.0,
             min_window_volume_usdt=100, cooldown_s=5)


def steady(symbol: str = "A", seconds: int = 12, usdt: float = 100.0) -> list[Tick]:
    """One trade of ``usdt`` each second from 0."""
    return [trade(symbol, s, 100.0, usdt / 100.0) for s in range(seconds)]


@settings(max_examples=200, deadline=None)
@given(ticks=streams(kinds=(PRICE,)), rules=st.tuples(volume_rules("v0"), volume_rules("v1"))
       .map(list) | volume_rules().map(lambda r: [r]))
def test_the_engine_matches_the_reference(ticks: list[Tick], rules: list[Rule]) -> None:
    assert fired(DetectionEngine(rules).process(ticks)) == reference_volume(ticks, rules)


@settings(max_examples=100, deadline=None)
@given(ticks=streams(kinds=(PRICE,)), rule=volume_rules(),
       cuts=st.lists(st.integers(0, 150), max_size=8))
def test_any_batching_gives_the_same_alerts(ticks: list[Tick], rule: Rule,
                                            cuts: list[int]) -> None:
    assert in_batches([rule], ticks, cuts) == DetectionEngine(rule).process(ticks)


def test_a_spike_over_the_baseline_fires_with_its_figures() -> None:
    ticks = [*steady(), trade("A", 12.5, 101.0, 10.0)]  # 1,010 USDT in second 12
    [alert] = DetectionEngine(SMALL).process(ticks, detected_at_ms=7)
    assert alert.id == "A:volume.small:12500"
    assert (alert.kind, alert.rule, alert.level, alert.window_s) == ("volume", "small", 1, 2)
    # V: seconds 11 and 12; B: seconds 1..10, 1,000 USDT, times 2 / 10.
    assert (alert.volume_usdt, alert.baseline_volume_usdt) == (1_110.0, 200.0)
    assert (alert.threshold, alert.threshold_pct, alert.baseline_s) == (3.0, 0.0, 10)
    assert (alert.direction, alert.price, alert.base_price, alert.change_pct) == (
        "up", 101.0, 100.0, 1.0)
    assert (alert.event_time_ms, alert.detected_at_ms, alert.source) == (
        12_500, 7, "agg_trade")


def test_below_k_times_the_baseline_stays_quiet() -> None:
    # 3 x 200 = 600 needed; 100 + 480 = 580 is not enough, 100 + 500 = 600 is (exactly k x B).
    assert DetectionEngine(SMALL).process([*steady(), trade("A", 12, 100.0, 4.8)]) == []
    assert len(DetectionEngine(SMALL).process([*steady(), trade("A", 12, 100.0, 5.0)])) == 1


def test_nothing_fires_before_the_baseline_is_covered() -> None:
    # The first tick must be in second s - W - L + 1 = 12 - 12 + 1 = 1 or earlier.
    late_start = [trade("A", s, 100.0, 1.0) for s in range(2, 12)]
    assert DetectionEngine(SMALL).process([*late_start, trade("A", 12, 100.0, 50.0)]) == []
    on_time = [trade("A", s, 100.0, 1.0) for s in range(1, 12)]
    assert len(DetectionEngine(SMALL).process([*on_time, trade("A", 12, 100.0, 50.0)])) == 1


def test_a_dead_contract_does_not_fire_below_the_minimum() -> None:
    # Nothing traded for the baseline, then 99 USDT: infinitely more than nothing, not 100.
    ticks = [trade("A", 0, 1.0, 0.0), trade("A", 12, 1.0, 99.0)]
    assert DetectionEngine(SMALL).process(ticks) == []
    ticks = [trade("A", 0, 1.0, 0.0), trade("A", 12, 1.0, 100.0)]
    [alert] = DetectionEngine(SMALL).process(ticks)
    assert (alert.volume_usdt, alert.baseline_volume_usdt) == (100.0, 0.0)


def test_the_24h_volume_floor_applies_too() -> None:
    rule = Rule(name="f", kind="volume", window_s=2, baseline_s=10, volume_factor=3.0,
                min_window_volume_usdt=100, min_quote_volume=1e6)
    spike = trade("A", 12, 100.0, 50.0)
    assert DetectionEngine(rule).process([*steady(), spike]) == []
    known = [Tick("A", 100.0, 0, "mini_ticker", 5e6), *steady()[1:], spike]
    assert len(DetectionEngine(rule).process(known)) == 1


def test_a_tickers_volume_is_the_increase_of_its_24h_figure() -> None:
    # q grows by 100 a second, then by 2,000; a fall counts as nothing.
    ticks = [Tick("A", 100.0, s * 1000, "mini_ticker", 1e6 + 100.0 * s) for s in range(12)]
    ticks.append(Tick("A", 99.0, 12_000, "mini_ticker", 1e6 + 1_100 + 2_000))
    [alert] = DetectionEngine(SMALL).process(ticks)
    # V: second 11 (100) + second 12 (2,000); B: seconds 1..10 (1,000) x 2 / 10.
    assert (alert.volume_usdt, alert.baseline_volume_usdt, alert.direction) == (
        2_100.0, 200.0, "down")
    fallen = [*ticks[:12], Tick("A", 99.0, 12_000, "mini_ticker", 5e5)]
    assert DetectionEngine(SMALL).process(fallen) == []


def test_cooldown_without_escalation() -> None:
    ticks = [*steady(), trade("A", 12, 100.0, 50.0), trade("A", 13, 100.0, 500.0),
             trade("A", 17, 100.0, 500.0)]  # the cooldown of 5 s ended at 17
    assert [(a.event_time_ms, a.level) for a in DetectionEngine(SMALL).process(ticks)] == [
        (12_000, 1), (17_000, 1)]


def test_late_ticks_and_other_kinds_change_nothing() -> None:
    ticks = [*steady(), trade("A", 3, 100.0, 1_000.0), trade("A", 12, 100.0, 5.0)]
    assert len(DetectionEngine(SMALL).process(ticks)) == 1
    assert DetectionEngine(SMALL).process(
        [*steady(), Tick("A", 100.0, 12_000, "force_order", None, 1, 500.0, "BUY")]) == []


def test_an_hour_of_baseline_and_a_minute_spike() -> None:
    ticks = [trade("BTCUSDT", s, 60_000.0, 0.01) for s in range(3_660)]  # 600 USDT/s
    spike = [trade("BTCUSDT", 3_660 + s, 60_000.0, 0.06) for s in range(60)]  # 3,600/s
    alerts = DetectionEngine(RULE).process(ticks + spike)
    assert alerts, "6x the hourly mean per minute"
    first = alerts[0]
    # B = 36,000 per minute; 5 x B = 180,000 reached after 600 x k seconds of the spike.
    assert first.baseline_volume_usdt is not None
    assert first.volume_usdt is not None
    assert first.volume_usdt >= 5 * first.baseline_volume_usdt
    assert len(alerts) == 1  # the 300 s cooldown


def test_a_rule_changed_live_counts_its_baseline_covered_only_as_far_as_kept() -> None:
    engine = DetectionEngine(SMALL)
    assert engine.process(steady(seconds=30)) == []
    wider = Rule(name="small", kind="volume", window_s=3, baseline_s=20, volume_factor=3.0,
                 min_window_volume_usdt=100, cooldown_s=5)
    engine.set_rules(wider)
    # The old ring held 12 seconds (18..29): 23 are needed, so not covered at 30 ...
    assert engine.process([trade("A", 30, 100.0, 50.0)]) == []
    # ... and covered from second 18 + 23 - 1 = 40 on, with the figures of a fresh engine.
    later = [trade("A", s, 100.0, 1.0) for s in range(31, 40)] + [trade("A", 40, 100.0, 50.0)]
    [alert] = engine.process(later)
    fresh = DetectionEngine(wider)
    fresh.rebuild([*steady(seconds=30), trade("A", 30, 100.0, 50.0), *later[:-1]])
    [expected] = fresh.process(later[-1:])
    assert (alert.volume_usdt, alert.baseline_volume_usdt) == (
        expected.volume_usdt, expected.baseline_volume_usdt)


def test_note_restores_the_cooldown() -> None:
    [alert] = DetectionEngine(SMALL).process([*steady(), trade("A", 12, 100.0, 50.0)])
    restarted = DetectionEngine(SMALL)
    restarted.note(alert)
    restarted.rebuild([*steady(), trade("A", 12, 100.0, 50.0)])
    assert restarted.process([trade("A", 13, 100.0, 500.0)]) == []
    assert len(restarted.process([trade("A", 17, 100.0, 500.0)])) == 1
