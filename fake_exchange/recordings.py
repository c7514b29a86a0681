"""Real exchange recordings as scenarios.

The public recordings are per-symbol trade streams (no all-market arrays exist), so trades
stand in for ticker prices: each source line with a trade becomes one frame. Three wrappers
are recognised from the first line: hftbacktest (`<recv ns> <json>`, gzip), cryptofeed
(header `<url> <-> <secs>`, then `<secs>: <json>`) and our own gzip JSON lines
`{"t": <recv ms>, "frame": "<raw text>"}`.
"""

from __future__ import annotations

import gzip
import logging
import math
import re
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, cast

import msgspec

from fake_exchange.scenarios import Quote

if TYPE_CHECKING:
    import os

logger = logging.getLogger(__name__)

HFTBACKTEST = "hftbacktest"
CRYPTOFEED = "cryptofeed"
OWN = "own"

_HFT_LINE = re.compile(rb"^\d+ [\[{]")
_CRYPTOFEED_LINE = re.compile(rb"^\d+(\.\d+)?: ")
# Trades carry the traded price in "p"; ticker entries (our own recordings of the all-market
# arrays) carry the last price in "c". markPrice is a different series and is left out.
_TRADE_EVENTS = frozenset({"trade", "aggTrade"})
_TICKER_EVENTS = frozenset({"24hrMiniTicker", "24hrTicker"})


class _Envelope(msgspec.Struct):
    stream: str | None = None
    data: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)  # empty when absent
    e: str | None = None


class _Event(msgspec.Struct):
    e: str | None = None
    E: int | None = None
    s: str | None = None
    p: str | None = None
    c: str | None = None
    st: int = 1


class _OwnLine(msgspec.Struct):
    t: int
    frame: str


_envelope = msgspec.json.Decoder(_Envelope)
_event = msgspec.json.Decoder(_Event)
_events = msgspec.json.Decoder(list[_Event])
_own = msgspec.json.Decoder(_OwnLine)


class RecordingQuotes(Iterator[list[Quote]]):
    """Iterates frames lazily; the counters are final once iteration ends.

    lines: source lines read (header included); frames: frames yielded; quotes: quotes
    yielded; ignored: well-formed records that carry no price we use (depth, bookTicker,
    REST snapshots, acks); malformed: lines that could not be parsed or priced.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = path
        self.lines = self.frames = self.quotes = self.ignored = self.malformed = 0
        self.format = _detect(path)
        self._it = self._read()

    def __iter__(self) -> RecordingQuotes:
        return self

    def __next__(self) -> list[Quote]:
        return next(self._it)

    def _read(self) -> Iterator[list[Quote]]:
        with _open(self.path) as f:
            for line in f:
                self.lines += 1
                raw = self._frame_text(line.rstrip(b"\r\n"))
                if raw is None:
                    continue
                try:
                    quotes = _quotes(raw)
                except (msgspec.DecodeError, ValueError):
                    self.malformed += 1
                    continue
                if not quotes:
                    self.ignored += 1
                    continue
                self.frames += 1
                self.quotes += len(quotes)
                yield quotes
        if self.malformed:
            logger.warning("%s: skipped %d malformed lines", self.path, self.malformed)

    def _frame_text(self, line: bytes) -> bytes | None:
        if not line.strip():
            return None
        if self.format == HFTBACKTEST:
            _, sep, rest = line.partition(b" ")
        elif self.format == CRYPTOFEED:
            if self.lines == 1 and b" <-> " in line:
                return None  # the connection header
            _, sep, rest = line.partition(b": ")
        else:
            try:
                return _own.decode(line).frame.encode()
            except msgspec.DecodeError:
                self.malformed += 1
                return None
        if not sep:
            self.malformed += 1
            return None
        return rest


def _quotes(raw: bytes) -> list[Quote]:
    env = _envelope.decode(raw)
    if env.data:
        payload = bytes(env.data)
    elif env.e is not None:
        payload = raw  # a raw-stream frame, not wrapped
    else:
        return []  # a REST snapshot or a subscription ack
    events = _events.decode(payload) if payload.lstrip()[:1] == b"[" else [_event.decode(payload)]
    out = []
    for ev in events:
        if ev.e in _TRADE_EVENTS:
            text = ev.p
        elif ev.e in _TICKER_EVENTS:
            text = ev.c
        else:
            continue
        if text is None or ev.E is None or not ev.s:
            raise ValueError("price event without price, time or symbol")
        price = float(text)
        if not (price > 0 and math.isfinite(price)):
            raise ValueError(f"bad price {text!r}")
        out.append(Quote(ev.s, price, ev.E, ev.st))
    return out


def _open(path: str | os.PathLike[str]) -> IO[bytes]:
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return cast("IO[bytes]", gzip.open(path, "rb"))
    return open(path, "rb")


def _detect(path: str | os.PathLike[str]) -> str:
    with _open(path) as f:
        for line in f:
            if not line.strip():
                continue
            if _HFT_LINE.match(line):
                return HFTBACKTEST
            if b" <-> " in line or _CRYPTOFEED_LINE.match(line):
                return CRYPTOFEED
            if line.lstrip().startswith(b"{"):
                return OWN
            break
    raise ValueError(f"{path}: not a recording format this replayer knows")


def recording_quotes(path: str | os.PathLike[str]) -> RecordingQuotes:
    """Frames of quotes from a recording; the returned object also counts what was skipped."""
    return RecordingQuotes(path)
