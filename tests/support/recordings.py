"""Shared by the record/replay/backtest tests: the fixtures' paths, an independent reader of
the recordings, the brute-force reference of DESIGN.md's rule, and the CLI as a process."""

from __future__ import annotations

import gzip
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

DATA = Path(__file__).resolve().parent.parent / "data"
HFT_20K = DATA / "hftbacktest_btcusdt_20240808_head20k.gz"
HFT_3K = DATA / "hftbacktest_btcusdt_20240808_head.gz"
CRYPTOFEED = DATA / "cryptofeed_binance_futures_head.ws"


class RefTick(NamedTuple):
    symbol: str
    price: float
    time_ms: int


class RefAlert(NamedTuple):
    symbol: str
    direction: str
    time_ms: int
    price: float
    base: float


def source_frames(path: Path) -> list[str]:
    """The stream frames of an hftbacktest or cryptofeed file, read without project code."""
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        lines = f.read().splitlines()
    frames = []
    for line in lines:
        if " <-> " in line:
            continue
        _, _, frame = line.partition(": " if path.suffix != ".gz" else " ")
        if frame.startswith('{"stream"'):
            frames.append(frame)
    return frames


def reference_ticks(paths: list[Path]) -> list[RefTick]:
    """Trade prices from the frames, as DESIGN.md and the exchange docs describe them."""
    ticks = []
    for path in paths:
        for frame in source_frames(path):
            event = json.loads(frame)["data"]
            if event.get("e") in ("trade", "aggTrade") and event.get("X", "MARKET") == "MARKET":
                ticks.append(RefTick(event["s"], float(event["p"]), event["E"]))
    return ticks


def reference_alerts(ticks: list[RefTick], window_s: int, up: float, down: float,
                     cooldown_s: int) -> list[RefAlert]:
    """DESIGN.md's rule by brute force: every observation kept, the base searched afresh.

    Base at t: the last observation at or before t − W, else the oldest one. A tick older
    than the symbol's newest observation is ignored. The cooldown silences the symbol in
    both directions while t < last alert + cooldown.
    """
    history: dict[str, list[tuple[int, float]]] = {}
    quiet_until: dict[str, int] = {}
    alerts = []
    for tick in ticks:
        seen = history.setdefault(tick.symbol, [])
        if seen and tick.time_ms < seen[-1][0]:
            continue
        seen.append((tick.time_ms, tick.price))
        cutoff = tick.time_ms - window_s * 1000
        older = [price for time_ms, price in seen if time_ms <= cutoff]
        base = older[-1] if older else seen[0][1]
        change = (tick.price - base) / base * 100
        direction = "up" if change >= up else "down" if change <= -down else None
        if direction is None or tick.time_ms < quiet_until.get(tick.symbol, tick.time_ms):
            continue
        quiet_until[tick.symbol] = tick.time_ms + cooldown_s * 1000
        alerts.append(RefAlert(tick.symbol, direction, tick.time_ms, tick.price, base))
    return alerts


def cli(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "tools.cli", *map(str, args)]


@dataclass
class CliProcess:
    """A ``binance-alerter`` subcommand as a real process, its stdout read by a thread."""

    process: subprocess.Popen[str]
    lines: queue.Queue[str]
    stderr_path: Path

    @classmethod
    def start(cls, args: list[str | Path], log_dir: Path, name: str) -> CliProcess:
        stderr_path = log_dir / f"{name}.stderr"
        with stderr_path.open("w") as stderr:
            process = subprocess.Popen(cli(*args), stdout=subprocess.PIPE, stderr=stderr,
                                       text=True, env={**os.environ, "LOG_LEVEL": "INFO"})
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.put(line.rstrip("\n"))

        threading.Thread(target=pump, daemon=True).start()
        return cls(process, lines, stderr_path)

    def wait_line(self, prefix: str, timeout_s: float = 20.0) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line starting {prefix!r}; stderr:\n"
                                     f"{self.stderr()}") from None
            if line.startswith(prefix):
                return line

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self, signum: int = signal.SIGINT, timeout_s: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"did not stop; stderr:\n{self.stderr()}") from None


def start_replay(files: list[Path], log_dir: Path, *extra: str) -> tuple[CliProcess, str]:
    """A replay server on a free port and its ws://host:port address."""
    replay = CliProcess.start(["replay", *files, "--port", "0", *extra], log_dir, "replay")
    line = replay.wait_line("replay listening on ")
    return replay, line.removeprefix("replay listening on ")
