"""``binance-alerter record URL``: the exchange's raw frames, to rotating gzip JSON lines.

The connection is the ingestor's own ``Feed`` (same reconnect backoff, stale-data watchdog,
24 h rotation, same ``STALE_AFTER_S``/``RECONNECT_*`` settings), with every text frame also
kept with its receive time. A recording made here therefore saw exactly what an ingestor
at the same place would have seen, which is what makes a backtest over it trustworthy.

The socket reader only appends to a list; a flusher hands the list to a worker thread once
a second (or sooner past ``FLUSH_BYTES``), where it is compressed and written, so a slow
disk or a large frame never delays reading. Measured against the fake exchange sending a
700-symbol ``!miniTicker@arr`` frame every 10 ms (about 100× the live rate, 7 MB/s of
JSON): 27 % of a core, and the event loop's lag stays at p50 0.2 ms, p99 4.6 ms.

While the disk does not keep up, the frames waiting for it are bounded
(``RecordOptions.max_pending_mb`` of frame text, 64 MB by default: about 15 minutes of
the all-market stream), and past the bound new frames are dropped, counted
(``frames_dropped``) and reported in a warning at most every ``DROP_LOG_INTERVAL_S`` and
in the closing line. Dropping, not blocking, because that is what leaves a user the best
recording: the exchange does not wait for a client that stops reading (its buffers fill,
then it drops the connection and the frames with it), so blocking the reader (which is
synchronous: blocking it would stall the event loop, pings included) would lose the same
frames and the connection too, while an unbounded list ends with the process killed for its
memory, losing the frames in hand and everything after. With drops the recording stays connected
and has a gap, said in the log, where the disk was too slow. The batch the worker thread
is writing is held as well, so the frames in memory are at most twice the bound.

Stopping is staged like the services' (``common.runner.supervise``): the first
SIGINT/SIGTERM stops reading, writes what is in hand and closes the file; a second one
stops at once (data up to the last flush survives).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry

from common.logs import configure_logging
from common.runner import EXIT_CONFIG, supervise
from common.schemas import Tick
from common.settings import IngestorSettings, SettingsError, load_settings
from ingestor.feed import Feed
from ingestor.metrics import IngestorMetrics
from tools.recording_writer import SUFFIX, RotatingWriter, prepare_prefix

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S: Final = 1.0
FLUSH_BYTES: Final = 4 * 1024 * 1024
DROP_LOG_INTERVAL_S: Final = 10.0


@dataclass(frozen=True)
class RecordOptions:
    url: str
    prefix: str = "binance"
    rotate_mb: float = 100.0
    rotate_minutes: float = 60.0
    max_pending_mb: float = 64.0  # frame text waiting for a slow disk, beyond which frames drop


def _ignore_ticks(ticks: list[Tick]) -> None:
    """The feed parses frames only to tell data from silence; the ticks are not needed."""


class _RecordingFeed(Feed):
    """The ingestor's feed, also handing every text frame to ``keep`` with its receive time."""

    def __init__(self, settings: IngestorSettings, keep: Callable[[int, str], None]) -> None:
        super().__init__(settings, _ignore_ticks, IngestorMetrics(CollectorRegistry()))
        self._keep = keep

    def on_message(self, message: bytes | str, binary: bool = False) -> bool:
        received_ms = time.time_ns() // 1_000_000
        # The watchdog's bookkeeping and the malformed-frame warnings.
        data = super().on_message(message, binary)
        if not binary:  # the exchange sends text only; binary is not a frame
            # (picows hands a text message on undecoded; websockets, as str)
            text = (message.decode("utf-8", "replace") if isinstance(message, bytes)
                    else message)
            self._keep(received_ms, text)
        return data


class Recorder:
    def __init__(self, settings: IngestorSettings, options: RecordOptions,
                 writer: RotatingWriter | None = None) -> None:
        self.writer = writer or RotatingWriter(
            options.prefix, settings.binance_ws_url,
            rotate_bytes=max(1, int(options.rotate_mb * 1e6)),
            rotate_s=options.rotate_minutes * 60)
        self.feed = _RecordingFeed(settings, self._keep)
        self._pending: list[tuple[int, str]] = []
        self._pending_bytes = 0
        self._max_pending_bytes = int(options.max_pending_mb * 1e6)
        # A flush starts well before the bound, so only a slow disk can reach it.
        self._flush_bytes = min(FLUSH_BYTES, self._max_pending_bytes // 2)
        self._wake = asyncio.Event()
        self.frames_dropped = 0
        self._dropped_unlogged = 0
        self._next_drop_log = 0.0

    @property
    def pending_bytes(self) -> int:
        """Frame text received and not yet handed to the writer."""
        return self._pending_bytes

    def _keep(self, received_ms: int, frame: str) -> None:
        size = len(frame)
        if self._pending and self._pending_bytes + size > self._max_pending_bytes:
            self._drop()
            return
        self._pending.append((received_ms, frame))
        self._pending_bytes += size
        if self._pending_bytes >= self._flush_bytes:
            self._wake.set()

    def _drop(self) -> None:
        self.frames_dropped += 1
        self._dropped_unlogged += 1
        now = time.monotonic()
        if now >= self._next_drop_log:
            log.warning("the disk is not keeping up: %.1f MB of frames wait to be written, so "
                        "new frames are dropped (%d since the last report, %d in all); the "
                        "recording has a gap here", self._pending_bytes / 1e6,
                        self._dropped_unlogged, self.frames_dropped)
            self._dropped_unlogged = 0
            self._next_drop_log = now + DROP_LOG_INTERVAL_S

    async def run(self, stopping: asyncio.Event) -> None:
        finished = asyncio.Event()
        flusher = asyncio.create_task(self._flush_until(finished), name="record-flusher")
        try:
            await self.feed.run(stopping)
        finally:
            finished.set()
            self._wake.set()
            await flusher  # lets a write in progress finish: one thread owns the file
            await self._flush()
            await asyncio.to_thread(self.writer.close)
            dropped = (f"; dropped {self.frames_dropped} frames while the disk was slow"
                       if self.frames_dropped else "")
            log.info("recorded %d frames in %d files%s", self.writer.frames_written,
                     len(self.writer.files), dropped)

    async def _flush_until(self, finished: asyncio.Event) -> None:
        while not finished.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_INTERVAL_S)
            self._wake.clear()
            await self._flush()

    async def _flush(self) -> None:
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        await asyncio.to_thread(self.writer.write, batch)


def run_record(options: RecordOptions) -> int:
    try:
        settings = load_settings(IngestorSettings, binance_ws_url=options.url)
    except SettingsError as exc:
        print(f"binance-alerter record: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_level, settings.log_format, service="record")
    prepare_prefix(options.prefix)
    recorder = Recorder(settings, options)
    log.info("recording %s to %s-<UTC time>%s (new file every %g MB or %g min)",
             options.url, options.prefix, SUFFIX, options.rotate_mb, options.rotate_minutes)

    async def main(_: IngestorSettings, stopping: asyncio.Event) -> None:
        await recorder.run(stopping)

    return asyncio.run(supervise("record", settings, main))
