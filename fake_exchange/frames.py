"""Binance USDⓈ-M market-stream frames, rendered by hand.

Benchmarks push a few hundred thousand quotes a second through the fake, so each entry is
one f-string with cached per-symbol pieces rather than a dict passed to a JSON encoder, and
the server renders each frame once per stream shape, not once per client.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from fake_exchange.scenarios import Quote

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger(__name__)

MINI_TICKER = "miniTicker"
TICKER = "ticker"
MARK_PRICE = "markPrice"
AGG_TRADE = "aggTrade"
TRADE = "trade"
FORCE_ORDER = "forceOrder"

_ALL_MARKET = {
    "!miniTicker@arr": MINI_TICKER,
    "!ticker@arr": TICKER,
    "!markPrice@arr": MARK_PRICE,
    "!markPrice@arr@1s": MARK_PRICE,
    "!forceOrder@arr": FORCE_ORDER,  # only a trade market (fake_exchange.market) fills it
}
_PER_SYMBOL = re.compile(r"^([a-z0-9_]+)@(aggTrade|trade)$")
_DAY_MS = 86_400_000
_FUNDING_MS = 8 * 3_600_000

# The first five break a frame or an entry's syntax; the last four are hostile values in
# well-formed JSON, each outside a bound that a real exchange never crosses.
MALFORMED_KINDS = ("not_json", "truncated", "bad_price", "wrong_shape", "binary",
                   "tiny_price", "huge_event_time", "future_event_time", "too_deep")
HOSTILE_DEPTH = 100_000  # past any JSON decoder's recursion limit
_PRICE_TEXT = {"bad_price": b"abc", "tiny_price": b"1e-300"}
_EVENT_TIME = re.compile(rb'"E":-?\d+')


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """What a stream name asks for; the render cache key (two names may share a payload)."""

    kind: str
    symbol: str | None = None  # per-symbol streams only


def parse_stream(stream: str) -> StreamSpec | None:
    """None for a stream the fake does not produce (it is accepted but stays silent)."""
    kind = _ALL_MARKET.get(stream)
    if kind is not None:
        return StreamSpec(kind)
    m = _PER_SYMBOL.match(stream)
    if m is None:
        return None
    return StreamSpec(m.group(2), m.group(1).upper())


def decimals_for(price: float) -> int:
    """About 8 significant digits with a fixed scale per symbol, like real tick sizes
    (a fixed scale keeps trailing zeros, "61800.300", as the exchange does)."""
    if price <= 0 or not math.isfinite(price):
        return 8
    return min(12, max(1, 8 - (math.floor(math.log10(price)) + 1)))


class _Sym:
    __slots__ = ("c", "h", "h_s", "l", "l_s", "n", "o", "o_s", "ps", "qv", "spec", "st")

    def __init__(self, q: Quote) -> None:
        self.spec = f".{decimals_for(q.price)}f"
        self.o = q.price
        self.o_s = format(q.price, self.spec)
        self.h = self.l = q.price
        self.h_s = self.l_s = self.o_s
        self.c = self.o_s
        self.n = 0
        self.qv = 0.0
        self.st = q.contract_type
        self.ps = q.symbol.split("_", 1)[0]


class Renderer:
    """Keeps the per-symbol session stats (open/high/low/volume) the ticker streams carry."""

    def __init__(self) -> None:
        self._syms: dict[str, _Sym] = {}

    def apply(self, frame: Sequence[Quote]) -> None:
        """Fold one frame into the stats; call once per frame, before rendering it."""
        syms = self._syms
        for q in frame:
            s = syms.get(q.symbol)
            if s is None:
                s = syms[q.symbol] = _Sym(q)
            p = q.price
            s.c = format(p, s.spec)
            if p > s.h:
                s.h, s.h_s = p, s.c
            elif p < s.l:
                s.l, s.l_s = p, s.c
            s.n += 1
            s.qv += p * 3.0

    def payload(
        self, spec: StreamSpec, frame: Sequence[Quote], event_ms: int | None = None
    ) -> bytes | None:
        """The frame as `spec`'s payload, or None when it has nothing for that stream.

        `event_ms` replaces every entry's event time (wall-clock mode).
        """
        if spec.symbol is not None:
            q = next((q for q in reversed(frame) if q.symbol == spec.symbol), None)
            if q is None:
                return None
            return self._trade(spec.kind, q, event_ms).encode()
        entry = {MINI_TICKER: self._mini, TICKER: self._ticker,
                 MARK_PRICE: self._mark}.get(spec.kind)
        if not frame or entry is None:
            return None
        return ("[" + ",".join([entry(q, event_ms) for q in frame]) + "]").encode()

    def ensure(self, quotes: Sequence[Quote]) -> None:
        """Know these symbols without counting them as traded (for out-of-band messages)."""
        for q in quotes:
            if q.symbol not in self._syms:
                self._syms[q.symbol] = _Sym(q)

    def _mini(self, q: Quote, event_ms: int | None) -> str:
        s = self._syms[q.symbol]
        e = q.event_time_ms if event_ms is None else event_ms
        return (
            f'{{"e":"24hrMiniTicker","E":{e},"s":"{q.symbol}","c":"{s.c}","o":"{s.o_s}",'
            f'"h":"{s.h_s}","l":"{s.l_s}","v":"{s.n * 3}","q":"{int(s.qv)}",'
            f'"st":{s.st},"ps":"{s.ps}"}}'
        )

    def _ticker(self, q: Quote, event_ms: int | None) -> str:
        s = self._syms[q.symbol]
        e = q.event_time_ms if event_ms is None else event_ms
        change = q.price - s.o
        pct = change / s.o * 100.0 if s.o else 0.0
        avg = (s.h + s.l) / 2.0
        first_id = 1_000_000
        return (
            f'{{"e":"24hrTicker","E":{e},"s":"{q.symbol}","p":"{change:{s.spec}}",'
            f'"P":"{pct:.3f}","w":"{avg:{s.spec}}","c":"{s.c}","Q":"3","o":"{s.o_s}",'
            f'"h":"{s.h_s}","l":"{s.l_s}","v":"{s.n * 3}","q":"{int(s.qv)}",'
            f'"O":{e - _DAY_MS},"C":{e},"F":{first_id},"L":{first_id + s.n - 1},"n":{s.n},'
            f'"st":{s.st},"ps":"{s.ps}"}}'
        )

    def _mark(self, q: Quote, event_ms: int | None) -> str:
        s = self._syms[q.symbol]
        e = q.event_time_ms if event_ms is None else event_ms
        funding = (e // _FUNDING_MS + 1) * _FUNDING_MS
        return (
            f'{{"e":"markPriceUpdate","E":{e},"s":"{q.symbol}","p":"{s.c}","ap":"{s.c}",'
            f'"P":"{s.c}","i":"{s.c}","r":"0.00010000","T":{funding},'
            f'"st":{s.st},"ps":"{s.ps}"}}'
        )

    def _trade(self, kind: str, q: Quote, event_ms: int | None) -> str:
        s = self._syms[q.symbol]
        e = q.event_time_ms if event_ms is None else event_ms
        if kind == AGG_TRADE:
            return (
                f'{{"e":"aggTrade","E":{e},"a":{s.n},"s":"{q.symbol}","p":"{s.c}","q":"3",'
                f'"f":{s.n},"l":{s.n},"T":{e},"m":false}}'
            )
        return (
            f'{{"e":"trade","E":{e},"T":{e},"s":"{q.symbol}","t":{s.n},"p":"{s.c}",'
            f'"q":"3","X":"MARKET","m":false}}'
        )


def combined(stream: str, payload: bytes) -> bytes:
    """The combined-stream wrapper; the stream name is JSON-escaped since clients choose it."""
    return b'{"stream":' + msgspec.json.encode(stream) + b',"data":' + payload + b"}"


def restamp(message: bytes, rendered_ms: int, sent_ms: int) -> bytes:
    """``message`` rendered with event time ``rendered_ms``, stamped ``sent_ms`` instead.

    Every field that carries the event time itself (``E``, a ticker's ``C``, a trade's
    ``T``) is a bare integer followed by a comma, which no other field of ours matches.
    """
    return message.replace(b":%d," % rendered_ms, b":%d," % sent_ms)


def malformed_sample(last_frame: Sequence[Quote]) -> list[Quote]:
    """Entries for a malformed frame to hide its bad one among: up to three USDⓈ-M quotes of
    the last frame sent, padded to two with made-up symbols."""
    usdm = [q for q in last_frame if q.contract_type == 1][:3]
    t = usdm[0].event_time_ms if usdm else time.time_ns() // 1_000_000
    pads = [Quote(f"ZZPAD{i}USDT", 1.0, t) for i in range(2 - len(usdm))]
    return usdm + pads


def malformed(
    kind: str,
    spec: StreamSpec,
    stream: str,
    *,
    is_combined: bool,
    renderer: Renderer,
    sample: Sequence[Quote],
) -> tuple[bytes, bool]:
    """One bad message for a client of this shape: (bytes, sent as text?).

    `sample` supplies real-looking entries (at least two) so "bad_price" can hide one bad
    entry among valid ones, the case a consumer that parses the whole frame at once gets wrong.
    The hostile kinds change the last entry the same way: a price of 1e-300
    ("tiny_price"), an event time of 2**64 ("huge_event_time") or a day ahead of the wall
    clock ("future_event_time"), an extra field nested HOSTILE_DEPTH levels ("too_deep").
    """
    if kind not in MALFORMED_KINDS:
        raise ValueError(f"unknown malformed kind {kind!r}; expected one of {MALFORMED_KINDS}")
    if kind == "not_json":
        return b"this is {not json", True
    if kind == "binary":
        return b"\x00\xff\x8bbinary-garbage\x00", False
    if kind == "wrong_shape":
        if is_combined:
            return b'{"stream":' + msgspec.json.encode(stream) + b"}", True
        return b'{"foo":1}', True
    if spec.symbol is not None:
        t = sample[0].event_time_ms if sample else 0
        sample = [Quote(spec.symbol, 1.0, t)]
    renderer.ensure(sample)
    valid = renderer.payload(spec, sample) or renderer.payload(StreamSpec(MINI_TICKER), sample)
    assert valid is not None  # sample is never empty
    if kind in _PRICE_TEXT:
        field = b'"c":"' if spec.kind in (MINI_TICKER, TICKER) else b'"p":"'
        start = valid.rfind(field) + len(field)  # the last entry's price
        end = valid.index(b'"', start)
        valid = valid[:start] + _PRICE_TEXT[kind] + valid[end:]
    elif kind in ("huge_event_time", "future_event_time", "too_deep"):
        last = list(_EVENT_TIME.finditer(valid))[-1]  # the last entry's event time
        if kind == "too_deep":
            value = b'"x":' + b"[" * HOSTILE_DEPTH + b"]" * HOSTILE_DEPTH + b"," + last[0]
        else:
            e = 2**64 if kind == "huge_event_time" else time.time_ns() // 1_000_000 + _DAY_MS
            value = b'"E":%d' % e
        valid = valid[: last.start()] + value + valid[last.end() :]
    msg = combined(stream, valid) if is_combined else valid
    if kind == "truncated":
        msg = msg[: len(msg) // 2]
    return msg, True
