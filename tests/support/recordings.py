"""Shared by the record/replay/backtest tests: the fixtures' paths, an independent reader of
the recordings, the brute-force reference of the detection rule (docs/architecture.md), and
the CLI as a process."""

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
from collections.abc import Mapping
from dataclasses import dataclass, field
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
    """Trade prices from the frames, as docs/architecture.md and the exchange docs describe them."""
    ticks = []
    for path in paths:
        for frame in source_frames(path):
            event = json.loads(frame)["data"]
            if event.get("e") in ("trade", "aggTrade") and event.get("X", "MARKET") == "MARKET":
                # An aggregate trade is timed by its trade time T (issue 14), a trade by E.
                time_ms = event["T"] if event["e"] == "aggTrade" else event["E"]
                ticks.append(RefTick(event["s"], float(event["p"]), time_ms))
    return ticks


def reference_alerts(ticks: list[RefTick], window_s: int, up: float, down: float,
                     cooldown_s: int) -> list[RefAlert]:
    """The detection rule (docs/architecture.md) by brute force: every observation kept,
    the base searched afresh.

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
    """A ``binance-alerter`` subcommand as a real process, its stdout read by a thread.

    Every stdout line is kept in ``output`` (for assertions and failure messages) and also
    queued for ``wait_line``; stderr goes to a file.
    """

    process: subprocess.Popen[str]
    lines: queue.Queue[str]
    stderr_path: Path
    reader: threading.Thread
    output: list[str] = field(default_factory=list)
    new_session: bool = False

    @classmethod
    def start(cls, args: list[str | Path], log_dir: Path, name: str, *,
              env: Mapping[str, str] | None = None, new_session: bool = False) -> CliProcess:
        """``env`` is added to this environment; ``new_session`` puts the process in a
        process group of its own, as a shell does with a foreground command."""
        stderr_path = log_dir / f"{name}.stderr"
        with stderr_path.open("w") as stderr:
            process = subprocess.Popen(
                cli(*args), stdout=subprocess.PIPE, stderr=stderr, text=True,
                env={**os.environ, "LOG_LEVEL": "INFO", **(env or {})},
                start_new_session=new_session)
        lines: queue.Queue[str] = queue.Queue()
        output: list[str] = []

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                output.append(line.rstrip("\n"))
                lines.put(output[-1])

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        return cls(process, lines, stderr_path, reader, output, new_session)

    def wait_line(self, prefix: str, timeout_s: float = 20.0) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line starting {prefix!r}; stdout:\n{self.stdout()}"
                                     f"\nstderr:\n{self.stderr()}") from None
            if line.startswith(prefix):
                return line

    def stdout(self) -> str:
        return "\n".join(self.output)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait(self, timeout_s: float = 20.0) -> int:
        """The exit code once the process ends on its own, with its stdout read to the end."""
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout_s}s; stdout:\n"
                                 f"{self.stdout()[-4000:]}\nstderr:\n{self.stderr()}") from None
        self.reader.join(timeout=10)
        return code

    def stop(self, signum: int = signal.SIGINT, timeout_s: float = 20.0) -> int:
        if self.process.poll() is None:
            if self.new_session:  # Ctrl-C reaches the whole foreground process group
                os.killpg(self.process.pid, signum)
            else:
                self.process.send_signal(signum)
        try:
            return self.wait(timeout_s)
        except AssertionError:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"did not stop; stderr:\n{self.stderr()}") from None


def start_replay(files: list[Path], log_dir: Path, *extra: str) -> tuple[CliProcess, str]:
    """A replay server on a free port and its ws://host:port address."""
    replay = CliProcess.start(["replay", *files, "--port", "0", *extra], log_dir, "replay")
    line = replay.wait_line("replay listening on ")
    return replay, line.removeprefix("replay listening on ")
