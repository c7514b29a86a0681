"""Run every benchmark in turn: ``python -m bench`` (``make bench``)."""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = ("bench.engine", "bench.ingest", "bench.detector", "bench.latency")

if __name__ == "__main__":
    for module in BENCHMARKS:
        subprocess.run([sys.executable, "-m", module], check=True)
