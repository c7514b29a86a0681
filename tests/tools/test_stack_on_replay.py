"""The whole stack on a replayed recording: the live pipeline fires what the backtest says.

Ingestor, detector and gateway run as real processes against a real Redis, reading the
replay server as if it were the exchange; the alerts the gateway ends up holding must be the
backtest's alerts (same ids, prices, bases and changes), since both paths share the parser
and the engine and detect on event time.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import Pipeline
from tests.support.recordings import HFT_20K, CliProcess, start_replay
from tests.support.servers import RedisServer
from tools.cli import main

pytestmark = pytest.mark.e2e

RULE_ENV = {"WINDOW_S": "10", "THRESHOLD_UP_PCT": "0.03", "THRESHOLD_DOWN_PCT": "0.03",
            "COOLDOWN_S": "10"}
COMPARED = ("id", "symbol", "direction", "change_pct", "price", "base_price", "window_s",
            "threshold_pct", "event_time_ms", "source")


def gateway_alerts(pipeline: Pipeline) -> list[dict[str, Any]]:
    with urllib.request.urlopen(pipeline.http("/api/alerts?limit=1000"), timeout=5) as answer:
        alerts: list[dict[str, Any]] = json.load(answer)["alerts"]
    return alerts[::-1]  # the API answers newest first


def test_pipeline_on_a_replay_fires_what_the_backtest_does(
        tmp_path: Path, redis_server: RedisServer, processes: list[CliProcess],
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backtest", str(HFT_20K), "--window", "10", "--up", "0.03", "--down", "0.03",
                 "--format", "jsonl"]) == 0
    expected = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(expected) >= 3

    replay, address = start_replay([HFT_20K], tmp_path, "--speed", "0")
    processes.append(replay)
    logs = tmp_path / "logs"
    logs.mkdir()
    pipeline = Pipeline(redis_server.url, f"{address}/market/stream?streams=btcusdt@trade",
                        logs, extra_env=RULE_ENV)
    try:
        pipeline.start()
        replay.wait_line("replay done after ", timeout_s=60)
        deadline = time.monotonic() + 30
        while len(got := gateway_alerts(pipeline)) < len(expected):
            assert time.monotonic() < deadline, (got, pipeline.logs())
            time.sleep(0.2)
        time.sleep(0.5)  # nothing more may come
        got = gateway_alerts(pipeline)
    except BaseException:
        print(pipeline.logs())
        raise
    finally:
        pipeline.stop()
    assert [{k: a[k] for k in COMPARED} for a in got] == [
        {k: a[k] for k in COMPARED} for a in expected]
