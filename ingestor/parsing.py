"""Exchange frames → ticks, with no I/O so it can be tested and benchmarked alone.

A ``!miniTicker@arr`` frame carries up to ~1000 entries a second, the trade-level feed tens
of thousands of one-trade frames a second, so the common case is one msgspec decode straight
into slim structs (only the fields used; strings coerced to floats by msgspec, in C) and one
short Python loop. Anything that does not fit the fast types (a price like ``"abc"``, an
entry missing a field, an ``E`` or a symbol out of bounds) is rare: only then is the frame
decoded a second time, generically, so that one bad entry costs only that entry and not the
999 good ones beside it.

Nothing the exchange sends may crash the parser or mislead what reads its ticks, so every
entry is held to bounds a real exchange never crosses, and an entry outside them (or with
the field not of its type) is skipped and counted by kind (``ParsedFrame.bad``); what each
event type becomes, and how entries two connections both delivered are dropped, is
``ingestor.entries``'s:

- ``E`` (event time, ms; also ``T``, a trade's or a forced order's time) between 0 and
  ``MAX_EVENT_TIME_MS`` (2100-01-01), so that it fits the int64 of the bus
  encoding and the 16 digits of an alert id (``bad_event_time``);
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
- anything else: not an object, a field missing, another field not of its type, a
  liquidation without a positive quantity or a side, a mark price without a funding rate
  within ±100 % or a next funding time (``bad_field``).

A 24 h quote volume outside 0–``MAX_QUOTE_VOLUME`` (1e15; the busiest contract trades
some 1e10 USDT a day) is treated as unknown (``None``) rather than trusted: the price is still
good. A frame nested deeper than the decoder can follow (msgspec stops at the interpreter's
recursion limit, about 1000 levels; a real frame has 3) is skipped whole (``too_deep``), and
so is a frame that is no JSON to msgspec, a lone UTF-16 surrogate escape (``"\\ud800"``)
included (``not_json`` or ``truncated``). A number too large for a float (``1e999``) is
infinite, hence a bad value of its entry only.

A reply to a request of ours (``{"result": null, "id": 1}``, ``{"error": {…}, "id": 2}``) is
no data and no malformed frame either: it comes back as ``ParsedFrame.reply``.
"""

from __future__ import annotations

import logging
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec

from ingestor.entries import (
    ENTRY_KINDS,
    FIELD_KINDS,
    MAX_AHEAD_MS,
    MAX_EVENT_TIME_MS,
    MAX_FUNDING_RATE,
    MAX_KNOWN_SYMBOLS,
    MAX_PRICE,
    MAX_QUANTITY,
    MAX_QUOTE_VOLUME,
    MAX_SYMBOL_CHARS,
    MIN_PRICE,
    USDM_CONTRACT,
    AggTrade,
    Dedupe,
    Entry,
    ParsedFrame,
    agg_trade,
    collect,
)

__all__ = ["ENTRY_KINDS", "FRAME_KINDS", "MAX_AHEAD_MS", "MAX_EVENT_TIME_MS",
           "MAX_FUNDING_RATE", "MAX_KNOWN_SYMBOLS", "MAX_PRICE", "MAX_QUANTITY",
           "MAX_QUOTE_VOLUME", "MAX_SYMBOL_CHARS", "MIN_PRICE", "USDM_CONTRACT", "Dedupe",
           "FrameParser", "MalformedFrame", "ParsedFrame", "is_combined"]

log = logging.getLogger(__name__)

# What a metric label says about a skipped frame (ENTRY_KINDS: about a skipped entry).
FRAME_KINDS: Final = ("not_json", "truncated", "binary", "wrong_shape", "too_deep")


class MalformedFrame(ValueError):
    """The whole frame is unusable; ``kind`` (one of ``FRAME_KINDS``) names why."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


class _Combined(msgspec.Struct, gc=False):
    stream: str
    data: list[Entry] | Entry


class _CombinedAggTrade(msgspec.Struct, gc=False):
    stream: str
    data: AggTrade


# strict=False is what turns the exchange's decimal strings into floats during the decode.
_raw_decoder: Final = msgspec.json.Decoder(list[Entry] | Entry, strict=False)
_combined_decoder: Final = msgspec.json.Decoder(_Combined, strict=False)
# A number beyond a float (1e999) is inf here, a bad value of its entry, rather than an
# error of the whole decode that would cost the good entries beside it.
_generic_decoder: Final = msgspec.json.Decoder(float_hook=float)
# The trade-level feed's every frame: one aggregate trade, decoded into exactly its fields.
_raw_agg_decoder: Final = msgspec.json.Decoder(AggTrade, strict=False)
_combined_agg_decoder: Final = msgspec.json.Decoder(_CombinedAggTrade, strict=False)


def is_combined(url: str) -> bool:
    """``…/stream?streams=a/b`` wraps each payload as ``{"stream", "data"}``; ``…/ws/<s>``
    sends the payload bare."""
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1] == "stream"


class FrameParser:
    """``dedupe``: drop entries not newer than the last of their kind and symbol (shared by
    the connections of one process); None (a recording, a test) keeps every entry."""

    def __init__(self, combined: bool, dedupe: Dedupe | None = None) -> None:
        self.combined = combined
        self.dedupe = dedupe
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
        # The common case first, the trade-level feed's one trade a frame; anything that
        # is not a plain aggregate trade fails this decode and takes the general path.
        try:
            trade = (_combined_agg_decoder.decode(frame).data if self.combined
                     else _raw_agg_decoder.decode(frame))
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            pass
        else:
            parsed = agg_trade(trade, latest_ms, self._known_symbols, self.dedupe)
            if parsed is not None:
                return parsed
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
        return collect(payload if isinstance(payload, list) else [payload], latest_ms,
                       self._known_symbols, self.dedupe)

    def _parse_slowly(self, frame: bytes | str, latest_ms: int) -> ParsedFrame:
        try:
            document = _generic_decoder.decode(frame)
        except msgspec.DecodeError as exc:  # "0:" fails the types before the syntax
            raise _undecodable(frame, exc) from None
        except RecursionError:
            raise _too_deep() from None
        if _is_reply(document):  # e.g. a subscription ack {"result": null, "id": 1}
            return ParsedFrame([], reply=document)
        if self.combined:
            if (not isinstance(document, dict) or "data" not in document
                    or not isinstance(document.get("stream"), str)):
                raise MalformedFrame("wrong_shape", "expected {stream, data}")
            document = document["data"]
        if isinstance(document, dict):
            if "e" not in document:
                raise MalformedFrame("wrong_shape", "object without an event type")
            items: list[Any] = [document]
        elif isinstance(document, list):
            items = document
        else:
            raise MalformedFrame("wrong_shape", f"payload is a {type(document).__name__}")
        entries: list[Entry] = []
        unconverted: dict[str, int] = {}
        for item in items:
            try:
                entries.append(msgspec.convert(item, Entry, strict=False))
            except msgspec.ValidationError as exc:
                field = str(exc).rpartition("- at `$.")[2].rstrip("`")
                kind = FIELD_KINDS.get(field, "bad_field")
                unconverted[kind] = unconverted.get(kind, 0) + 1
        parsed = collect(entries, latest_ms, self._known_symbols, self.dedupe)
        bad = parsed.bad
        for kind, count in unconverted.items():
            bad[kind] = bad.get(kind, 0) + count
        return parsed


def _is_reply(document: Any) -> bool:
    return (isinstance(document, dict) and "id" in document and "e" not in document
            and "data" not in document and ("result" in document or "error" in document))


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
