"""Exchange frames → ticks, with no I/O so it can be tested and benchmarked alone.

A ``!miniTicker@arr`` frame carries up to ~1000 entries a second and the firehose benchmark
pushes hundreds of them per second, so the common case is one msgspec decode straight into
slim structs (only the fields used; strings coerced to floats by msgspec, in C) and one
short Python loop. Anything that does not fit the fast types (a price like ``"abc"``, an
entry missing a field, an ``E`` or a symbol out of bounds) is rare: only then is the frame
decoded a second time, generically, so that one bad entry costs only that entry and not the
999 good ones beside it.

Nothing the exchange sends may crash the parser or mislead what reads its ticks, so every
entry is held to bounds a real exchange never crosses, and an entry outside them (or with
the field not of its type) is skipped and counted by kind (``ParsedFrame.bad``):

- ``E`` (event time, ms) between 0 and ``MAX_EVENT_TIME_MS`` (2100-01-01), so that it fits
  the int64 of the bus encoding and the 16 digits of an alert id (``bad_event_time``);
  and, when the caller passes its receive clock, at most ``MAX_AHEAD_MS`` (5 min) ahead of
  it (``event_time_ahead``). The exchange stamps ``E`` before sending, so only a wrong
  local clock puts a real entry ahead, and 5 min is the classic tolerance for unsynchronised
  clocks (Kerberos'); a larger lead would mute its symbol downstream until then (later
  ticks look older and are dropped). There is no bound behind the clock: an old entry
  cannot mute anything, and ``binance-alerter replay`` serves old recordings to a live
  ingestor. The backtest passes no clock (a recording is replayed long after it was made).
- a price within ``MIN_PRICE``–``MAX_PRICE`` (1e-12–1e12, orders of magnitude beyond the
  cheapest and the dearest contract; this also refuses NaN, infinities, zero, negatives and
  subnormal dust like 1e-300) (``bad_price``);
- a symbol of 1–``MAX_SYMBOL_CHARS`` characters of ``common.schemas.SYMBOL_CHARS`` (letters,
  digits, ``_ . -``: no ``:``, blank or markup), so that an alert's id on it is one the
  gateway takes back as a cursor (``bad_symbol``);
- anything else: not an object, a field missing, another field not of its type
  (``bad_field``).

A 24 h quote volume outside 0–``MAX_QUOTE_VOLUME`` (1e15; the busiest contract trades
some 1e10 USDT a day) is treated as unknown (``None``) rather than trusted: the price is still
good. A frame nested deeper than the decoder can follow (msgspec stops at the interpreter's
recursion limit, about 1000 levels; a real frame has 3) is skipped whole (``too_deep``), and
so is a frame that is no JSON to msgspec, a lone UTF-16 surrogate escape (``"\\ud800"``)
included (``not_json`` or ``truncated``). A number too large for a float (``1e999``) is
infinite, hence a bad value of its entry only.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

import msgspec

from common.schemas import SYMBOL_CHARS, Tick

log = logging.getLogger(__name__)

USDM_CONTRACT: Final = 1

# The bounds of the module docstring.
MAX_EVENT_TIME_MS: Final = 4_102_444_800_000  # 2100-01-01T00:00:00Z
MAX_AHEAD_MS: Final = 5 * 60 * 1000
MIN_PRICE: Final = 1e-12
MAX_PRICE: Final = 1e12
MAX_QUOTE_VOLUME: Final = 1e15
MAX_SYMBOL_CHARS: Final = 64  # the symbol part of an alert id (common.schemas)
_SYMBOL: Final = re.compile(SYMBOL_CHARS)
# Symbols already seen to have that shape, so that the pattern runs once per symbol and not
# once per entry (it would cost more than the rest of the parse); cleared when this full.
MAX_KNOWN_SYMBOLS: Final = 10_000

# What a metric label says about a skipped frame, then about a skipped entry.
FRAME_KINDS: Final = ("not_json", "truncated", "binary", "wrong_shape", "too_deep")
ENTRY_KINDS: Final = ("bad_field", "bad_price", "bad_event_time", "event_time_ahead",
                      "bad_symbol")

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
# The field a failed conversion names (msgspec ends its message with "- at `$.E`") → kind.
_FIELD_KINDS: Final = {"E": "bad_event_time", "s": "bad_symbol", "c": "bad_price",
                       "p": "bad_price"}


class MalformedFrame(ValueError):
    """The whole frame is unusable; ``kind`` (one of ``FRAME_KINDS``) names why."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


class ParsedFrame(msgspec.Struct, gc=False):
    ticks: list[Tick]
    filtered: int = 0
    bad: dict[str, int] = {}  # entries skipped, by kind (ENTRY_KINDS); empty when none

    @property
    def bad_entries(self) -> int:
        return sum(self.bad.values())


class _Entry(msgspec.Struct, gc=False):
    """The only fields read; msgspec skips the rest of an entry without building it, and
    checks the bounds that do not depend on the event type or the clock, in C."""

    e: str
    E: Annotated[int, msgspec.Meta(ge=0, le=MAX_EVENT_TIME_MS)]
    s: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SYMBOL_CHARS)]
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
# A number beyond a float (1e999) is inf here, a bad value of its entry, rather than an
# error of the whole decode that would cost the good entries beside it.
_generic_decoder: Final = msgspec.json.Decoder(float_hook=float)


def is_combined(url: str) -> bool:
    """``…/stream?streams=a/b`` wraps each payload as ``{"stream", "data"}``; ``…/ws/<s>``
    sends the payload bare."""
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1] == "stream"


class FrameParser:
    def __init__(self, combined: bool) -> None:
        self.combined = combined
        self._known_symbols: set[str] = set()

    def parse(self, frame: bytes | str, received_ms: int | None = None) -> ParsedFrame:
        """Raises ``MalformedFrame`` when nothing in the frame can be trusted.

        ``received_ms`` is the receiver's clock (unix ms) when the frame arrived: entries
        more than ``MAX_AHEAD_MS`` ahead of it are skipped. None (a recording, read long
        after) checks only the absolute bounds.
        """
        latest_ms = MAX_EVENT_TIME_MS
        if received_ms is not None and received_ms + MAX_AHEAD_MS < latest_ms:
            latest_ms = received_ms + MAX_AHEAD_MS
        try:
            if self.combined:
                payload = _combined_decoder.decode(frame).data
            else:
                payload = _raw_decoder.decode(frame)
        except msgspec.ValidationError:
            return self._parse_slowly(frame, latest_ms)
        except msgspec.DecodeError as exc:
            raise _undecodable(frame, exc) from None
        except RecursionError:
            raise _too_deep() from None
        return _collect(payload if isinstance(payload, list) else [payload], latest_ms,
                        self._known_symbols)

    def _parse_slowly(self, frame: bytes | str, latest_ms: int) -> ParsedFrame:
        try:
            document = _generic_decoder.decode(frame)
        except msgspec.DecodeError as exc:  # "0:" fails the types before the syntax
            raise _undecodable(frame, exc) from None
        except RecursionError:
            raise _too_deep() from None
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
        unconverted: dict[str, int] = {}
        for item in items:
            try:
                entries.append(msgspec.convert(item, _Entry, strict=False))
            except msgspec.ValidationError as exc:
                field = str(exc).rpartition("- at `$.")[2].rstrip("`")
                kind = _FIELD_KINDS.get(field, "bad_field")
                unconverted[kind] = unconverted.get(kind, 0) + 1
        parsed = _collect(entries, latest_ms, self._known_symbols)
        bad = parsed.bad
        for kind, count in unconverted.items():
            bad[kind] = bad.get(kind, 0) + count
        return parsed


def _collect(entries: list[_Entry], latest_ms: int, known_symbols: set[str]) -> ParsedFrame:
    ticks: list[Tick] = []
    append = ticks.append
    events = _EVENTS
    min_price, max_price, max_volume = MIN_PRICE, MAX_PRICE, MAX_QUOTE_VOLUME
    filtered = bad_price = ahead = bad_symbol = 0
    # A frame holds one event type, as a rule: look it up once per run of equal types.
    last_event: str | None = None
    known, source, last_price = False, "", True
    for entry in entries:
        st = entry.st
        if st is not None and st != USDM_CONTRACT:
            filtered += 1
            continue
        if entry.e != last_event:
            last_event = entry.e
            event = events.get(last_event)
            known = event is not None
            if event is not None:
                source, last_price = event
        if not known:  # bookTicker, depthUpdate… on a combined connection: not a price
            filtered += 1
            continue
        if last_price:
            price = entry.c
            volume = entry.q
            if volume is not None and not 0.0 <= volume <= max_volume:
                volume = None
        else:
            price = entry.p
            volume = None
        # Written so that NaN fails too: every comparison with NaN is false.
        if price is None or not min_price <= price <= max_price:
            bad_price += 1
            continue
        if entry.X is not None and entry.X != _MARKET_TRADE:
            filtered += 1
            continue
        event_time = entry.E  # within 0..MAX_EVENT_TIME_MS: checked by the decoder
        if event_time > latest_ms:
            ahead += 1
            continue
        symbol = entry.s
        if symbol not in known_symbols:
            if _SYMBOL.fullmatch(symbol) is None:
                bad_symbol += 1
                continue
            if len(known_symbols) >= MAX_KNOWN_SYMBOLS:
                known_symbols.clear()
            known_symbols.add(symbol)
        append(Tick(symbol, price, event_time, source, volume))
    bad: dict[str, int] = {}
    if bad_price:
        bad["bad_price"] = bad_price
    if ahead:
        bad["event_time_ahead"] = ahead
    if bad_symbol:
        bad["bad_symbol"] = bad_symbol
    return ParsedFrame(ticks, filtered, bad)


def _too_deep() -> MalformedFrame:
    return MalformedFrame("too_deep", "nested deeper than the decoder follows (a real frame "
                          "has 3 levels)")


def _undecodable(frame: bytes | str, exc: msgspec.DecodeError) -> MalformedFrame:
    if isinstance(frame, bytes):
        try:
            frame.decode("utf-8")
        except UnicodeDecodeError:
            return MalformedFrame("binary", "not UTF-8 text")
    if "truncated" in str(exc):
        return MalformedFrame("truncated", str(exc))
    return MalformedFrame("not_json", str(exc))
