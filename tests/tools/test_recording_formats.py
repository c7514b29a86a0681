"""Reading recordings: the three formats, what is skipped, and files cut short."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from tests.support.recordings import CRYPTOFEED as CRYPTOFEED_FILE
from tests.support.recordings import HFT_3K, source_frames
from tools.recording_formats import CRYPTOFEED, HFTBACKTEST, OWN, Recording, UnknownFormat
from tools.recording_writer import RotatingWriter


def test_hftbacktest_frames_verbatim() -> None:
    recording = Recording(HFT_3K)
    frames = list(recording.frames_with_times())
    assert (recording.format, recording.combined, recording.url) == (HFTBACKTEST, True, None)
    assert [f.decode() for _, f in frames] == source_frames(HFT_3K)  # type: ignore[union-attr]
    assert recording.lines == 3000
    assert recording.frames == 2999
    assert recording.skipped == 1  # the REST depth snapshot on line 55
    assert recording.malformed == 0
    assert not recording.truncated
    times = [t for t, _ in frames]
    assert times == sorted(times)
    assert times[0] == pytest.approx(1723161255.030314667)
    assert recording.bytes_read == recording.size


def test_cryptofeed_frames_verbatim() -> None:
    recording = Recording(CRYPTOFEED_FILE)
    frames = list(recording.frames_with_times())
    assert recording.format == CRYPTOFEED
    assert recording.combined
    assert recording.url is not None
    assert recording.url.startswith("wss://fstream.binance.com/")
    assert [f.decode() for _, f in frames] == source_frames(CRYPTOFEED_FILE)  # type: ignore[union-attr]
    assert recording.skipped == 1
    assert recording.frames == 399
    assert frames[0][0] == pytest.approx(1626992741.06217)


def test_our_format_round_trips_through_the_writer(tmp_path: Path) -> None:
    writer = RotatingWriter(str(tmp_path / "rec"), "wss://x/market/ws/!miniTicker@arr",
                            rotate_bytes=10**9, rotate_s=3600)
    frames = [(1_700_000_000_000 + i, f'[{{"e":"24hrMiniTicker","E":{i},"s":"A","c":"1"}}]')
              for i in range(5)]
    writer.write(frames[:2])
    writer.write(frames[2:])
    writer.close()
    [path] = writer.files
    assert path.name.startswith("rec-")
    assert path.name.endswith("Z.jsonl.gz")
    lines = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    assert lines[0]["url"] == "wss://x/market/ws/!miniTicker@arr"
    assert all("url" not in line for line in lines[1:])
    recording = Recording(path)
    assert recording.format == OWN
    assert not recording.combined
    assert [(round(t * 1000), f) for t, f in recording.frames_with_times()] == frames


def test_a_file_cut_after_a_flush_keeps_what_was_flushed(tmp_path: Path) -> None:
    """What a killed recorder leaves behind: a gzip stream without its end."""
    writer = RotatingWriter(str(tmp_path / "rec"), "wss://x/market/stream?streams=a",
                            rotate_bytes=10**9, rotate_s=3600)
    frames = [(i, '{"stream":"a","data":{}}') for i in range(1000)]
    writer.write(frames)
    [path] = writer.files
    cut = tmp_path / "cut.jsonl.gz"
    shutil.copy(path, cut)  # taken before close(): no trailer, as after a SIGKILL
    writer.close()
    recording = Recording(cut)
    assert recording.combined
    assert len(list(recording.frames_only())) == 1000
    assert recording.truncated


def test_unknown_and_empty_files_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello world\n")
    with pytest.raises(UnknownFormat, match="not a recording this tool knows"):
        Recording(text)
    empty = tmp_path / "empty.gz"
    empty.write_bytes(gzip.compress(b""))
    with pytest.raises(UnknownFormat, match="empty"):
        Recording(empty)


def test_own_format_without_url_is_sniffed(tmp_path: Path) -> None:
    path = tmp_path / "hand.jsonl"
    path.write_text('{"t": 1, "frame": "{\\"stream\\":\\"a\\",\\"data\\":{}}"}\n'
                    'not json\n')
    recording = Recording(path)
    assert recording.format == OWN
    assert recording.combined
    assert list(recording.frames_only()) == ['{"stream":"a","data":{}}']
    assert recording.malformed == 1
