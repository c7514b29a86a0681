"""The demo's board: real USDⓈ-M perpetuals at the price levels traders know them by.

Chart links of the demo page open real charts, and the page looks like the exchange, not
like ``SYM024USDT`` at 0.0031. Where the project's recordings hold a symbol, its level is
the recorded one (tests/data/SOURCES.md):

- BTCUSDT 61,800: a trade of ``hftbacktest_btcusdt_20240808_head.gz``
  (nkaz001/hftbacktest, MIT), 2024-08-08;
- SUSHIUSDT 7.612: a book ticker of ``cryptofeed_binance_futures_head.ws``
  (bmoscon/cryptofeed, XFree86 1.1), 2021-07-22.

The recordings hold no other listed perpetual (their CTKUSDT, AKROUSDT and KEEPUSDT have
been delisted), so the other levels are round reference levels of each contract's
usual order of magnitude, not quotes of any one moment: a demo needs the scale of a
price (how many decimals, what a 3 % move looks like), not its value on a given day.
"""

from __future__ import annotations

from typing import Final

DEMO_BOARD: Final[tuple[tuple[str, float], ...]] = (
    ("BTCUSDT", 61_800.0), ("ETHUSDT", 3_000.0), ("SOLUSDT", 150.0), ("BNBUSDT", 600.0),
    ("XRPUSDT", 2.2), ("DOGEUSDT", 0.17), ("ADAUSDT", 0.6), ("AVAXUSDT", 25.0),
    ("LINKUSDT", 15.0), ("DOTUSDT", 5.0), ("LTCUSDT", 90.0), ("TRXUSDT", 0.25),
    ("NEARUSDT", 3.0), ("APTUSDT", 6.0), ("ARBUSDT", 0.4), ("OPUSDT", 0.8),
    ("SUIUSDT", 3.0), ("FILUSDT", 3.0), ("ATOMUSDT", 5.0), ("INJUSDT", 15.0),
    ("SUSHIUSDT", 7.612), ("1000PEPEUSDT", 0.012), ("WIFUSDT", 1.0), ("TIAUSDT", 4.0),
    ("SEIUSDT", 0.3), ("ORDIUSDT", 10.0), ("AAVEUSDT", 250.0), ("UNIUSDT", 9.0),
    ("ETCUSDT", 20.0), ("BCHUSDT", 400.0), ("XLMUSDT", 0.3), ("HBARUSDT", 0.2),
    ("ICPUSDT", 6.0), ("TONUSDT", 3.0), ("ENAUSDT", 0.5), ("WLDUSDT", 1.5),
    ("FETUSDT", 0.8), ("1000SHIBUSDT", 0.013), ("1000BONKUSDT", 0.02), ("CRVUSDT", 0.7),
    ("LDOUSDT", 1.2), ("STXUSDT", 1.0), ("IMXUSDT", 0.8), ("GALAUSDT", 0.02),
    ("SANDUSDT", 0.3), ("AXSUSDT", 3.0), ("EGLDUSDT", 20.0), ("THETAUSDT", 1.0),
)  # fmt: skip
