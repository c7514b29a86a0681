"""Raw exchange frames out of a recording file, whatever wrote it.

Three formats are recognised from the first line, as ``fake_exchange.recordings`` does:

- our own (``binance-alerter record``): gzip JSON lines
  ``{"t": <receive ms>, "url": <feed URL, first line of each file>, "frame": "<raw text>"}``;
- hftbacktest: lines ``<receive ns> <raw frame>`` (gzip), combined-stream frames plus the
  occasional REST snapshot the collector wrote into the same file;
- cryptofeed: a header ``<url> <-> <connect secs>``, then ``<receive secs>: <raw frame>``.

Unlike ``fake_exchange.recordings`` (which turns trades into quotes for its scenarios) this
keeps each frame's text byte for byte: a backtest must hand the ingestor's own parser the
same text the live feed saw, and a replay must serve it unchanged. Reading is streaming,
so an hour of ``!miniTicker@arr`` never has to fit in memory; a gzip file cut short by a
killed recorder yields everything up to its last flush.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import re
import zlib
from collections.abc import Iterator
from typing import IO, Final, cast

import msgspec

from ingestor.parsing import is_combined

log = logging.getLogger(__name__)

OWN: Final = "own"
HFTBACKTEST: Final = "hftbacktest"
CRYPTOFEED: Final = "cryptofeed"

_HFT_LINE: Final = re.compile(rb"^\d+ [\[{]")
_CRYPTOFEED_LINE: Final = re.compile(rb"^\d+(\.\d+)?: ")
_CRYPTOFEED_HEADER: Final = b" <-> "
# The collectors of both external formats recorded combined streams; what does not start
# like a combined frame is a REST response they wrote alongside, never a WebSocket frame.
_COMBINED_PREFIX: Final = b'{"stream"'
_GZIP_MAGIC: Final = b"\x1f\x8b"
_SNIFF_LINES: Final = 50


class OwnLine(msgspec.Struct, omit_defaults=True):
    """One line of our format; ``url`` is written on the first line of every file so that
    each rotated file stands alone (it says whether frames are combined-stream wrappers)."""

    t: int
    frame: str
    url: str | None = None


own_line_encoder: Final = msgspec.json.Encoder()
_own_line_decoder: Final = msgspec.json.Decoder(OwnLine)


class UnknownFormat(ValueError):
    """The file is not one of the recording formats above."""


class Recording:
    """One recording file, read lazily; iterate ``frames()`` once.

    After (or during) iteration: ``lines`` read, ``frames`` yielded, ``skipped`` lines that
    are not WebSocket frames (headers, REST snapshots), ``malformed`` lines whose wrapper
    could not be read, ``truncated`` when the file ended mid-stream. ``bytes_read`` is the
    position in the file on disk (compressed bytes for gzip), for a progress bar.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.size = os.path.getsize(self.path)
        self.format, self.url, first_frame = _sniff(self.path)
        if self.format == OWN and self.url is not None:
            self.combined = is_combined(self.url)
        else:
            self.combined = self.format != OWN or first_frame.lstrip().startswith(
                _COMBINED_PREFIX.decode())
        self.lines = self.frames = self.skipped = self.malformed = 0
        self.truncated = False
        self._raw: IO[bytes] | None = None

    @property
    def bytes_read(self) -> int:
        raw = self._raw
        if raw is None or raw.closed:
            return self.size if self.lines else 0
        return raw.tell()

    def frames_with_times(self) -> Iterator[tuple[float, str | bytes]]:
        """``(receive time in seconds, frame text)`` in file order."""
        fmt = self.format
        for line in self._lines():
            if fmt == OWN:
                try:
                    own = _own_line_decoder.decode(line)
                except msgspec.DecodeError:
                    self.malformed += 1
                    continue
                self.frames += 1
                yield own.t / 1000.0, own.frame
                continue
            if fmt == CRYPTOFEED:
                if self.lines == 1 and _CRYPTOFEED_HEADER in line:
                    self.skipped += 1
                    continue
                stamp, sep, rest = line.partition(b": ")
            else:
                stamp, sep, rest = line.partition(b" ")
            if not sep:
                self.malformed += 1
                continue
            if not rest.startswith(_COMBINED_PREFIX):
                self.skipped += 1
                continue
            try:
                seconds = int(stamp) / 1e9 if fmt == HFTBACKTEST else float(stamp)
            except ValueError:
                self.malformed += 1
                continue
            self.frames += 1
            yield seconds, rest

    def frames_only(self) -> Iterator[str | bytes]:
        """Frame texts alone: what a backtest needs, without the receive times."""
        for _, frame in self.frames_with_times():
            yield frame

    def _lines(self) -> Iterator[bytes]:
        raw = open(self.path, "rb")  # noqa: SIM115 - closed in the finally below
        self._raw = raw
        try:
            try:
                for line in _decompressed(raw):
                    self.lines += 1
                    line = line.rstrip(b"\r\n")
                    if line.strip():
                        yield line
            except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
                # A recorder killed between flushes leaves a gzip stream without its end:
                # everything before the last flush is still good, so keep it and say so.
                self.truncated = True
                log.warning("%s: stops early (%s); using the %d lines before", self.path,
                            exc, self.lines)
        finally:
            raw.close()


def _decompressed(raw: IO[bytes]) -> IO[bytes]:
    """The file's text: through gzip when it starts with the gzip magic, else as is."""
    magic = raw.read(2)
    raw.seek(0)
    if magic == _GZIP_MAGIC:
        return cast("IO[bytes]", gzip.GzipFile(fileobj=raw, mode="rb"))
    return raw


def _sniff(path: str) -> tuple[str, str | None, str]:
    """(format, URL when the file names one, first frame text of our format or '')."""
    with open(path, "rb") as raw:
        try:
            for _, line in zip(range(_SNIFF_LINES), _decompressed(raw), strict=False):
                if not line.strip():
                    continue
                return _classify(path, line)
        except (EOFError, zlib.error, gzip.BadGzipFile, io.UnsupportedOperation) as exc:
            raise UnknownFormat(f"{path}: unreadable ({exc})") from None
    raise UnknownFormat(f"{path}: empty, not a recording")


def _classify(path: str, line: bytes) -> tuple[str, str | None, str]:
    if _HFT_LINE.match(line):
        return HFTBACKTEST, None, ""
    if _CRYPTOFEED_HEADER in line:
        return CRYPTOFEED, line.split(_CRYPTOFEED_HEADER, 1)[0].decode(errors="replace"), ""
    if _CRYPTOFEED_LINE.match(line):
        return CRYPTOFEED, None, ""
    try:
        own = _own_line_decoder.decode(line)
    except msgspec.DecodeError:
        pass
    else:
        return OWN, own.url, own.frame
    raise UnknownFormat(f"{path}: not a recording this tool knows (ours, hftbacktest, "
                        f"cryptofeed); it starts with {line[:60]!r}")


def open_recordings(paths: list[str]) -> list[Recording]:
    """Every file checked up front, so a typo in the tenth name fails before any work."""
    return [Recording(path) for path in paths]
