"""``binance-alerter backtest --feed``: every trade (``agg_trade``) or what the one-second
mini ticker would have shown (``mini_ticker``), on scripted recordings and on the
repository's BTCUSDT trade recording, with a volume rule checked against figures computed
here from the frames."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from common.schemas import FUNDING, Tick
from tests.support.recordings import HFT_20K, source_frames
from tools.backtest_feeds import MiniTickerView
from tools.cli import main


def trade_frame(time_ms: int, price: float, quantity: float = 1.0) -> str:
    data = {"e": "trade", "E": time_ms, "T": time_ms, "s": "BTCUSDT", "t": time_ms,
            "p": f"{price}", "q": f"{quantity}", "X": "MARKET", "m": False}
    return json.dumps({"stream": "btcusdt@trade", "data": data})


def recording(path: Path, trades: list[tuple[int, float]]) -> Path:
    """An hftbacktest-style recording (``<receive ns> <frame>`` lines, gzip)."""
    with gzip.open(path, "wt") as out:
        for time_ms, price in trades:
            out.write(f"{time_ms * 1_000_000} {trade_frame(time_ms, price)}\n")
    return path


def backtest(capsys: pytest.CaptureFixture[str], *args: str | Path) -> list[dict[str, Any]]:
    code = main(["backtest", *map(str, args), "--format", "jsonl"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def calm(until_s: int) -> list[tuple[int, float]]:
    return [(s * 1000 + 100, 100.0) for s in range(until_s)]


def test_the_mini_ticker_view_shows_the_last_trade_of_each_second() -> None:
    view = MiniTickerView()
    mark = Tick("BTCUSDT", 1.0, 1_700, "mark_price", None, FUNDING, funding_rate=0.001,
                next_funding_ms=9_000)
    out = view.feed([Tick("BTCUSDT", 100.0, 1_100, "agg_trade", None, 0, 2.0),
                     Tick("ETHUSDT", 10.0, 1_200, "agg_trade", None, 0, 1.0),
                     Tick("BTCUSDT", 101.0, 1_900, "agg_trade", None, 0, 1.0), mark,
                     Tick("BTCUSDT", 102.0, 2_050, "agg_trade", None, 0, 1.0)])
    assert out == [mark, Tick("BTCUSDT", 101.0, 1_999, "mini_ticker", 301.0),
                   Tick("ETHUSDT", 10.0, 1_999, "mini_ticker", 10.0)]
    assert view.finish() == [Tick("BTCUSDT", 102.0, 2_999, "mini_ticker", 403.0)]


def test_a_jump_and_back_inside_a_second_is_seen_by_agg_trade_only(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = recording(tmp_path / "spike.gz",
                     [*calm(20), (20_200, 103.0), (20_500, 100.0), (21_100, 100.0)])
    rule = ["--window", "10", "--up", "2", "--down", "2"]
    [alert] = backtest(capsys, path, *rule)
    assert (alert["event_time_ms"], alert["price"], alert["base_price"]) == (
        20_200, 103.0, 100.0)
    assert alert["source"] == "trade"
    assert backtest(capsys, path, *rule, "--feed", "mini_ticker") == []


def test_a_jump_that_holds_alerts_later_in_the_mini_ticker_view(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = recording(tmp_path / "jump.gz", [*calm(20), (20_200, 103.0), (21_100, 103.0)])
    rule = ["--window", "10", "--up", "2", "--down", "2"]
    [by_trade] = backtest(capsys, path, *rule, "--feed", "agg_trade")
    [by_ticker] = backtest(capsys, path, *rule, "--feed", "mini_ticker")
    assert by_trade["event_time_ms"] == 20_200
    assert (by_ticker["event_time_ms"], by_ticker["source"]) == (20_999, "mini_ticker")
    assert by_ticker["event_time_ms"] - by_trade["event_time_ms"] == 799


# --- a volume rule on the BTCUSDT recording, figures computed from the frames -----------

W, L, FACTOR, MINIMUM, COOLDOWN = 2, 20, 3.0, 100_000.0, 10


def recorded_trades() -> list[tuple[int, float, float]]:
    """(time, price, quote volume) of every market trade, read without project code."""
    trades = []
    for frame in source_frames(HFT_20K):
        event = json.loads(frame)["data"]
        if event.get("e") == "trade" and event.get("X", "MARKET") == "MARKET":
            price = float(event["p"])
            trades.append((event["E"], price, price * float(event["q"])))
    return trades


def expected_volume_alerts(ticks: list[tuple[int, float, float]]
                           ) -> list[tuple[int, float, float]]:
    """docs/architecture.md#rule-kinds, volume, by brute force: (time, V, B) of each alert."""
    seen: list[tuple[int, float]] = []
    quiet_until = -1
    out = []
    for time_ms, _, volume in ticks:
        seen.append((time_ms, volume))
        s = time_ms // 1000
        v = sum(q for t, q in seen if s - W + 1 <= t // 1000 <= s)
        b = sum(q for t, q in seen if s - W - L + 1 <= t // 1000 <= s - W) * W / L
        if (seen[0][0] // 1000 <= s - W - L + 1 and v >= MINIMUM and v >= FACTOR * b
                and time_ms >= quiet_until):
            quiet_until = time_ms + COOLDOWN * 1000
            out.append((time_ms, v, b))
    return out


def volume_rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"rules": [
        {"name": "spike", "kind": "volume", "window_s": W, "baseline_s": L,
         "volume_factor": FACTOR, "min_window_volume_usdt": MINIMUM, "cooldown_s": COOLDOWN}]}))
    return path


def figures(alerts: list[dict[str, Any]]) -> list[tuple[int, float, float]]:
    return [(a["event_time_ms"], a["volume_usdt"], a["baseline_volume_usdt"]) for a in alerts]


def test_a_volume_rule_fires_on_the_recording_with_the_figures_of_its_trades(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = expected_volume_alerts(recorded_trades())
    assert len(expected) >= 2, "the rule must fire on this recording for the test to mean much"
    alerts = backtest(capsys, HFT_20K, "--rules", volume_rules(tmp_path))
    assert [a["event_time_ms"] for a in alerts] == [t for t, _, _ in expected]
    for (_, volume, baseline), alert in zip(expected, alerts, strict=True):
        assert alert["volume_usdt"] == pytest.approx(volume, abs=1e-4)
        assert alert["baseline_volume_usdt"] == pytest.approx(baseline, abs=1e-4)
        assert alert["volume_usdt"] >= FACTOR * alert["baseline_volume_usdt"]
        assert (alert["kind"], alert["threshold"], alert["window_s"]) == ("volume", FACTOR, W)
        assert alert["id"] == f"BTCUSDT:volume.spike:{alert['event_time_ms']}"


def test_the_mini_ticker_view_reads_the_same_volume_per_second(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One tick per second at its end, whose volume is that second's trades (the first
    second's is unknown: a ticker's first 24 h figure is no increase)."""
    trades = recorded_trades()
    per_second: dict[int, tuple[float, float]] = {}
    for time_ms, price, volume in trades:
        second = time_ms // 1000
        per_second[second] = (price, per_second.get(second, (0.0, 0.0))[1] + volume)
    first = min(per_second)
    seconds = [(s * 1000 + 999, price, 0.0 if s == first else volume)
               for s, (price, volume) in sorted(per_second.items())]
    expected = expected_volume_alerts(seconds)
    assert expected
    alerts = backtest(capsys, HFT_20K, "--rules", volume_rules(tmp_path), "--feed",
                      "mini_ticker")
    assert [a["event_time_ms"] for a in alerts] == [t for t, _, _ in expected]
    for (_, volume, baseline), alert in zip(expected, alerts, strict=True):
        assert alert["volume_usdt"] == pytest.approx(volume, abs=1e-3)
        assert alert["baseline_volume_usdt"] == pytest.approx(baseline, abs=1e-3)
        assert alert["source"] == "mini_ticker"


def test_the_table_shows_the_kind_and_its_figures(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backtest", str(HFT_20K), "--rules", str(volume_rules(tmp_path))]) == 0
    out = capsys.readouterr().out
    header, row = out.splitlines()[:2]
    assert "kind" in header.split()
    assert "figures" in header.split()
    cells = row.split()
    assert cells[-2:] == ["spike", "trade"]
    assert "volume" in cells
    assert "USDT" in row
    assert ">= 3 x" in row
    assert "rule spike: volume, window 2 s at least 3 x its mean over 20 s" in out
