"""The contracts the fake lists: what `GET /fapi/v1/exchangeInfo` reports and what trades.

A client that discovers the board from exchangeInfo must keep only the tradable USDⓈ-M
perpetuals (`contractType` PERPETUAL, `status` TRADING), so a synthetic board carries, beside
its perpetuals, a quarterly contract and contracts that are not trading: a client that
forgets either filter subscribes to them and a test sees it.
"""

from __future__ import annotations

import logging
import math
import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from fake_exchange.frames import decimals_for
from fake_exchange.scenarios import symbol_names

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

logger = logging.getLogger(__name__)

PERPETUAL: Final = "PERPETUAL"
CURRENT_QUARTER: Final = "CURRENT_QUARTER"
TRADING: Final = "TRADING"
STATUSES: Final = ("PENDING_TRADING", "TRADING", "PRE_DELIVERING", "DELIVERING", "DELIVERED",
                   "PRE_SETTLE", "SETTLING", "CLOSE")
DELISTED: Final = "CLOSE"  # a delisted contract stays listed, closed, as on the exchange
PERPETUAL_DELIVERY_MS: Final = 4_133_404_800_000  # 2100-12-25: "never", as the exchange says
_ONBOARD_MS: Final = 1_569_398_400_000  # 2019-09-25, when USDⓈ-M perpetuals started
_DAY_MS: Final = 86_400_000
_SYMBOL: Final = re.compile(r"[A-Z0-9]{2,24}(_[0-9]{6})?")


def quantity_precision(price: float) -> int:
    """Fewer quantity decimals for cheaper contracts, as on the exchange (BTC 3, DOGE 0)."""
    return 3 if price >= 1000 else 2 if price >= 100 else 1 if price >= 10 else 0


@dataclass(slots=True)
class Listing:
    """One contract of exchangeInfo; `price` is where its trades start."""

    symbol: str
    price: float
    base_asset: str
    status: str = TRADING
    contract_type: str = PERPETUAL
    onboard_ms: int = _ONBOARD_MS
    delivery_ms: int = PERPETUAL_DELIVERY_MS
    quote_asset: str = "USDT"

    @property
    def pair(self) -> str:
        return self.symbol.split("_", 1)[0]

    @property
    def price_precision(self) -> int:
        return decimals_for(self.price)

    @property
    def quantity_precision(self) -> int:
        return quantity_precision(self.price)

    @property
    def trading(self) -> bool:
        return self.status == TRADING


def listing(symbol: str, price: float, **fields: object) -> Listing:
    """A contract named like the exchange names them: base asset = symbol minus its quote."""
    if not _SYMBOL.fullmatch(symbol):
        raise ValueError(f"symbol must be upper-case letters and digits (a delivery contract "
                         f"ends in _YYMMDD), got {symbol!r}")
    if not (price > 0 and math.isfinite(price)):
        raise ValueError(f"price must be a finite number > 0, got {price!r}")
    pair = symbol.split("_", 1)[0]
    base = pair.removesuffix("USDT") or pair
    return Listing(symbol, price, base, **fields)  # type: ignore[arg-type]


def _start_prices(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    lo, hi = math.log(0.001), math.log(60000.0)  # memecoins to BTC, like the scenarios
    return [math.exp(rng.uniform(lo, hi)) for _ in range(n)]


def synthetic_board(n_perpetuals: int, *, seed: int = 0, extras: bool = True) -> list[Listing]:
    """`SYM000USDT`… (the scenarios' names) as trading perpetuals; with `extras`, also a
    quarterly `BTCUSDT_261225`, a perpetual not trading yet and one settling."""
    if n_perpetuals < 0:
        raise ValueError("n_perpetuals >= 0 required")
    names = symbol_names(n_perpetuals)
    board = [listing(name, price, onboard_ms=_ONBOARD_MS + i * _DAY_MS)
             for i, (name, price) in enumerate(zip(names, _start_prices(n_perpetuals, seed),
                                                   strict=True))]
    if extras:
        board += [
            listing("BTCUSDT_261225", 62_000.0, contract_type=CURRENT_QUARTER,
                    delivery_ms=1_798_185_600_000),  # 2026-12-25 08:00 UTC
            listing("NEWCOINUSDT", 0.05, status="PENDING_TRADING"),
            listing("OLDCOINUSDT", 0.8, status="SETTLING"),
        ]
    return board


class Board:
    """The listings in exchangeInfo order; `version` changes whenever exchangeInfo would."""

    def __init__(self, listings: Iterable[Listing]) -> None:
        self._listings: dict[str, Listing] = {}
        for item in listings:
            if item.symbol in self._listings:
                raise ValueError(f"{item.symbol} listed twice")
            self._listings[item.symbol] = item
        self.version = 0

    def __iter__(self) -> Iterator[Listing]:
        return iter(self._listings.values())

    def __len__(self) -> int:
        return len(self._listings)

    def get(self, symbol: str) -> Listing | None:
        return self._listings.get(symbol)

    def tradable(self) -> list[Listing]:
        return [item for item in self._listings.values() if item.trading]

    def add(self, item: Listing) -> Listing:
        """List a contract, or list again (TRADING) one that was delisted."""
        old = self._listings.get(item.symbol)
        if old is not None and old.trading:
            raise ValueError(f"{item.symbol} is already listed and trading")
        self._listings[item.symbol] = item
        self.version += 1
        logger.info("listed %s at %s", item.symbol, item.price)
        return item

    def set_status(self, symbol: str, status: str) -> Listing:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        item = self._listings.get(symbol)
        if item is None:
            raise ValueError(f"{symbol!r} is not listed")
        item.status = status
        self.version += 1
        logger.info("%s is now %s", symbol, status)
        return item
