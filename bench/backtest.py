"""Backtest throughput: the engine alone over a real recording's ticks, then the whole
``binance-alerter backtest`` command (read, decompress, parse, detect, print).

Inputs: the full hftbacktest BTCUSDT recording from ``../shared/data`` when it is there
(else the slice in tests/data), and one synthetic hour of ``!miniTicker@arr`` written in our
recording format by the fake exchange's renderer, the shape an operator's own recordings
have (the public recordings are single-symbol trade streams with mostly depth frames).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common.rule_model import Rule
from common.schemas import Tick
from detector.engine import DetectionEngine
from fake_exchange.frames import MINI_TICKER, Renderer, StreamSpec
from fake_exchange.scenarios import drifting_market
from ingestor.parsing import FrameParser
from tools.backtest import BacktestOptions, run_backtest
from tools.backtest_report import describe_rule
from tools.recording_formats import Recording
from tools.recording_writer import RotatingWriter

ROOT = Path(__file__).resolve().parent.parent
FULL = ROOT.parent / "shared" / "data" / "hftbacktest_usdm_btcusdt_20240808.gz"
SLICE = ROOT / "tests" / "data" / "hftbacktest_btcusdt_20240808_head20k.gz"
PASSES = 30
DEFAULT = Rule()
# Rules that fire on each input: an alert costs far more than a tick (it samples its path).
# The synthetic board drifts hard, so 0.5 % fires ~8 times a second: a worst case.
BTC_FIRING = Rule(window_s=60, threshold_up_pct=0.05, threshold_down_pct=0.05, cooldown_s=60)
BOARD_FIRING = Rule(window_s=60, threshold_up_pct=0.5, threshold_down_pct=0.5, cooldown_s=60)


def recording_ticks(path: Path) -> list[Tick]:
    recording = Recording(path)
    parse = FrameParser(recording.combined).parse
    ticks: list[Tick] = []
    for frame in recording.frames_only():
        with contextlib.suppress(ValueError):
            ticks += parse(frame).ticks
    return ticks


def engine_only(ticks: list[Tick], rule: Rule) -> tuple[float, int]:
    """Median ticks/s over fresh engines (a used one would ignore the replayed ticks)."""
    rates = []
    alerts = 0
    for _ in range(max(3, min(PASSES, 2_000_000 // max(1, len(ticks))))):
        engine = DetectionEngine([rule])
        started = time.perf_counter()
        alerts = len(engine.process(ticks))
        rates.append(len(ticks) / (time.perf_counter() - started))
    return statistics.median(rates), alerts


def whole_command(path: Path, rule: Rule) -> tuple[float, int, int]:
    """(seconds, ticks, alerts) of the command in-process, output discarded."""
    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    run_backtest(BacktestOptions(paths=[str(path)], rules=[rule], output_format="jsonl",
                                 progress=False), out, err)
    elapsed = time.perf_counter() - started
    summary = err.getvalue().splitlines()[0]  # "backtest: 1 file(s), …, N ticks, M alerts in"
    ticks = int(summary.split(" frames, ")[1].split(" ticks")[0].replace(",", ""))
    return elapsed, ticks, len(out.getvalue().splitlines())


def synthetic_hour(directory: Path, symbols: int = 700) -> Path:
    """An hour of !miniTicker@arr frames (60 % of symbols changing each second)."""
    renderer = Renderer()
    spec = StreamSpec(MINI_TICKER)
    writer = RotatingWriter(str(directory / "hour"),
                            "wss://fstream.binance.com/market/stream?streams=!miniTicker@arr",
                            rotate_bytes=10**12, rotate_s=10**9)
    batch: list[tuple[int, str]] = []
    for frame in drifting_market(symbols, frames=3600, seed=7):
        renderer.apply(frame)
        payload = renderer.payload(spec, frame)
        if payload is None:
            continue
        text = '{"stream":"!miniTicker@arr","data":' + payload.decode() + "}"
        batch.append((frame[0].event_time_ms + 5, text))
        if len(batch) >= 100:
            writer.write(batch)
            batch = []
    writer.write(batch)
    writer.close()
    return writer.files[0]


def report(name: str, path: Path, firing: Rule) -> None:
    size = path.stat().st_size
    with gzip.open(path, "rb") as f:
        raw_size = sum(len(chunk) for chunk in iter(lambda: f.read(1 << 20), b""))
    ticks = recording_ticks(path)
    print(f"{name}: {size / 1e6:.1f} MB on disk, {raw_size / 1e6:.1f} MB of text, "
          f"{len(ticks):,} ticks")
    for rule in (DEFAULT, firing):
        rate, alerts = engine_only(ticks, rule)
        print(f"  engine alone, {describe_rule(rule)}: {rate:,.0f} ticks/s on one core "
              f"({alerts:,} alerts; median of several passes)")
    elapsed, counted, alerts = whole_command(path, firing)
    print(f"  whole backtest command (in-process): {elapsed:.2f} s, {counted / elapsed:,.0f} "
          f"ticks/s, {size / 1e6 / elapsed:.1f} MB/s on disk, {raw_size / 1e6 / elapsed:.1f} "
          f"MB/s of text ({alerts:,} alerts)")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tools.cli", "backtest", str(path), "--format",
                    "jsonl", "--no-summary"], check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    print(f"  as a process (interpreter start-up included): "
          f"{time.perf_counter() - started:.2f} s")


def main() -> None:
    source = FULL if FULL.exists() else SLICE
    report(f"hftbacktest BTCUSDT ({'full recording' if source == FULL else 'test slice'})",
           source, BTC_FIRING)
    with tempfile.TemporaryDirectory() as scratch:
        report("synthetic hour of !miniTicker@arr, 700 symbols", synthetic_hour(Path(scratch)),
               BOARD_FIRING)


if __name__ == "__main__":
    main()
