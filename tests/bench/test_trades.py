"""bench.trades' breakdown of one alert's latency into stages, from the entries' ids."""

from __future__ import annotations

import fakeredis

from bench.trades import PARTITIONS, Run, stages
from common.partitioning import ALERTS_STREAM, partition_of, ticks_stream
from common.schemas import Alert, Tick, encode_alert, encode_ticks

T = 1_700_000_000_000


async def test_each_stage_is_the_time_between_the_entries_that_carried_the_alert() -> None:
    client = fakeredis.FakeAsyncRedis()
    symbol = "SYM007USDT"
    stream = ticks_stream(partition_of(symbol, PARTITIONS))
    # An earlier entry of another symbol, then the one holding the firing trade at T + 9.
    await client.xadd(stream, {b"d": encode_ticks([Tick("XUSDT", 1.0, T, "agg_trade")])},
                      id=f"{T + 2}-0")
    await client.xadd(stream, {b"d": encode_ticks([Tick("XUSDT", 1.0, T + 1, "agg_trade"),
                                                    Tick(symbol, 1.0, T, "agg_trade")])},
                      id=f"{T + 9}-0")
    alert = Alert(id=f"{symbol}:60:{T}", symbol=symbol, direction="up", change_pct=2.1,
                  price=1.0, base_price=0.98, window_s=60, threshold_pct=2.0,
                  event_time_ms=T, detected_at_ms=T + 11, source="agg_trade")
    await client.xadd(ALERTS_STREAM, {b"d": encode_alert(alert)}, id=f"{T + 14}-0")
    run = Run()
    await stages(client, {"id": alert.id, "symbol": symbol, "event_time_ms": T,
                          "detected_at_ms": T + 11}, T + 20.5, run)
    assert run.stages_ms == {"ingest": [9], "detector read": [2], "detect": [3],
                             "gateway": [6.5]}
    # An alert whose entries are gone adds nothing.
    await stages(client, {"id": "other", "symbol": symbol, "event_time_ms": T,
                          "detected_at_ms": T + 11}, T + 20.5, run)
    assert run.stages_ms["gateway"] == [6.5]
    await client.aclose()
