"""``binance-alerter backtest`` against an independent brute-force reference of the rule,
on the real recordings in tests/data, and its output formats and errors."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest

from common.schemas import Alert
from tests.support.recordings import (
    CRYPTOFEED,
    HFT_3K,
    HFT_20K,
    RefAlert,
    cli,
    reference_alerts,
    reference_ticks,
)
from tools.cli import main


def backtest_jsonl(capsys: pytest.CaptureFixture[str], *args: str | Path
                   ) -> tuple[list[dict[str, Any]], str]:
    code = main(["backtest", *map(str, args), "--format", "jsonl"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()], err


def as_ref(alerts: list[dict[str, Any]]) -> list[RefAlert]:
    return [RefAlert(a["symbol"], a["direction"], a["event_time_ms"], a["price"],
                     a["base_price"]) for a in alerts]


@pytest.mark.parametrize(("window", "up", "down", "cooldown"), [
    (60, 0.03, 0.03, 60),   # the default shape of the rule, cooldown = window
    (10, 0.03, 0.03, 10),
    (30, 0.02, 0.04, 30),   # asymmetric thresholds
    (10, 0.02, 0.02, 0),    # no cooldown: every tick past the threshold fires
    (5, 0.015, 0.015, 20),  # cooldown longer than the window
])
def test_btcusdt_matches_the_reference(capsys: pytest.CaptureFixture[str], window: int,
                                       up: float, down: float, cooldown: int) -> None:
    expected = reference_alerts(reference_ticks([HFT_20K]), window, up, down, cooldown)
    assert expected, "the thresholds must fire on this recording for the test to mean much"
    alerts, _ = backtest_jsonl(capsys, HFT_20K, "--window", str(window), "--up", str(up),
                               "--down", str(down), "--cooldown", str(cooldown))
    assert as_ref(alerts) == expected
    for alert, ref in zip(alerts, expected, strict=True):
        assert alert["id"] == f"BTCUSDT:{window}:{ref.time_ms}"
        assert alert["detected_at_ms"] == alert["event_time_ms"]
        assert alert["window_s"] == window
        assert alert["threshold_pct"] == (up if alert["direction"] == "up" else down)
        assert alert["change_pct"] == pytest.approx((ref.price - ref.base) / ref.base * 100)
        assert alert["source"] == "trade"


def test_several_symbols_and_files_in_the_given_order(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    """cryptofeed's four symbols (aggTrade), then the BTCUSDT slice: one engine throughout."""
    expected = reference_alerts(reference_ticks([CRYPTOFEED, HFT_3K]), 5, 0.01, 0.01, 5)
    assert len({a.symbol for a in expected}) >= 3
    alerts, _ = backtest_jsonl(capsys, CRYPTOFEED, HFT_3K, "--window", "5", "--up", "0.01",
                               "--down", "0.01")
    assert as_ref(alerts) == expected
    assert {a["source"] for a in alerts} == {"agg_trade", "trade"}


def test_default_rule_is_quiet_on_a_calm_market(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backtest", str(HFT_20K)]) == 0
    out, _ = capsys.readouterr()
    assert out.startswith("no alerts\n")
    assert "rule default: window 60 s, up 2 %, down 2 %, cooldown 60 s" in out


def test_jsonl_lines_are_exactly_alerts(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["backtest", str(HFT_20K), "--window", "10", "--up", "0.03", "--down",
                 "0.03", "--format", "jsonl"])
    out, err = capsys.readouterr()
    assert code == 0
    lines = out.splitlines()
    assert lines
    for line in lines:
        alert = msgspec.json.decode(line, type=Alert)
        assert set(json.loads(line)) == set(Alert.__struct_fields__)
        assert alert.path is not None
        assert 2 <= len(alert.path) <= 60
        assert tuple(alert.path[-1]) == (alert.event_time_ms, alert.price)
    assert "alerts by symbol:" in err
    assert "BTCUSDT" in err


def test_the_three_formats_agree(capsys: pytest.CaptureFixture[str]) -> None:
    args = [str(HFT_20K), "--window", "10", "--up", "0.03", "--down", "0.03"]
    outputs = {}
    for fmt in ("table", "jsonl", "csv"):
        assert main(["backtest", *args, "--format", fmt]) == 0
        outputs[fmt] = capsys.readouterr()
    jsonl = [json.loads(line) for line in outputs["jsonl"].out.splitlines()]
    rows = list(csv.DictReader(io.StringIO(outputs["csv"].out)))
    assert len(rows) == len(jsonl) == 4
    for row, alert in zip(rows, jsonl, strict=True):
        assert set(row) == set(alert) - {"path"}
        for key, value in alert.items():
            if key == "path":
                continue
            if isinstance(value, float):
                assert float(row[key]) == value  # exact: CSV keeps the shortest round trip
            else:
                assert row[key] == ("" if value is None else str(value))
    assert "alerts by hour (UTC):" in outputs["csv"].err

    table = outputs["table"].out.splitlines()
    assert table[0].split()[:4] == ["event", "time", "(UTC)", "symbol"]
    rows_text = table[1:1 + len(jsonl)]
    for line, alert in zip(rows_text, jsonl, strict=True):
        cells = line.split()
        assert cells[2:6] == [alert["symbol"], alert["direction"], str(alert["level"]),
                              f"{alert['change_pct']:+.4f}"]
        assert float(cells[6]) == alert["price"]
        assert float(cells[7]) == alert["base_price"]
        assert cells[-2:] == [alert["rule"], alert["source"]]
    summary = outputs["table"].out[outputs["table"].out.index("backtest: "):]
    assert "4 alerts" in summary
    symbol_line = next(line for line in summary.splitlines() if line.strip().startswith("BTC"))
    assert symbol_line.split() == ["BTCUSDT", "2", "2", "4"]
    hour_line = next(line for line in summary.splitlines() if "2024-08-08 23:00" in line)
    assert hour_line.split()[-3:] == ["2", "2", "4"]


def test_rules_file_is_the_same_as_the_options(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": [{"window_s": 10, "threshold_up_pct": 0.03,
                                            "threshold_down_pct": 0.03, "cooldown_s": 10}]}))
    by_file, _ = backtest_jsonl(capsys, HFT_20K, "--rules", rules)
    by_options, _ = backtest_jsonl(capsys, HFT_20K, "--window", "10", "--up", "0.03",
                                   "--down", "0.03")
    assert by_file == by_options
    assert by_file


def test_several_rules_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each rule of a rules file fires as it would alone: one engine, independent rules."""
    specs = [("fast", 10, 0.03, 10), ("slow", 60, 0.03, 60), ("mid", 30, 0.02, 30)]
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": [
        {"name": name, "window_s": window, "threshold_up_pct": pct, "threshold_down_pct": pct,
         "cooldown_s": cooldown} for name, window, pct, cooldown in specs]}))
    alerts, err = backtest_jsonl(capsys, HFT_20K, "--rules", rules)
    ticks = reference_ticks([HFT_20K])
    for name, window, pct, cooldown in specs:
        fired = [a for a in alerts if a["rule"] == name]
        assert as_ref(fired) == reference_alerts(ticks, window, pct, pct, cooldown)
        assert fired
        assert {a["window_s"] for a in fired} == {window}
        assert f"rule {name}: window {window} s" in err
    times = [a["event_time_ms"] for a in alerts]
    assert times == sorted(times)


def test_progress_bar_on_request(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backtest", str(HFT_20K), "--progress", "--format", "jsonl"]) == 0
    _, err = capsys.readouterr()
    assert "\r[" in err
    assert "MB" in err
    assert "\x1b[K" in err


@pytest.mark.parametrize(("args", "message"), [
    (["missing.gz"], "no such file: 'missing.gz'"),
    (["{folder}"], "argument FILE: a folder, not a file: '{folder}'"),
    (["{hft}", "--window", "abc"], "argument --window: an integer is needed, not 'abc'"),
    (["{hft}", "--window", "0"], "argument --window: must be >= 1, not '0'"),
    (["{hft}", "--up", "-1"], "argument --up: must be > 0, not '-1'"),
    (["{hft}", "--down", "nan"], "argument --down: must be > 0, not 'nan'"),
    (["{hft}", "--cooldown", "1.5"], "argument --cooldown: an integer is needed"),
    (["{hft}", "--format", "xml"], "argument --format: invalid choice: 'xml'"),
    (["{hft}", "--rules", "{rules}", "--window", "5"], "--rules replaces --window"),
    (["{hft}", "--rules", "{bad_rules}"], "argument --rules: {bad_rules}: rules[0].window_s"),
    (["{hft}", "--rules", "{folder}"], "argument --rules: a folder, not a file: '{folder}'"),
    (["{text}"], "not a recording this tool knows"),
])
def test_cli_errors_exit_2_with_a_message(tmp_path: Path, args: list[str], message: str
                                         ) -> None:
    """Real process, so the exit code is the one a shell sees; a usage shown is backtest's."""
    (tmp_path / "rules.json").write_text('{"rules": [{"window_s": 5}]}')
    (tmp_path / "bad.json").write_text('{"rules": [{"window_s": "five"}]}')
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "recordings").mkdir()
    names = {"hft": str(HFT_3K), "rules": str(tmp_path / "rules.json"),
             "bad_rules": str(tmp_path / "bad.json"), "text": str(tmp_path / "notes.txt"),
             "folder": str(tmp_path / "recordings")}
    argv = cli("backtest", *(a.format(**names) for a in args))
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message.format(**names) in result.stderr
    assert result.stdout == ""
    if "usage:" in result.stderr:  # not the top-level usage, which says nothing of --rules
        assert result.stderr.startswith("usage: binance-alerter backtest "), result.stderr
    assert "Traceback" not in result.stderr
