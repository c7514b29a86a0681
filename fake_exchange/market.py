"""The trade market of the fake: listings, trades, forced orders and mark prices on a loop.

Beside the scenario broadcaster (whose frames drive the ticker streams), a `TradeMarket`
serves what the exchange streams per event: `<symbol>@aggTrade`, `!forceOrder@arr` and
`!markPrice@arr@1s` / `!markPrice@arr`, for the symbols its board lists and trades. Each
tick of its loop (10 ms by default) makes that tick's trades, renders each message once,
and hands every connection the list of its messages at once, so 20,000 trades a second cost
one socket write per connection per tick, not one per trade. The control API scripts it:
listings and delistings, jumps, liquidation cascades, funding extremes, the trade rate.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec

from fake_exchange.frames import AGG_TRADE, FORCE_ORDER, MARK_PRICE, StreamSpec, decimals_for
from fake_exchange.liquidations import ForceOrders, cascade_orders, render_force_order
from fake_exchange.listings import DELISTED, TRADING, Board, Listing, listing
from fake_exchange.rest import Rest
from fake_exchange.trades import TradeTapes, render_agg_trade

if TYPE_CHECKING:
    from fake_exchange.clients import Client
    from fake_exchange.scenarios import Quote

logger = logging.getLogger(__name__)

FORCE_STREAM: Final = "!forceOrder@arr"
MARK_STREAMS: Final = ("!markPrice@arr@1s", "!markPrice@arr")  # every 1 s, every 3 s
FUNDING_PERIOD_MS: Final = 8 * 3_600_000  # funding at 00:00, 08:00, 16:00 UTC
DEFAULT_FUNDING_RATE: Final = 0.0001
MAX_TRADES_PER_S: Final = 1_000_000


def next_funding_ms(now_ms: int) -> int:
    return (now_ms // FUNDING_PERIOD_MS + 1) * FUNDING_PERIOD_MS


class Outlet(Protocol):
    """What the market needs of the server: its clients and their send queues."""

    @property
    def stalled(self) -> bool: ...
    @property
    def subs_version(self) -> int: ...
    def market_clients(self) -> Iterable[Client]: ...
    def offer_batch(self, client: Client, batch: list[bytes]) -> None: ...


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class TradeMarket:
    """Listings and the event streams of their trading. `trades_per_s` None means about one
    background trade per tradable symbol per second."""

    def __init__(self, listings: Iterable[Listing], *, trades_per_s: float | None = None,
                 tick_s: float = 0.01, seed: int = 0, weight_limit: int = 2400) -> None:
        if not 0.001 <= tick_s <= 1.0:
            raise ValueError("0.001 <= tick_s <= 1 required")
        self.board = Board(listings)
        self.rest = Rest(self.board, weight_limit=weight_limit)
        self.tapes = TradeTapes(seed=seed)
        self.force = ForceOrders()
        self.tick_s = tick_s
        self._funding: dict[str, float] = {}
        self._tradable: tuple[int, list[Listing]] = (-1, [])
        self.trades_per_s = float(len(self.tradable()) if trades_per_s is None else trades_per_s)
        self._check_rate(self.trades_per_s)
        self._index: tuple[int, dict[str, list[Client]]] = (-1, {})
        self._prefixes: dict[str, bytes] = {}
        self._names: dict[str, str] = {}
        self._recent: deque[tuple[float, int]] = deque()
        self._last_mark_s = 0
        self.ticks = 0
        self.late_ticks = 0
        self.messages_sent = 0
        self.trade_messages = 0
        self.mark_frames = 0
        self.undelivered_ticks = 0
        self.failed = False

    # -- what the market serves ------------------------------------------------------------

    @staticmethod
    def serves(spec: StreamSpec) -> bool:
        """The specs the scenario broadcaster leaves to the market."""
        return spec.kind in (AGG_TRADE, FORCE_ORDER, MARK_PRICE)

    def tradable(self) -> list[Listing]:
        if self._tradable[0] != self.board.version:
            items = self.board.tradable()
            self.tapes.sync(items)
            self._tradable = (self.board.version, items)
        return self._tradable[1]

    def follow(self, frame: Iterable[Quote]) -> None:
        """Scenario prices become the reference of the listed symbols' trades."""
        for q in frame:
            self.tapes.follow(q.symbol, q.price)

    # -- scripting (the control API) --------------------------------------------------------

    def list_symbol(self, symbol: str, price: float) -> Listing:
        item = self.board.add(listing(symbol, price, onboard_ms=_now_ms()))
        self.tradable()
        return item

    def delist(self, symbol: str) -> Listing:
        item = self.board.get(symbol)
        if item is None or not item.trading:
            raise ValueError(f"{symbol!r} is not a trading symbol")
        self.force.drop(symbol)
        return self.board.set_status(symbol, DELISTED)

    def set_status(self, symbol: str, status: str) -> Listing:
        """Any exchangeInfo status; only TRADING contracts trade and have mark prices."""
        item = self.board.set_status(symbol, status)
        if not item.trading:
            self.force.drop(symbol)
        self.tradable()
        return item

    def _trading(self, symbol: str) -> Listing:
        item = self.board.get(symbol)
        if item is None or item.status != TRADING:
            raise ValueError(f"{symbol!r} is not a trading symbol")
        self.tradable()
        return item

    async def jump(self, symbol: str, pct: float, over_ms: int,
                   qty_factor: float = 10.0) -> dict[str, Any]:
        """Walk `symbol` by `pct` % over `over_ms` and wait for the move's last trade."""
        self._trading(symbol)
        if not 0 <= over_ms <= 60_000:
            raise ValueError(f"over_ms must be 0 to 60000, got {over_ms!r}")
        if not (math.isfinite(qty_factor) and 0 < qty_factor <= 10_000):
            raise ValueError(f"qty_factor must be in (0, 10000], got {qty_factor!r}")
        jump = self.tapes.jump(symbol, pct, over_ms, qty_factor)
        return await jump.done

    def cascade(self, symbol: str, side: str, notional: float, orders: int) -> dict[str, Any]:
        item = self._trading(symbol)
        price = self.tapes.price(symbol) or item.price
        start = _now_ms()
        scheduled = cascade_orders(symbol, side, notional, orders, price,
                                   decimals_for(item.price), item.quantity_precision, start)
        self.force.schedule(scheduled)
        total = sum(float(q) * float(p) for _, _, q, p, _ in scheduled)
        return {"symbol": symbol, "side": side, "orders": len(scheduled),
                "notional": round(total, 2), "first_ms": scheduled[0][4],
                "last_ms": scheduled[-1][4],
                "schedule": [{"T": t, "q": q, "p": p} for _, _, q, p, t in scheduled]}

    def set_funding(self, symbol: str, rate: float) -> dict[str, Any]:
        self._trading(symbol)
        if not (math.isfinite(rate) and abs(rate) < 1):
            raise ValueError(f"rate must be a fraction in (-1, 1), got {rate!r}")
        self._funding[symbol] = rate
        return {"symbol": symbol, "rate": f"{rate:.8f}", "next_funding_ms":
                next_funding_ms(_now_ms())}

    @staticmethod
    def _check_rate(rate: float) -> None:
        if not (math.isfinite(rate) and 0 <= rate <= MAX_TRADES_PER_S):
            raise ValueError(f"trades_per_s must be 0 to {MAX_TRADES_PER_S}, got {rate!r}")

    def set_rate(self, trades_per_s: float) -> None:
        self._check_rate(trades_per_s)
        self.trades_per_s = trades_per_s
        self._recent.clear()

    def measured_rate(self) -> float:
        """Trades generated per second over the last few seconds of the loop."""
        if len(self._recent) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._recent[0], self._recent[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def stats(self) -> dict[str, Any]:
        return {
            "listed": len(self.board), "tradable": len(self.tradable()),
            "board_version": self.board.version, "trades_per_s": self.trades_per_s,
            "measured_trades_per_s": round(self.measured_rate(), 1),
            "trades_generated": self.tapes.generated, "trade_messages": self.trade_messages,
            "market_messages_sent": self.messages_sent, "mark_price_frames": self.mark_frames,
            "market_ticks": self.ticks, "late_ticks": self.late_ticks,
            "undelivered_ticks": self.undelivered_ticks, "market_failed": self.failed,
            "funding_overrides": {s: f"{r:.8f}" for s, r in self._funding.items()},
            **self.force.stats(), **self.rest.stats(),
        }

    # -- the loop --------------------------------------------------------------------------

    async def run(self, outlet: Outlet) -> None:
        clock = asyncio.get_running_loop().time
        last = next_at = clock()
        try:
            while True:
                next_at += self.tick_s
                delay = next_at - clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -5 * self.tick_s:
                    self.late_ticks += 1
                    next_at = clock()  # fell behind: do not burst to catch up
                now = clock()
                self._tick(outlet, min(1.0, now - last), now)
                last = now
        except Exception:
            # Logged here: the server only cancels this task, it never reads its result.
            logger.exception("the trade market failed; it stops trading")
            self.failed = True
        finally:
            self.tapes.cancel_jumps()

    def _tick(self, outlet: Outlet, dt_s: float, now: float) -> None:
        now_ms = _now_ms()
        tradable = self.tradable()
        trades = self.tapes.tick(tradable, self.trades_per_s, dt_s, now_ms)
        orders = [o for o in self.force.tick(now_ms) if self._is_trading(o[0])]
        second = now_ms // 1000
        mark_streams: tuple[str, ...] = ()
        if second > self._last_mark_s:
            self._last_mark_s = second
            mark_streams = MARK_STREAMS[: 1 if second % 3 else 2]
        self.ticks += 1
        self._recent.append((now, self.tapes.generated))
        while len(self._recent) > 2 and now - self._recent[0][0] > 3.0:
            self._recent.popleft()
        if outlet.stalled:
            self.undelivered_ticks += 1
            return
        index = self._subscribers(outlet)
        if not index:
            return
        marks: list[tuple[str, bytes]] = []
        if any(s in index for s in mark_streams):  # rendered only for someone listening
            payload = self._marks(tradable, second * 1000)
            marks = [(s, payload) for s in mark_streams]
            self.mark_frames += 1
        batches: dict[Client, list[bytes]] = {}
        for trade in trades:
            stream = self._names.get(trade[0]) or self._name(trade[0])
            subscribers = index.get(stream)
            if subscribers:
                self._add(batches, subscribers, stream, render_agg_trade(trade, now_ms))
                self.trade_messages += 1
        for order in orders:
            subscribers = index.get(FORCE_STREAM)
            if subscribers:
                self._add(batches, subscribers, FORCE_STREAM, render_force_order(order, now_ms))
        for stream, payload in marks:
            subscribers = index.get(stream)
            if subscribers:
                self._add(batches, subscribers, stream, payload)
        for client, batch in batches.items():
            self.messages_sent += len(batch)
            outlet.offer_batch(client, batch)

    def _is_trading(self, symbol: str) -> bool:
        item = self.board.get(symbol)
        return item is not None and item.trading

    def _name(self, symbol: str) -> str:
        name = self._names[symbol] = f"{symbol.lower()}@aggTrade"
        return name

    def _add(self, batches: dict[Client, list[bytes]], subscribers: list[Client], stream: str,
             payload: bytes) -> None:
        wrapped: bytes | None = None
        for client in subscribers:
            if client.route.combined:
                if wrapped is None:
                    prefix = self._prefixes.get(stream)
                    if prefix is None:
                        prefix = b'{"stream":' + msgspec.json.encode(stream) + b',"data":'
                        self._prefixes[stream] = prefix
                    wrapped = prefix + payload + b"}"
                message = wrapped
            else:
                message = payload
            batch = batches.get(client)
            if batch is None:
                batches[client] = [message]
            else:
                batch.append(message)

    def _subscribers(self, outlet: Outlet) -> dict[str, list[Client]]:
        """Stream name → the market connections listening to it, rebuilt when any
        connection's subscriptions change."""
        version = outlet.subs_version
        if self._index[0] != version:
            index: dict[str, list[Client]] = {}
            for client in outlet.market_clients():
                for stream, spec in client.subs.items():
                    if spec is not None and self.serves(spec):
                        index.setdefault(stream, []).append(client)
            self._index = (version, index)
        return self._index[1]

    def _marks(self, tradable: list[Listing], event_ms: int) -> bytes:
        funding_at = next_funding_ms(event_ms)
        entries = []
        for item in tradable:
            symbol = item.symbol
            mark = self.tapes.price(symbol) or item.price
            fmt = f".{item.price_precision}f"
            index = format(mark * 0.9998, fmt)
            rate = self._funding.get(symbol, DEFAULT_FUNDING_RATE)
            entries.append(
                f'{{"e":"markPriceUpdate","E":{event_ms},"s":"{symbol}",'
                f'"p":"{format(mark, fmt)}","P":"{index}",'
                f'"i":"{index}","r":"{rate:.8f}","T":{funding_at}}}')
        return ("[" + ",".join(entries) + "]").encode()
