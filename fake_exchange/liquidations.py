"""Forced orders (`!forceOrder@arr`) with the exchange's throttle: at most the latest order
per symbol per second.

The exchange pushes, for each symbol, only the latest liquidation of each 1000 ms: an order
that a newer one of the same symbol overtakes within the second is never sent, which is
why a consumer's sums are lower bounds. A scripted cascade spaces its orders just over a
second apart so that every one of them arrives.
"""

from __future__ import annotations

import heapq
import logging
import math
from typing import Any, Final

logger = logging.getLogger(__name__)

THROTTLE_MS: Final = 1000
CASCADE_SPACING_MS: Final = THROTTLE_MS + 10
SIDES: Final = ("SELL", "BUY")
MAX_ORDERS: Final = 600

# (symbol, side, quantity text, price text, trade time ms)
ForceOrder = tuple[str, str, str, str, int]


def render_force_order(order: ForceOrder, event_ms: int) -> bytes:
    s, side, q, p, t = order
    return (f'{{"e":"forceOrder","E":{event_ms},"o":{{"s":"{s}","S":"{side}","o":"LIMIT",'
            f'"f":"IOC","q":"{q}","p":"{p}","ap":"{p}","X":"FILLED","l":"{q}","z":"{q}",'
            f'"T":{t}}}}}').encode()


def cascade_orders(symbol: str, side: str, notional: float, orders: int, price: float,
                   price_decimals: int, qty_decimals: int, start_ms: int) -> list[ForceOrder]:
    """`orders` forced orders on `side` whose price × quantity sums to at least `notional`,
    each priced a little further into the move (SELL: longs liquidated, lower and lower)."""
    if side not in SIDES:
        raise ValueError(f"side must be SELL or BUY, got {side!r}")
    if not (math.isfinite(notional) and 0 < notional <= 1e12):
        raise ValueError(f"notional must be a number in (0, 1e12], got {notional!r}")
    if not 1 <= orders <= MAX_ORDERS:
        raise ValueError(f"orders must be 1 to {MAX_ORDERS}, got {orders!r}")
    step = 10.0**-qty_decimals
    sign = -1.0 if side == "SELL" else 1.0
    out: list[ForceOrder] = []
    for k in range(orders):
        p = float(format(price * (1.0 + sign * 0.001 * k), f".{price_decimals}f")) or price
        units = math.ceil(notional / orders / p / step - 1e-9)
        q = max(1, units) * step
        out.append((symbol, side, format(q, f".{qty_decimals}f"),
                    format(p, f".{price_decimals}f"), start_ms + k * CASCADE_SPACING_MS))
    return out


class ForceOrders:
    """Scheduled forced orders, released through the per-symbol throttle."""

    def __init__(self) -> None:
        self._due: list[tuple[int, int, ForceOrder]] = []
        self._pending: dict[str, ForceOrder] = {}
        self._last_sent: dict[str, int] = {}
        self._seq = 0
        self.scheduled = 0
        self.sent = 0
        self.superseded = 0
        self.dropped = 0

    def schedule(self, orders: list[ForceOrder]) -> None:
        for order in orders:
            self._seq += 1
            heapq.heappush(self._due, (order[4], self._seq, order))
        self.scheduled += len(orders)

    def drop(self, symbol: str) -> None:
        """Forget a delisted symbol's orders: nothing of it is sent any more."""
        kept = [d for d in self._due if d[2][0] != symbol]
        self.dropped += len(self._due) - len(kept) + (symbol in self._pending)
        self._due = kept
        heapq.heapify(self._due)
        self._pending.pop(symbol, None)

    def tick(self, now_ms: int) -> list[ForceOrder]:
        """The orders to send now: the latest due order of each symbol whose last one went
        out at least a second ago."""
        due = self._due
        while due and due[0][0] <= now_ms:
            order = heapq.heappop(due)[2]
            if order[0] in self._pending:
                self.superseded += 1
            self._pending[order[0]] = order
        out: list[ForceOrder] = []
        for symbol, order in list(self._pending.items()):
            if now_ms - self._last_sent.get(symbol, -THROTTLE_MS) >= THROTTLE_MS:
                out.append(order)
                self._last_sent[symbol] = now_ms
                del self._pending[symbol]
        self.sent += len(out)
        return out

    def stats(self) -> dict[str, Any]:
        return {"force_orders_scheduled": self.scheduled, "force_orders_sent": self.sent,
                "force_orders_superseded": self.superseded,
                "force_orders_dropped": self.dropped,
                "force_orders_waiting": len(self._due) + len(self._pending)}
