"""``binance-alerter backtest FILE...``: what a rule would have fired on recorded data.

It answers "would this rule have alerted, and when?" only if nothing differs from the live
path but the source of the frames, so each frame goes through the ingestor's own
``FrameParser`` (same filtering, same event time ``E``) and the ticks through the detector's
own pure ``DetectionEngine``, file after file in the order given. Alerts are stamped with
their event time as their detection time: a recording has no detector clock.

Ticks are handed to the engine in batches of a few thousand: the engine's output does not
depend on batching (it is pure and ordered), and a call per frame would cost more than the
detection itself on trade streams.

``--feed`` says what the engine is shown of a trade recording (``tools.backtest_feeds``):
every trade (``agg_trade``, the default, as the live ``FEED=agg_trade``) or the last trade
price of each second (``mini_ticker``, what the one-second mini ticker would have shown).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, TextIO

from common.rule_model import Rule
from common.schemas import Alert, Tick
from detector.engine import DetectionEngine
from ingestor.parsing import FrameParser, MalformedFrame
from tools.backtest_feeds import MiniTickerView
from tools.backtest_report import BacktestStats, Summary, make_writer
from tools.progress import ProgressBar
from tools.recording_formats import Recording, UnknownFormat, open_recordings

log = logging.getLogger(__name__)

BATCH_TICKS: Final = 4096
PROGRESS_MIN_BYTES: Final = 20_000_000  # below this a backtest is over before a bar helps
_PROGRESS_CHECK_FRAMES: Final = 512
EXIT_INTERRUPTED: Final = 130


@dataclass(frozen=True)
class BacktestOptions:
    paths: list[str]
    rules: list[Rule]
    output_format: str = "table"
    summary: bool = True
    progress: bool | None = None  # None: when stderr is a terminal and the input is large
    feed: str = "agg_trade"  # or "mini_ticker": tools.backtest_feeds


def run_engine(recordings: Sequence[Recording], rules: Sequence[Rule],
               emit: Callable[[list[Alert]], None],
               progress: ProgressBar | None = None, feed: str = "agg_trade") -> BacktestStats:
    """Every frame of every recording through parser and engine, as ``feed`` shows it;
    alerts go to ``emit``."""
    stats = BacktestStats(files=len(recordings))
    engine = DetectionEngine(list(rules))
    view = MiniTickerView() if feed == "mini_ticker" else None
    batch: list[Tick] = []
    done_bytes = 0
    started = time.perf_counter()

    def flush() -> None:
        alerts = engine.process(batch)
        batch.clear()
        if alerts:
            stats.alerts += len(alerts)
            emit(alerts)

    try:
        for recording in recordings:
            parse = FrameParser(recording.combined).parse
            frames = filtered = bad = malformed = 0
            try:
                for frame in recording.frames_only():
                    frames += 1
                    try:
                        parsed = parse(frame)
                    except MalformedFrame:
                        malformed += 1
                        continue
                    filtered += parsed.filtered
                    bad += parsed.bad_entries
                    ticks = parsed.ticks
                    if ticks:
                        stats.ticks += len(ticks)
                        batch += ticks if view is None else view.feed(ticks)
                        if len(batch) >= BATCH_TICKS:
                            flush()
                    if progress is not None and frames % _PROGRESS_CHECK_FRAMES == 0:
                        progress.update(done_bytes + recording.bytes_read, stats.ticks,
                                        stats.alerts)
                if view is not None and recording is recordings[-1]:
                    batch += view.finish()
                flush()
            finally:
                stats.frames += frames
                stats.filtered += filtered
                stats.bad_entries += bad
                stats.malformed += malformed + recording.malformed
                stats.skipped += recording.skipped
                stats.truncated += recording.truncated
                done_bytes += recording.bytes_read
                stats.bytes = done_bytes
    except KeyboardInterrupt:
        # Ctrl-C on a long run still shows what was found so far.
        stats.interrupted = True
    finally:
        stats.elapsed_s = time.perf_counter() - started
    return stats


def run_backtest(options: BacktestOptions, out: TextIO | None = None,
                 err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        recordings = open_recordings(options.paths)
    except (OSError, UnknownFormat) as exc:
        print(f"binance-alerter backtest: {exc}", file=err)
        return 2
    total = sum(r.size for r in recordings)
    show_progress = options.progress
    if show_progress is None:
        show_progress = err.isatty() and total >= PROGRESS_MIN_BYTES
    progress = ProgressBar(total, err) if show_progress else None
    writer = make_writer(options.output_format, out)
    summary = Summary()

    def emit(alerts: list[Alert]) -> None:
        writer.write(alerts)
        summary.add(alerts)

    try:
        stats = run_engine(recordings, options.rules, emit, progress, options.feed)
    finally:
        if progress is not None:
            progress.close()
    writer.finish()
    out.flush()
    if options.summary:
        report = out if options.output_format == "table" else err
        if report is out:
            out.write("\n")
        report.write(summary.render(stats, options.rules))
        report.flush()
    return EXIT_INTERRUPTED if stats.interrupted else 0
