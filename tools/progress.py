"""A one-line progress bar on stderr, redrawn with ``\\r``: no dependency, no curses.

It is for a person watching a long backtest, so it redraws at most a few times a second
(``update`` is cheap to call often) and stays off stdout, which carries the results.
"""

from __future__ import annotations

import sys
import time
from typing import Final, TextIO

REDRAW_EVERY_S: Final = 0.2
WIDTH: Final = 30


class ProgressBar:
    def __init__(self, total_bytes: int, stream: TextIO | None = None) -> None:
        self._total = max(1, total_bytes)
        self._stream = stream or sys.stderr
        self._started = time.monotonic()
        self._next_draw = 0.0
        self._drawn = False

    def update(self, done_bytes: int, ticks: int, alerts: int) -> None:
        now = time.monotonic()
        if now < self._next_draw:
            return
        self._next_draw = now + REDRAW_EVERY_S
        fraction = min(1.0, done_bytes / self._total)
        elapsed = max(1e-9, now - self._started)
        rate = done_bytes / elapsed
        eta = (self._total - done_bytes) / rate if rate > 0 else 0.0
        filled = round(fraction * WIDTH)
        bar = "#" * filled + "." * (WIDTH - filled)
        self._stream.write(
            f"\r[{bar}] {fraction:4.0%} {done_bytes / 1e6:,.1f}/{self._total / 1e6:,.1f} MB "
            f"{rate / 1e6:,.1f} MB/s  {ticks:,} ticks  {alerts:,} alerts  ETA {eta:,.0f} s ")
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Erase the bar so that what follows starts on a clean line."""
        if self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
