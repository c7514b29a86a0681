"""Run every benchmark in turn: ``python -m bench`` (``make bench``).

The pipeline benchmarks (ingest, detector, latency) run once per transport, Redis then
Kafka, so that their figures can be read side by side.
"""

from __future__ import annotations

import subprocess
import sys

from bench.buses import BUSES

BENCHMARKS: tuple[tuple[str, ...], ...] = (
    ("bench.engine",),
    ("bench.backtest",),
    *(("bench.ingest", "--bus", bus) for bus in BUSES),
    *(("bench.detector", "--bus", bus) for bus in BUSES),
    *(("bench.latency", "--bus", bus) for bus in BUSES),
    ("bench.trades",),
    ("bench.fanout", "--clients", "2000", "--rate", "5"),
    ("bench.fanout", "--clients", "1000", "--burst", "100", "--burst-seconds", "2"),
    ("bench.notify",),
)

if __name__ == "__main__":
    for module, *args in BENCHMARKS:
        subprocess.run([sys.executable, "-m", module, *args], check=True)
