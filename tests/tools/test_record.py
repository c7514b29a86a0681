"""``record`` and ``replay`` as real processes: the round trip, rotation, kills and stops;
and the recorder in-process on a disk that stalls."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import logging
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from common.settings import IngestorSettings, load_settings
from fake_exchange import FakeExchange, firehose
from tests.support.recordings import CRYPTOFEED, HFT_3K, HFT_20K, CliProcess, cli, start_replay
from tools.cli import main
from tools.recorder import Recorder, RecordOptions
from tools.recording_formats import Recording, UnknownFormat
from tools.recording_writer import RotatingWriter

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

RULE = ["--window", "10", "--up", "0.02", "--down", "0.02"]


def backtest(capsys: pytest.CaptureFixture[str], files: list[Path], *rule: str) -> list[str]:
    code = main(["backtest", *map(str, files), *rule, "--format", "jsonl"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out.splitlines()


def recorded_frames(files: list[Path]) -> int:
    """Frames on disk so far (a live recorder's file reads up to its last flush)."""
    total = 0
    for path in files:
        try:
            recording = Recording(path)
        except UnknownFormat:
            continue  # created a moment ago, nothing flushed into it yet
        total += sum(1 for _ in recording.frames_only())
    return total


def wait_for_frames(out: Path, count: int, recorder: CliProcess, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        files = sorted(out.glob("rec-*.jsonl.gz"))
        seen = recorded_frames(files) if files else 0
        if seen >= count:
            assert seen == count
            return
        assert recorder.process.poll() is None, recorder.stderr()
        assert time.monotonic() < deadline, f"{seen}/{count} frames\n{recorder.stderr()}"
        time.sleep(0.1)


def record(address: str, out: Path, processes: list[CliProcess], *extra: str,
           route: str = "/market/stream?streams=btcusdt@trade") -> CliProcess:
    recorder = CliProcess.start(["record", address + route, "-o", out / "rec", *extra],
                                out.parent, "record")
    processes.append(recorder)
    return recorder


def test_record_replay_backtest_round_trip(tmp_path: Path, processes: list[CliProcess],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    source = [HFT_20K]
    frames = Recording(HFT_20K)
    expected_frames = sum(1 for _ in frames.frames_only())
    replay, address = start_replay(source, tmp_path, "--speed", "0")
    processes.append(replay)
    out = tmp_path / "rec"
    recorder = record(address, out, processes)
    replay.wait_line("replay done after ")
    wait_for_frames(out, expected_frames, recorder)
    assert recorder.stop(signal.SIGINT) == 0, recorder.stderr()
    assert replay.stop(signal.SIGTERM) == 0, replay.stderr()

    files = sorted(out.glob("rec-*.jsonl.gz"))
    assert len(files) == 1
    gzip.decompress(files[0].read_bytes())  # closed properly: a complete gzip stream
    expected = backtest(capsys, source, *RULE)
    assert len(expected) >= 3
    assert backtest(capsys, files, *RULE) == expected
    assert "closed " in recorder.stderr()
    assert f"{expected_frames} frames" in recorder.stderr()


def test_rotation_by_size_backtests_as_one(tmp_path: Path, processes: list[CliProcess],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    replay, address = start_replay([HFT_3K], tmp_path, "--speed", "0")
    processes.append(replay)
    out = tmp_path / "rec"
    recorder = record(address, out, processes, "--rotate-mb", "0.02",
                      route="/market/ws/btcusdt@trade")
    replay.wait_line("replay done after ")
    wait_for_frames(out, 2999, recorder)
    assert recorder.stop(signal.SIGTERM) == 0

    files = sorted(out.glob("rec-*.jsonl.gz"))
    assert len(files) >= 3
    assert recorder.stderr().count("closed ") == len(files)  # one line per file
    first_lines = [json.loads(gzip.decompress(f.read_bytes()).split(b"\n", 1)[0]) for f in files]
    assert all(line["url"].endswith("/market/ws/btcusdt@trade") for line in first_lines)
    times = [line["t"] for line in first_lines]
    assert times == sorted(times)  # file names sort in recording order
    rule = ["--window", "2", "--up", "0.005", "--down", "0.005"]
    expected = backtest(capsys, [HFT_3K], *rule)
    assert expected
    assert backtest(capsys, files, *rule) == expected


def test_rotation_by_time(tmp_path: Path, processes: list[CliProcess]) -> None:
    """Files are checked at each flush (every second): a 0.3 s limit means a file a flush."""
    replay, address = start_replay([CRYPTOFEED], tmp_path, "--speed", "4")  # ~2.8 s
    processes.append(replay)
    out = tmp_path / "rec"
    recorder = record(address, out, processes, "--rotate-minutes", "0.005")
    replay.wait_line("replay done after ", timeout_s=30)
    wait_for_frames(out, 399, recorder)
    assert recorder.stop() == 0
    assert len(list(out.glob("rec-*.jsonl.gz"))) >= 3


def test_a_killed_recorder_keeps_what_it_flushed(tmp_path: Path, processes: list[CliProcess],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    replay, address = start_replay([HFT_3K], tmp_path, "--speed", "0")
    processes.append(replay)
    out = tmp_path / "rec"
    recorder = record(address, out, processes)
    replay.wait_line("replay done after ")
    wait_for_frames(out, 2999, recorder)  # readable while the recorder runs
    recorder.stop(signal.SIGKILL)
    [path] = out.glob("rec-*.jsonl.gz")
    with pytest.raises(EOFError):
        gzip.decompress(path.read_bytes())  # no trailer: it was killed
    rule = ["--window", "2", "--up", "0.005", "--down", "0.005"]
    assert backtest(capsys, [path], *rule) == backtest(capsys, [HFT_3K], *rule)


def test_replay_stops_cleanly_and_record_refuses_a_bad_url(tmp_path: Path,
                                                           processes: list[CliProcess]) -> None:
    replay, _ = start_replay([HFT_3K], tmp_path)
    processes.append(replay)
    assert replay.stop(signal.SIGTERM) == 0
    assert "replay stopped" in replay.stderr()
    for url in ("http://example.com/x", "notaurl"):
        result = subprocess.run(cli("record", url, "-o", tmp_path / "r"),
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 2
        # The argument is named as the user gave it, not as the setting it overrides.
        assert f"argument URL: must be a ws:// or wss:// URL, not {url!r}" in result.stderr
        assert "BINANCE_WS_URL" not in result.stderr
    result = subprocess.run(cli("record", "ws://h/x", "--rotate-mb", "0"),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "argument --rotate-mb: must be > 0" in result.stderr
    result = subprocess.run(cli("replay", tmp_path / "none.gz"), capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2
    assert "no such file" in result.stderr


@pytest.mark.parametrize(("content", "message"), [
    (b"hello\n", "not a recording this tool knows"),
    (b"", "empty, not a recording"),
    (b"\x1f\x8bnot gzip at all", "unreadable"),
])
def test_replay_refuses_a_file_that_is_not_a_recording_in_one_line(
        tmp_path: Path, content: bytes, message: str) -> None:
    """As ``backtest`` does: exit 2 and one line, before any port is opened."""
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    result = subprocess.run(cli("replay", path, "--port", "0"), capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"binance-alerter replay: {path}: "), line
    assert message in line
    assert result.stdout == ""


def test_replay_of_a_folder_says_it_is_a_folder(tmp_path: Path) -> None:
    result = subprocess.run(cli("replay", tmp_path), capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: binance-alerter replay ")
    assert f"argument FILE: a folder, not a file: '{tmp_path}'" in result.stderr
class StalledDisk:
    """Real files whose writes wait until ``resume()``: a disk that has stopped keeping up."""

    def __init__(self) -> None:
        self._going = threading.Event()
        self.stalled_writes = threading.Event()

    def open(self, name: str) -> io.FileIO:
        disk = self

        class File(io.FileIO):
            def write(self, data: ReadableBuffer) -> int:
                if not disk._going.is_set():
                    disk.stalled_writes.set()
                    assert disk._going.wait(60), "the test never resumed the disk"
                return super().write(data)

        return File(name, "x")

    def resume(self) -> None:
        self._going.set()


async def test_pending_frames_are_bounded_while_the_disk_is_slow(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    limit_mb = 0.2
    disk = StalledDisk()
    async with FakeExchange(firehose(40, frames=10**6), interval_s=0.002) as ex:
        settings = load_settings(IngestorSettings, binance_ws_url=ex.url())
        writer = RotatingWriter(str(tmp_path / "rec"), ex.url(), rotate_bytes=10**9,
                                rotate_s=3600, open_file=disk.open)
        recorder = Recorder(settings, RecordOptions(ex.url(), max_pending_mb=limit_mb), writer)
        stopping = asyncio.Event()
        caplog.set_level(logging.INFO, logger="tools.recorder")
        run = asyncio.create_task(recorder.run(stopping))
        try:
            most = 0
            deadline = time.monotonic() + 20
            while recorder.frames_dropped < 200:  # the disk stalled long enough to overflow
                most = max(most, recorder.pending_bytes)
                assert time.monotonic() < deadline, (recorder.frames_dropped, most)
                assert not run.done()
                await asyncio.sleep(0.005)
            assert disk.stalled_writes.is_set()
            assert 0 < most <= limit_mb * 1e6
            assert recorder.pending_bytes <= limit_mb * 1e6
        finally:
            disk.resume()
            stopping.set()
            await asyncio.wait_for(run, 20)
    dropped = recorder.frames_dropped
    warnings = [r.getMessage() for r in caplog.records if "disk is not keeping up" in
                r.getMessage()]
    assert len(warnings) == 1, warnings  # rate-limited: one line for hundreds of drops
    assert "new frames are dropped" in warnings[0]
    [path] = writer.files
    assert sum(1 for _ in Recording(path).frames_only()) == writer.frames_written > 0
    assert f"; dropped {dropped} frames while the disk was slow" in caplog.text
