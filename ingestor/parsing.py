"""Exchange frames → ticks, with no I/O so it can be tested and benchmarked alone.

A ``!miniTicker@arr`` frame carries up to ~1000 entries a second and the firehose benchmark
pushes hundreds of them per second, so the common case is one msgspec decode straight into
slim structs (only the fields used; strings coerced to floats by msgspec, in C) and one
short Python loop. Anything that does not fit the fast types (a price like ``"abc"``, an
entry missing a field) is rare: only then is the frame decoded a second time, generically,
so that one bad entry costs only that entry and not the 999 good ones beside it.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec

from common.schemas import Tick

log = logging.getLogger(__name__)

USDM_CONTRACT: Final = 1

# Event type → (Tick.source, price is the last price ``c`` rather than ``p``). In a
# 24hrTicker ``p`` is the price *change*, so the field really depends on the event type.
_EVENTS: Final[dict[str, tuple[str, bool]]] = {
    "24hrMiniTicker": ("mini_ticker", True),
    "24hrTicker": ("ticker", True),
    "markPriceUpdate": ("mark_price", False),
    "trade": ("trade", False),
    "aggTrade": ("agg_trade", False),
}
_MARKET_TRADE: Final = "MARKET"


class MalformedFrame(ValueError):
    """The whole frame is unusable; ``kind`` names why, for a metric label."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


class ParsedFrame(msgspec.Struct, gc=False):
    ticks: list[Tick]
    filtered: int = 0
    bad_entries: int = 0


class _Entry(msgspec.Struct, gc=False):
    """The only fields read; msgspec skips the rest of an entry without building it."""

    e: str
    E: int
    s: str
    c: float | None = None
    p: float | None = None
    q: float | None = None  # 24 h quote volume in (mini) tickers; a quantity in trades
    st: int | None = None
    X: str | None = None  # trade type: insurance-fund and ADL fills are not market prices


class _Combined(msgspec.Struct, gc=False):
    stream: str
    data: list[_Entry] | _Entry


# strict=False is what turns the exchange's decimal strings into floats during the decode.
_raw_decoder: Final = msgspec.json.Decoder(list[_Entry] | _Entry, strict=False)
_combined_decoder: Final = msgspec.json.Decoder(_Combined, strict=False)
_generic_decoder: Final = msgspec.json.Decoder()


def is_combined(url: str) -> bool:
    """``…/stream?streams=a/b`` wraps each payload as ``{"stream", "data"}``; ``…/ws/<s>``
    sends the payload bare."""
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1] == "stream"


class FrameParser:
    def __init__(self, combined: bool) -> None:
        self.combined = combined

    def parse(self, frame: bytes | str) -> ParsedFrame:
        """Raises ``MalformedFrame`` when nothing in the frame can be trusted."""
        try:
            if self.combined:
                payload = _combined_decoder.decode(frame).data
            else:
                payload = _raw_decoder.decode(frame)
        except msgspec.ValidationError:
            return self._parse_slowly(frame)
        except msgspec.DecodeError as exc:
            raise _undecodable(frame, exc) from None
        return _collect(payload if isinstance(payload, list) else [payload])

    def _parse_slowly(self, frame: bytes | str) -> ParsedFrame:
        document = _generic_decoder.decode(frame)  # it decoded once already: valid JSON
        if self.combined:
            if (not isinstance(document, dict) or "data" not in document
                    or not isinstance(document.get("stream"), str)):
                raise MalformedFrame("wrong_shape", "expected {stream, data}")
            document = document["data"]
        if isinstance(document, dict):
            if "e" not in document:  # e.g. a subscription ack {"result": null, "id": 1}
                raise MalformedFrame("wrong_shape", "object without an event type")
            items: list[Any] = [document]
        elif isinstance(document, list):
            items = document
        else:
            raise MalformedFrame("wrong_shape", f"payload is a {type(document).__name__}")
        entries: list[_Entry] = []
        bad = 0
        for item in items:
            try:
                entries.append(msgspec.convert(item, _Entry, strict=False))
            except msgspec.ValidationError:
                bad += 1
        parsed = _collect(entries)
        parsed.bad_entries += bad
        return parsed


def _collect(entries: list[_Entry]) -> ParsedFrame:
    ticks: list[Tick] = []
    append = ticks.append
    events = _EVENTS
    inf = math.inf
    filtered = bad = 0
    for entry in entries:
        st = entry.st
        if st is not None and st != USDM_CONTRACT:
            filtered += 1
            continue
        event = events.get(entry.e)
        if event is None:  # bookTicker, depthUpdate… on a combined connection: not a price
            filtered += 1
            continue
        source, last_price = event
        price = entry.c if last_price else entry.p
        # Written so that NaN fails too: every comparison with NaN is false.
        if price is None or not 0.0 < price < inf:
            bad += 1
            continue
        if entry.X is not None and entry.X != _MARKET_TRADE:
            filtered += 1
            continue
        volume = entry.q if last_price else None
        if volume is not None and not 0.0 <= volume < inf:
            volume = None
        append(Tick(entry.s, price, entry.E, source, volume))
    return ParsedFrame(ticks, filtered, bad)


def _undecodable(frame: bytes | str, exc: msgspec.DecodeError) -> MalformedFrame:
    if isinstance(frame, bytes):
        try:
            frame.decode("utf-8")
        except UnicodeDecodeError:
            return MalformedFrame("binary", "not UTF-8 text")
    if "truncated" in str(exc):
        return MalformedFrame("truncated", str(exc))
    return MalformedFrame("not_json", str(exc))
