"""Trades of the fake's trade market: one tape per symbol, made once and sent to everyone.

A trade is generated once, with its aggregate id `a` (strictly increasing per symbol) and its
trade time `T`, and rendered once per tick for every connection subscribed to its symbol: two
connections of a client rotating make-before-break see the same trade with the same `a` and
can deduplicate by it. Background trades wander a few hundredths of a percent around each
symbol's reference price, never enough to move a detector; a scripted jump is a burst of
heavy trades walking the price to its target over a set time.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fake_exchange.listings import Listing

logger = logging.getLogger(__name__)

NOISE = 0.0002  # background trades stay within ±0.02 % of the reference price


class _Tape:
    __slots__ = ("agg_id", "jump", "jumped", "pfmt", "price", "qfmt", "qstep", "ref", "scn",
                 "trade_id")

    def __init__(self, item: Listing) -> None:
        self.ref = item.price
        self.price = item.price
        self.agg_id = 0
        self.trade_id = 0
        self.pfmt = f".{item.price_precision}f"
        qp = item.quantity_precision
        self.qfmt = f".{qp}f"
        self.qstep = 10.0**-qp
        self.jump: Jump | None = None
        self.jumped = False  # a scripted move put the price where the scenario never was
        self.scn: float | None = None  # the scenario's last price of the symbol


@dataclass(slots=True)
class Jump:
    """A scripted move: trades walk from the price at the start to `target` in `over_ms`."""

    symbol: str
    target: float
    over_ms: int
    qty_factor: float
    done: asyncio.Future[dict[str, Any]]
    start_ms: int | None = None
    from_price: float | None = None
    path: list[tuple[int, str]] = field(default_factory=list)


# (symbol, agg id, price text, quantity text, first trade id, last trade id, T, buyer maker)
Trade = tuple[str, int, str, str, int, int, int, bool]


def render_agg_trade(trade: Trade, event_ms: int) -> bytes:
    s, a, p, q, f, last, t, m = trade
    return (f'{{"e":"aggTrade","E":{event_ms},"s":"{s}","a":{a},"p":"{p}","q":"{q}",'
            f'"f":{f},"l":{last},"T":{t},"m":{"true" if m else "false"}}}').encode()


class TradeTapes:
    """Every symbol's tape; `tick` makes the trades of one tick of the market loop."""

    def __init__(self, *, seed: int = 0) -> None:
        self._tapes: dict[str, _Tape] = {}
        self._rng = random.Random(seed)
        self._cursor = 0
        self._carry = 0.0
        self._jumping: dict[str, _Tape] = {}
        self.generated = 0

    def sync(self, tradable: list[Listing]) -> None:
        """Know every tradable listing; a relisted symbol keeps its tape (and its ids)."""
        for item in tradable:
            if item.symbol not in self._tapes:
                self._tapes[item.symbol] = _Tape(item)

    def price(self, symbol: str) -> float | None:
        tape = self._tapes.get(symbol)
        return None if tape is None else tape.price

    def follow(self, symbol: str, price: float) -> None:
        """Move a symbol's reference as the scenario moves it: to its first price, then by
        each change in proportion, so that a scripted jump's offset stays (a jump in progress
        is not disturbed)."""
        tape = self._tapes.get(symbol)
        if tape is None or not (price > 0 and math.isfinite(price)):
            return
        if tape.jump is None:
            if tape.scn is not None:
                tape.ref *= price / tape.scn
            elif not tape.jumped:
                tape.ref = price
        tape.scn = price

    def jump(self, symbol: str, pct: float, over_ms: int, qty_factor: float) -> Jump:
        tape = self._tapes.get(symbol)
        if tape is None:
            raise ValueError(f"{symbol!r} is not a trading symbol")
        if tape.jump is not None:
            raise ValueError(f"{symbol} is already jumping")
        if not (math.isfinite(pct) and -90 <= pct <= 1000 and pct != 0):
            raise ValueError(f"pct must be a number in [-90, 1000] other than 0, got {pct!r}")
        loop = asyncio.get_running_loop()
        tape.jump = Jump(symbol, tape.ref * (1 + pct / 100), over_ms, qty_factor,
                         loop.create_future())
        self._jumping[symbol] = tape
        tape.jumped = True
        return tape.jump

    def tick(self, tradable: list[Listing], rate_per_s: float, dt_s: float,
             now_ms: int) -> list[Trade]:
        """The trades of one tick: jumps first, then `rate_per_s × dt_s` background trades
        spread round-robin over `tradable` (the fraction carries to the next tick)."""
        out: list[Trade] = []
        for symbol, tape in list(self._jumping.items()):
            self._jump_step(symbol, tape, now_ms, out)
        n_syms = len(tradable)
        self._carry += rate_per_s * dt_s
        n = int(self._carry)
        self._carry -= n
        if n_syms == 0:
            self._carry = 0.0
            n = 0
        rng = self._rng
        for _ in range(n):
            self._cursor = (self._cursor + 1) % n_syms
            symbol = tradable[self._cursor].symbol
            tape = self._tapes[symbol]
            price = tape.ref * (1.0 + NOISE * (2.0 * rng.random() - 1.0))
            notional = 50.0 + rng.random() * 4950.0
            out.append(self._trade(symbol, tape, price, notional, now_ms, rng.random() < 0.5))
        self.generated += len(out)
        return out

    def _trade(self, symbol: str, tape: _Tape, price: float, notional: float, now_ms: int,
               maker: bool) -> Trade:
        tape.price = price
        tape.agg_id += 1
        fills = 1 + (tape.agg_id % 3)
        first = tape.trade_id + 1
        tape.trade_id += fills
        qty = max(tape.qstep, notional / price)
        return (symbol, tape.agg_id, format(price, tape.pfmt), format(qty, tape.qfmt), first,
                tape.trade_id, now_ms, maker)

    def _jump_step(self, symbol: str, tape: _Tape, now_ms: int, out: list[Trade]) -> None:
        jump = tape.jump
        assert jump is not None
        if jump.start_ms is None:
            jump.start_ms, jump.from_price = now_ms, tape.ref
        assert jump.from_price is not None
        elapsed = now_ms - jump.start_ms
        frac = 1.0 if jump.over_ms <= 0 else min(1.0, elapsed / jump.over_ms)
        price = jump.from_price + (jump.target - jump.from_price) * frac
        tape.ref = price
        notional = 5000.0 * jump.qty_factor
        trade = self._trade(symbol, tape, price, notional, now_ms, jump.target < jump.from_price)
        out.append(trade)
        jump.path.append((now_ms, trade[2]))
        if frac >= 1.0:
            tape.jump = None
            del self._jumping[symbol]
            if not jump.done.done():
                jump.done.set_result({
                    "symbol": symbol, "from_price": format(jump.from_price, tape.pfmt),
                    "to_price": trade[2], "first_trade_ms": jump.start_ms,
                    "first_past_ms": now_ms, "trades": len(jump.path),
                    "path": [[t, p] for t, p in jump.path]})

    def cancel_jumps(self) -> None:
        for tape in self._jumping.values():
            if tape.jump is not None and not tape.jump.done.done():
                tape.jump.done.cancel()
            tape.jump = None
        self._jumping.clear()
