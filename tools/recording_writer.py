"""Rotating gzip JSON-lines files for ``binance-alerter record``.

Synchronous on purpose: the recorder calls ``write`` from a worker thread
(``asyncio.to_thread``) with everything received since the last call, so compression and
disk waits never stall the socket reader, and one thread owns the file.

Each ``write`` ends with ``Z_SYNC_FLUSH``: the compressed bytes on disk then decode up to
that point even when the process is killed and the gzip trailer is never written, so a
kill loses at most the frames since the last flush (about a second). A file is closed as
soon as it grows past ``rotate_bytes`` on disk, or once it is ``rotate_s`` old, and the
next frame opens a new one, so an hour's recording is a handful of self-contained files.
"""

from __future__ import annotations

import gzip
import logging
import os
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Final

from tools.recording_formats import OwnLine, own_line_encoder

log = logging.getLogger(__name__)

SUFFIX: Final = ".jsonl.gz"
# Measured on one core here: level 6 compresses the exchange's JSON 5–7× at 50–85 MB/s of
# input (a 700-symbol !miniTicker@arr board; the hftbacktest depth and trade text); level 9
# saves only 2–7 % more for 3–4× the CPU, level 1 loses 15–25 % of the saving.
COMPRESS_LEVEL: Final = 6


def create_new(name: str) -> IO[bytes]:
    """The file behind each recording file: a new one, never one overwritten."""
    return open(name, "xb")


class RotatingWriter:
    """``open_file(name)`` creates each file; it must refuse an existing name
    (``FileExistsError``), as ``create_new`` does, and may wrap the file it opens."""

    def __init__(self, prefix: str, url: str, *, rotate_bytes: int, rotate_s: float,
                 open_file: Callable[[str], IO[bytes]] = create_new) -> None:
        self._prefix = prefix
        self._open_file = open_file
        self._url = url
        self._rotate_bytes = rotate_bytes
        self._rotate_s = rotate_s
        self._raw: IO[bytes] | None = None
        self._gzip: gzip.GzipFile | None = None
        self._opened_at = 0.0  # monotonic
        self._last_stamp = 0  # unix seconds in the last file name
        self.path: Path | None = None
        self.files: list[Path] = []
        self._frames_in_file = 0
        self.frames_written = 0

    def write(self, lines: Sequence[tuple[int, str]]) -> None:
        """Append ``(receive ms, frame)`` pairs and flush them to disk."""
        self.rotate_if_due()  # a file past its age takes no more frames
        for received_ms, frame in lines:
            if self._gzip is None or self._raw is None:
                self._open()
                assert self._gzip is not None
                assert self._raw is not None
            url = self._url if self._frames_in_file == 0 else None
            self._gzip.write(own_line_encoder.encode(OwnLine(received_ms, frame, url)) + b"\n")
            self._frames_in_file += 1
            self.frames_written += 1
            # The compressor emits a block every few tens of kB, so the size on disk lags
            # the input a little: a file ends at most one block past the limit.
            if self._raw.tell() >= self._rotate_bytes:
                self.close()
        if self._gzip is not None:
            self._gzip.flush(zlib.Z_SYNC_FLUSH)
        self.rotate_if_due()

    def rotate_if_due(self) -> None:
        if self._raw is None:
            return
        too_big = self._raw.tell() >= self._rotate_bytes
        too_old = time.monotonic() - self._opened_at >= self._rotate_s
        if too_big or too_old:
            self.close()

    def close(self) -> None:
        """Finish the current file (the next write opens a new one)."""
        if self._gzip is None or self._raw is None:
            return
        self._gzip.close()
        size = self._raw.tell()
        self._raw.close()
        log.info("closed %s: %d frames, %.2f MB", self.path, self._frames_in_file, size / 1e6)
        self._gzip = self._raw = None

    def _open(self) -> None:
        # File names must sort in recording order (``backtest prefix-*`` relies on the
        # shell's sorted glob), so a second rotation within the same second takes the
        # next second's name rather than a suffix that would sort first.
        stamp = max(int(time.time()), self._last_stamp + 1)
        while True:
            name = f"{self._prefix}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(stamp))}{SUFFIX}"
            try:
                raw = self._open_file(name)
            except FileExistsError:
                stamp += 1
                continue
            break
        self._last_stamp = stamp
        self._raw = raw
        # mtime=0 and no file name in the header: the bytes depend only on the frames.
        self._gzip = gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                   compresslevel=COMPRESS_LEVEL, mtime=0)
        self._opened_at = time.monotonic()
        self._frames_in_file = 0
        self.path = Path(name)
        self.files.append(self.path)
        log.debug("recording to %s", name)


def prepare_prefix(prefix: str) -> str:
    """Create the prefix's directory so that ``-o data/btc`` works on a fresh checkout."""
    parent = os.path.dirname(prefix)
    if parent:
        os.makedirs(parent, exist_ok=True)
    return prefix
