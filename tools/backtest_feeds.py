"""What ``binance-alerter backtest --feed`` shows the engine of a trade recording.

- ``agg_trade`` (the default): every trade is a PRICE tick as the ingestor's parser makes it
  (with its quantity, at its trade time), which is what the live ``FEED=agg_trade`` sees.
- ``mini_ticker``: what the one-second mini ticker would have shown instead: per symbol and
  whole second, one PRICE tick of the last trade's price, stamped at the end of the second
  (``s × 1000 + 999``), with a 24 h quote volume that is the running total of the trades'
  ``price × quantity`` since the recording began (so a volume rule reads each second's
  volume from its increase, as it does from a live ticker). A second is shown once the
  recording reaches a later one, so ticks of other kinds keep their place in time.

Ticks that are no trades (tickers of a mini-ticker recording, forced orders, mark prices)
go through either feed unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from common.schemas import PRICE, Tick

FEEDS: Final = ("agg_trade", "mini_ticker")
TRADE_SOURCES: Final = frozenset(("trade", "agg_trade"))
MINI_TICKER_SOURCE: Final = "mini_ticker"


class MiniTickerView:
    """Trades in, one tick per symbol and second out (see the module docstring)."""

    def __init__(self) -> None:
        # symbol → [second, last price, running quote volume] of the second not shown yet.
        self._pending: dict[str, list[float]] = {}
        self._totals: dict[str, float] = {}
        self._oldest: int | None = None  # the earliest second pending

    def feed(self, ticks: Iterable[Tick]) -> list[Tick]:
        out: list[Tick] = []
        pending = self._pending
        for tick in ticks:
            second = tick.event_time_ms // 1000
            if self._oldest is not None and second > self._oldest:
                self._show(out, before=second)
            if tick.kind != PRICE or tick.source not in TRADE_SOURCES:
                out.append(tick)
                continue
            symbol = tick.symbol
            total = self._totals.get(symbol, 0.0)
            if tick.quantity is not None:
                total += tick.price * tick.quantity
                self._totals[symbol] = total
            slot = pending.get(symbol)
            if slot is None:
                pending[symbol] = [second, tick.price, total]
                if self._oldest is None or second < self._oldest:
                    self._oldest = second
            elif second >= slot[0]:  # an older trade: the second it belongs to was shown
                slot[1], slot[2] = tick.price, total
        return out

    def finish(self) -> list[Tick]:
        """The seconds still pending at the end of the recording."""
        out: list[Tick] = []
        self._show(out, before=None)
        return out

    def _show(self, out: list[Tick], before: int | None) -> None:
        shown = [(s, slot) for s, slot in self._pending.items()
                 if before is None or slot[0] < before]
        shown.sort(key=lambda item: item[1][0])
        for symbol, (second, price, total) in shown:
            out.append(Tick(symbol, price, int(second) * 1000 + 999, MINI_TICKER_SOURCE,
                            total))
            del self._pending[symbol]
        self._oldest = int(min(slot[0] for slot in self._pending.values())) if (
            self._pending) else None
