"""The words of a notification per kind of alert (``notifier.alert_text``): the figures a
trader acts on, the lower-bound caveat of liquidations, the countdown to the next funding,
and which alert of a digest comes first."""

from __future__ import annotations

import pytest

from notifier import alert_text
from tests.support.notify import kind_alert, make_alert


def all_text(alert_facts: list[tuple[str, str]]) -> str:
    return "\n".join(f"{label}: {value}" for label, value in alert_facts)


def test_a_price_alert_reads_as_before() -> None:
    alert = make_alert("SOLUSDT", 3.1, price=23.45, base_price=22.74)
    assert alert_text.headline(alert) == "▲ SOLUSDT +3.10 % in 60 s"
    assert alert_text.short_line(alert) == "▲ SOLUSDT +3.10 %"
    assert alert_text.listing(alert) == "▲ SOLUSDT +3.10 % · 60 s"
    assert dict(alert_text.facts(alert))["Price"] == "23.45 (from 22.74)"


def test_a_liquidation_says_who_how_much_at_least_and_why_at_least() -> None:
    alert = kind_alert("liquidation", notional_usdt=2_468_000.0, liquidations=5)
    headline = alert_text.headline(alert)
    # Rounded down: "≥ $2.4M" stays true of 2.468 M, "$2.5M" would not be.
    assert headline == "▼ BTCUSDT longs liquidated: ≥ $2.4M in 60 s (5 orders)"
    facts = dict(alert_text.facts(alert))
    assert facts["Notional"] == "≥ $2,468,000 in 5 orders"
    assert "at most one order per symbol per second" in facts["Lower bound"]
    assert facts["Threshold"] == "$1,000,000"
    shorts = kind_alert("liquidation", direction="up", liquidations=1,
                        notional_usdt=1_000_000.0)
    assert alert_text.headline(shorts) == ("▲ BTCUSDT shorts liquidated: ≥ $1.0M in 60 s "
                                           "(1 order)")
    assert alert_text.short_line(shorts) == "▲ BTCUSDT shorts liquidated ≥ $1.0M in 60 s"


def test_a_digest_with_a_liquidation_carries_the_caveat_once() -> None:
    alerts = [kind_alert("liquidation"), kind_alert("liquidation", symbol="ETHUSDT"),
              make_alert()]
    notes = alert_text.digest_notes(alerts)
    assert len(notes) == 1
    assert "lower bound" in notes[0]
    assert "one liquidation per symbol per second" in notes[0]
    assert alert_text.digest_notes([make_alert(), kind_alert("funding")]) == []


@pytest.mark.parametrize(("rate", "direction", "said"), [
    (0.21, "up", "▲ BTCUSDT funding +0.2100 % (longs pay)"),
    (-0.0375, "down", "▼ BTCUSDT funding −0.0375 % (shorts pay)")])
def test_a_funding_alert_gives_the_rate_who_pays_and_the_time_to_the_next_funding(
        rate: float, direction: str, said: str) -> None:
    alert = kind_alert("funding", funding_rate_pct=rate, direction=direction)
    assert alert_text.headline(alert) == f"{said}, next funding in 3 h 12 min"
    facts = dict(alert_text.facts(alert))
    assert facts["Funding rate"] == said.split(" funding ")[1].split(" (")[0]
    assert facts["Threshold"] == "|rate| ≥ 0.1000 %"
    assert facts["Next funding"].startswith("in 3 h 12 min (")
    assert "Window" not in facts  # a funding rule has none


@pytest.mark.parametrize(("ms", "text"), [
    (0, "0 s"), (-5_000, "0 s"), (45_999, "45 s"), (60_000, "1 min"), (3_599_999, "59 min"),
    (3_600_000, "1 h"), (3 * 3_600_000 + 12 * 60_000 + 59_999, "3 h 12 min")])
def test_the_countdown_is_rounded_down(ms: int, text: str) -> None:
    assert alert_text.countdown(ms) == text


def test_a_volume_alert_gives_the_volume_and_its_ratio_to_the_baseline() -> None:
    alert = kind_alert("volume", volume_usdt=5_100_000.0, baseline_volume_usdt=698_630.0,
                       baseline_s=3600)
    assert alert_text.headline(alert) == ("▲ BTCUSDT volume $5.1M in 60 s, 7.3× its mean per "
                                          "60 s over the last 1 h")
    facts = dict(alert_text.facts(alert))
    assert facts["Volume"] == "$5,100,000 in 60 s"
    assert facts["Baseline"] == "$698,630 per 60 s (mean over the last 1 h)"
    written_before_baseline_s = kind_alert("volume", volume_usdt=5_100_000.0,
                                           baseline_volume_usdt=698_630.0, baseline_s=None)
    assert alert_text.headline(written_before_baseline_s).endswith("7.3× its mean per 60 s")
    assert facts["Ratio"] == "7.3× (threshold 5×)"
    silent = kind_alert("volume", baseline_volume_usdt=0.0)
    assert alert_text.headline(silent).endswith("$5.1M in 60 s, none in its baseline")


def test_a_malformed_alert_still_gets_its_message() -> None:
    for kind in ("liquidation", "funding", "volume"):
        alert = kind_alert(kind, notional_usdt=None, liquidations=None, funding_rate_pct=None,
                           next_funding_ms=None, volume_usdt=None, baseline_volume_usdt=None,
                           threshold=None, id=f"BTCUSDT:{kind}.x:1")
        assert "?" in alert_text.headline(alert) + all_text(alert_text.facts(alert))
        assert alert_text.significance(alert) == 1.0


def test_digests_put_the_alert_furthest_over_its_threshold_first() -> None:
    price = make_alert(change_pct=-5.0, threshold_pct=2.0)  # 2.5× its threshold
    liquidation = kind_alert("liquidation", notional_usdt=3_000_000.0)  # 3×
    funding = kind_alert("funding", funding_rate_pct=-0.15)  # 1.5×
    volume = kind_alert("volume", volume_usdt=4_000_000.0,
                        baseline_volume_usdt=200_000.0)  # 20× the mean, 4× its factor of 5
    dead = kind_alert("volume", baseline_volume_usdt=0.0)  # no ratio: just at its threshold
    ranked = alert_text.by_significance([dead, funding, price, liquidation, volume])
    assert ranked == [volume, liquidation, price, funding, dead]
    assert alert_text.significance(volume) == pytest.approx(4.0)
    assert alert_text.significance(funding) == pytest.approx(1.5)
