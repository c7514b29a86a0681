"""A fake Binance USDⓈ-M market-stream server, its scenarios and a recording replayer.

Tests, benchmarks and the demo mode need an exchange that speaks the real frame formats
(`/market/ws/<stream>` raw, `/market/stream?streams=` combined) but whose market is known in
advance and whose faults (drops, stalls, malformed frames) can be triggered on cue.
"""

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
    "Quote",
    "RecordingQuotes",
    "Scenario",
    "demo_scenario",
    "drifting_market",
    "firehose",
    "jump_scenario",
    "recording_quotes",
    "with_jump",
]
