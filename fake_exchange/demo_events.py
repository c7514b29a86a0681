"""What the demo's market does besides its price moves: a liquidation cascade every so often
and, now and then, a contract whose funding turns extreme, so that every kind of alert shows
on the demo page without anyone scripting it.

Cascades go round the board, alternating longs (SELL) and shorts (BUY) liquidated, each of
2.5 M USDT over 5 orders (far past the 1 M / 60 s a liquidation rule typically asks); one
symbol at a time has its funding at ±0.25 % (a funding rule typically asks 0.1 %), and the
previous one returns to the usual 0.01 %.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING

from fake_exchange.market import DEFAULT_FUNDING_RATE

if TYPE_CHECKING:
    from fake_exchange.market import TradeMarket

logger = logging.getLogger(__name__)

CASCADE_NOTIONAL = 2_500_000.0
CASCADE_ORDERS = 5
EXTREME_FUNDING = 0.0025


async def demo_events(market: TradeMarket, *, seed: int = 0, cascade_every_s: float = 45.0,
                      funding_every_s: float = 150.0, first_after_s: float = 12.0,
                      first_funding_after_s: float | None = None) -> None:
    """Runs until cancelled; the first cascade comes after `first_after_s`, the first funding
    extreme after `first_funding_after_s` (default: half a cascade interval later)."""
    rng = random.Random(seed)
    clock = asyncio.get_running_loop().time
    start = clock()
    next_cascade = start + first_after_s
    next_funding = start + (first_after_s + cascade_every_s / 2
                            if first_funding_after_s is None else first_funding_after_s)
    extreme: str | None = None
    events = 0
    while True:
        await asyncio.sleep(max(0.0, min(next_cascade, next_funding) - clock()))
        symbols = [item.symbol for item in market.tradable() if "_" not in item.symbol]
        if not symbols:
            next_cascade = next_funding = clock() + cascade_every_s
            continue
        now = clock()
        if now >= next_cascade:
            symbol = symbols[rng.randrange(len(symbols))]
            side = "SELL" if events % 2 == 0 else "BUY"
            events += 1
            result = market.cascade(symbol, side, CASCADE_NOTIONAL, CASCADE_ORDERS)
            logger.info("demo: %s liquidation cascade on %s, %s USDT", side, symbol,
                        result["notional"])
            next_cascade = now + cascade_every_s
        if now >= next_funding:
            if extreme is not None and extreme in symbols:
                market.set_funding(extreme, DEFAULT_FUNDING_RATE)
            extreme = symbols[rng.randrange(len(symbols))]
            rate = EXTREME_FUNDING if rng.random() < 0.5 else -EXTREME_FUNDING
            market.set_funding(extreme, rate)
            logger.info("demo: funding of %s at %.4f %%", extreme, rate * 100)
            next_funding = now + funding_every_s
