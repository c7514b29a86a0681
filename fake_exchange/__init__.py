"""A fake Binance USDⓈ-M market-stream server, its scenarios and a recording replayer.

Tests, benchmarks and the demo mode need an exchange that speaks the real frame formats
(`/market/ws/<stream>` raw, `/market/stream?streams=` combined) but whose market is known in
advance and whose faults (drops, stalls, malformed frames) can be triggered on cue. With a
`TradeMarket` it also lists its board on REST `GET /fapi/v1/exchangeInfo` and streams
`<symbol>@aggTrade`, `!forceOrder@arr` and `!markPrice@arr@1s`, scripted over `/control/`.
"""

from fake_exchange.listings import Listing, listing, synthetic_board
from fake_exchange.market import TradeMarket
from fake_exchange.recordings import RecordingQuotes, recording_quotes
from fake_exchange.scenarios import (
    Quote,
    Scenario,
    demo_scenario,
    drifting_market,
    firehose,
    jump_scenario,
    with_jump,
)
from fake_exchange.server import FakeExchange

__all__ = [
    "FakeExchange",
    "Listing",
    "Quote",
    "RecordingQuotes",
    "Scenario",
    "TradeMarket",
    "demo_scenario",
    "drifting_market",
    "firehose",
    "jump_scenario",
    "listing",
    "recording_quotes",
    "synthetic_board",
    "with_jump",
]
