"""Decoded exchange entries → ticks: the typed shapes, the bounds, the per-entry loop, and
the de-duplication of entries that two connections both delivered.

``ingestor.parsing`` decodes a frame into ``_Entry`` structs (msgspec, in C) and hands them
to ``collect``; this module decides what each entry is, by its event type ``e``:

- ``24hrMiniTicker``, ``24hrTicker``: a PRICE tick of the last price ``c`` at ``E``, with the
  24 h quote volume ``q`` when it is within bounds;
- ``trade``: a PRICE tick of ``p`` at ``E`` (``X`` other than MARKET filtered);
- ``aggTrade``: a PRICE tick of ``p`` with the quantity ``q`` at the trade time ``T`` (which
  is what a move is timed by, not the send time ``E``), aggregate id ``a``;
- ``markPriceUpdate``: a FUNDING tick: the mark price ``p`` at ``E`` with the funding rate
  ``r`` and the next funding time ``T``. It is no price tick: the mark price is an index,
  not a trade;
- ``forceOrder``: a LIQUIDATION tick from its order ``o``: the average price ``ap``, the
  filled quantity ``z`` and the side ``S`` at the order's trade time ``T``.

A quantity out of bounds on a trade is unknown (``None``), as a bad 24 h volume is; on a
liquidation it is a bad entry (``bad_field``), as is a missing or out-of-range funding
rate, aggregate id or side, since the tick would mean nothing without it; a missing trade
time or next funding time ``T`` is a bad event time, as a bad one is.

``Dedupe`` keeps, per kind and symbol, the newest key seen: ``(T, a)`` of an aggregate
trade, ``T`` of a forced order, ``E`` of a mark price; an entry whose key is not newer is
dropped. Shared by every connection of a process, it makes a make-before-break rotation
(two connections with the same streams for a moment) duplicate-free where a duplicate
would count twice (a trade's volume, a liquidation's notional). A trade's key leads with
its time so that a replayed recording, whose times move forward on each pass but whose ids
do not, still reads as new. Tickers are not de-duplicated: a ticker seen twice says the
same price at the same time (and no volume since), which no rule counts twice, while test
feeds and replays legitimately repeat an ``E``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from common.schemas import FUNDING, LIQUIDATION, PRICE, SYMBOL_CHARS, Tick

USDM_CONTRACT: Final = 1

# The bounds of ingestor.parsing's docstring.
MAX_EVENT_TIME_MS: Final = 4_102_444_800_000  # 2100-01-01T00:00:00Z
MAX_AHEAD_MS: Final = 5 * 60 * 1000
MIN_PRICE: Final = 1e-12
MAX_PRICE: Final = 1e12
MAX_QUOTE_VOLUME: Final = 1e15
MAX_QUANTITY: Final = 1e15
MAX_FUNDING_RATE: Final = 1.0  # |r| as a fraction: 100 %, far beyond any exchange's cap
MAX_AGG_ID: Final = 2**63 - 1
MAX_SYMBOL_CHARS: Final = 64  # the symbol part of an alert id (common.schemas)
_SYMBOL: Final = re.compile(SYMBOL_CHARS)
# Symbols already seen to have that shape, so that the pattern runs once per symbol and not
# once per entry (it would cost more than the rest of the parse); cleared when this full.
# The same bound keeps a feed of garbage symbols from growing the de-duplication state.
MAX_KNOWN_SYMBOLS: Final = 10_000

ENTRY_KINDS: Final = ("bad_field", "bad_price", "bad_event_time", "event_time_ahead",
                      "bad_symbol")

# How an event type is read (the modes of ``collect``) and the source its ticks name.
_TICKER, _TRADE, _AGG, _MARK, _FORCE = range(5)
_EVENTS: Final[dict[str, tuple[int, str]]] = {
    "24hrMiniTicker": (_TICKER, "mini_ticker"),
    "24hrTicker": (_TICKER, "ticker"),
    "trade": (_TRADE, "trade"),
    "aggTrade": (_AGG, "agg_trade"),
    "markPriceUpdate": (_MARK, "mark_price"),
    "forceOrder": (_FORCE, "force_order"),
}
_MARKET_TRADE: Final = "MARKET"
_SIDES: Final = frozenset({"BUY", "SELL"})
# The field a failed conversion names (msgspec ends its message with "- at `$.E`") → kind.
FIELD_KINDS: Final = {"E": "bad_event_time", "T": "bad_event_time", "s": "bad_symbol",
                      "c": "bad_price", "p": "bad_price", "o.ap": "bad_price",
                      "o.T": "bad_event_time", "o.s": "bad_symbol"}

_Time = Annotated[int, msgspec.Meta(ge=0, le=MAX_EVENT_TIME_MS)]
_Symbol = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SYMBOL_CHARS)]


class Order(msgspec.Struct, gc=False):
    """A forced order's fields that a liquidation tick reads."""

    s: _Symbol
    S: str
    z: float
    T: _Time
    ap: float | None = None  # a missing price reads as none, a bad price, as at the top


class Entry(msgspec.Struct, gc=False):
    """The only fields read; msgspec skips the rest of an entry without building it, and
    checks the bounds that do not depend on the event type or the clock, in C. Fields that
    other event types use for something else are typed to accept both (a ticker's ``o`` is
    its open price, a book ticker's ``a`` its best ask)."""

    e: str
    E: _Time
    # A forced order names its symbol in ``o``; UNSET rather than None so that an explicit
    # null still fails the decode as a bad symbol.
    s: _Symbol | UnsetType = UNSET
    c: float | None = None
    p: float | None = None
    q: float | None = None  # 24 h quote volume in (mini) tickers; a quantity in trades
    st: int | None = None
    X: str | None = None  # trade type: insurance-fund and ADL fills are not market prices
    T: _Time | None = None  # trade time; a mark price's next funding time
    a: int | str | None = None  # aggregate trade id
    r: float | None = None  # funding rate
    o: Order | str | None = None


class AggTrade(msgspec.Struct, gc=False):
    """An aggregate trade that needs none of ``collect``'s cases: every field present, of
    its type and within its bounds, checked by msgspec while it decodes. A frame that does
    not fit (another event type, a bad field) fails this decode and takes the general
    path, so that what becomes of it is decided in one place."""

    e: Literal["aggTrade"]
    E: _Time
    s: _Symbol
    p: Annotated[float, msgspec.Meta(ge=MIN_PRICE, le=MAX_PRICE)]
    q: Annotated[float, msgspec.Meta(gt=0.0, le=MAX_QUANTITY)]
    T: _Time
    # As Entry's: an id in a string is a bad id, not an id (the check is agg_trade's).
    a: Annotated[int, msgspec.Meta(ge=0, le=MAX_AGG_ID)] | str
    # A contract type or a trade type, present, is the general path's to judge.
    st: None = None
    X: None = None


class Dedupe:
    """Per kind and symbol, the newest key taken (see the module docstring)."""

    __slots__ = ("liquidations", "marks", "trades")

    def __init__(self) -> None:
        self.trades: dict[str, tuple[int, int]] = {}
        self.liquidations: dict[str, int] = {}
        self.marks: dict[str, int] = {}

    def bound(self) -> None:
        for keys in (self.trades, self.liquidations, self.marks):
            if len(keys) >= MAX_KNOWN_SYMBOLS:
                keys.clear()


_Key = TypeVar("_Key", int, tuple[int, int])


def _newer(seen: dict[str, _Key], symbol: str, key: _Key) -> bool:
    """Whether ``key`` is newer than the last one ``seen`` for ``symbol``; if so it becomes
    the last one: ``Dedupe``'s rule, for every kind (``agg_trade`` inlines it)."""
    last = seen.get(symbol)
    if last is not None and key <= last:
        return False
    seen[symbol] = key
    return True


class ParsedFrame(msgspec.Struct, gc=False):
    ticks: list[Tick]
    filtered: int = 0
    bad: dict[str, int] = {}  # entries skipped, by kind (ENTRY_KINDS); empty when none
    duplicates: int = 0  # entries another connection delivered first (with a Dedupe)
    reply: Any = None  # a reply to a request of ours (SUBSCRIBE…), decoded; no ticks then

    @property
    def bad_entries(self) -> int:
        return sum(self.bad.values())


def collect(entries: list[Entry], latest_ms: int, known_symbols: set[str],
            dedupe: Dedupe | None) -> ParsedFrame:
    ticks: list[Tick] = []
    append = ticks.append
    events = _EVENTS
    min_price, max_price = MIN_PRICE, MAX_PRICE
    filtered = duplicates = 0
    bad: dict[str, int] = {}
    # A frame holds one event type, as a rule: look it up once per run of equal types.
    last_event: str | None = None
    mode, source = -1, ""
    for entry in entries:
        st = entry.st
        if st is not None and st != USDM_CONTRACT:
            filtered += 1
            continue
        if entry.e != last_event:
            last_event = entry.e
            mode, source = events.get(last_event, (-1, ""))
        if mode < 0:  # bookTicker, depthUpdate… on a combined connection: not ours
            filtered += 1
            continue
        kind, symbol, event_time = PRICE, entry.s, entry.E
        price: float | None
        quantity = volume = rate = side = next_funding = None
        if mode == _FORCE:
            order = entry.o
            if not isinstance(order, Order):
                _count(bad, "bad_field")
                continue
            kind, symbol, price, event_time = LIQUIDATION, order.s, order.ap, order.T
            quantity, side = order.z, order.S
            if not 0.0 < quantity <= MAX_QUANTITY or side not in _SIDES:
                _count(bad, "bad_field")
                continue
        elif mode == _TICKER:
            price, volume = entry.c, entry.q
            if volume is not None and not 0.0 <= volume <= MAX_QUOTE_VOLUME:
                volume = None
        else:
            price = entry.p
            if mode == _MARK:
                kind, rate, next_funding = FUNDING, entry.r, entry.T
                # Written so that NaN fails too: every comparison with NaN is false.
                if rate is None or not -MAX_FUNDING_RATE <= rate <= MAX_FUNDING_RATE:
                    _count(bad, "bad_field")
                    continue
                if next_funding is None:
                    _count(bad, "bad_event_time")
                    continue
            else:
                quantity = entry.q
                if quantity is not None and not 0.0 < quantity <= MAX_QUANTITY:
                    quantity = None
                if mode == _AGG:
                    if entry.T is None:
                        _count(bad, "bad_event_time")
                        continue
                    event_time = entry.T
                    agg_id = entry.a
                    # type(), not isinstance(): a JSON true is no id
                    if type(agg_id) is not int or not 0 <= agg_id <= MAX_AGG_ID:
                        _count(bad, "bad_field")
                        continue
                    trade_key = (event_time, agg_id)
        if not isinstance(symbol, str):
            _count(bad, "bad_field")
            continue
        if price is None or not min_price <= price <= max_price:
            _count(bad, "bad_price")
            continue
        if entry.X is not None and entry.X != _MARKET_TRADE:
            filtered += 1
            continue
        if event_time > latest_ms:  # within 0..MAX_EVENT_TIME_MS: checked by the decoder
            _count(bad, "event_time_ahead")
            continue
        if symbol not in known_symbols:
            if _SYMBOL.fullmatch(symbol) is None:
                _count(bad, "bad_symbol")
                continue
            if len(known_symbols) >= MAX_KNOWN_SYMBOLS:
                known_symbols.clear()
                if dedupe is not None:
                    dedupe.bound()
            known_symbols.add(symbol)
        if dedupe is not None and mode > _TRADE:  # _AGG, _MARK, _FORCE
            if mode == _AGG:
                new = _newer(dedupe.trades, symbol, trade_key)
            else:
                new = _newer(dedupe.marks if mode == _MARK else dedupe.liquidations, symbol,
                            event_time)
            if not new:
                duplicates += 1
                continue
        if kind == PRICE:
            append(Tick(symbol, price, event_time, source, volume, PRICE, quantity))
        else:
            append(Tick(symbol, price, event_time, source, None, kind, quantity,
                        side, rate, next_funding))  # type: ignore[arg-type]
    return ParsedFrame(ticks, filtered, bad, duplicates)


def agg_trade(trade: AggTrade, latest_ms: int, known_symbols: set[str],
              dedupe: Dedupe | None) -> ParsedFrame | None:
    """``collect`` of a frame of one ``AggTrade``, short: the same checks of what the
    decode left unchecked, in the same order. None: the general path decides (a field
    only it handles, a symbol not yet seen)."""
    agg_id, symbol, event_time = trade.a, trade.s, trade.T
    if type(agg_id) is not int or symbol not in known_symbols:
        return None
    if event_time > latest_ms:
        return ParsedFrame([], bad={"event_time_ahead": 1})
    if dedupe is not None:  # _newer(), inlined: a call here costs ~100 ns a trade
        key = (event_time, agg_id)
        last = dedupe.trades.get(symbol)
        if last is not None and key <= last:
            return ParsedFrame([], duplicates=1)
        dedupe.trades[symbol] = key
    return ParsedFrame([Tick(symbol, trade.p, event_time, "agg_trade", None, PRICE, trade.q)])


def _count(bad: dict[str, int], kind: str) -> None:
    bad[kind] = bad.get(kind, 0) + 1
