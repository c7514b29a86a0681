"""The metrics as an operator sees them: a real Prometheus, running the shipped
configuration and rules, scrapes the four services (real processes on a real Redis) while
the fake exchange plays one jump to two watching clients, and the notifier sends it to two
webhooks at the fake receiver, one of which does not exist (404: a failing channel, a dead
letter). Every panel of the dashboard must have data, the counters must have moved by
exactly what the scenario implies, and the notifier's alerts must see the broken channel."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from fake_exchange import FakeExchange, Quote, drifting_market, with_jump
from fake_notify.server import FakeApis, running_fake
from tests.support.dashboard import panel_exprs
from tests.support.gateway import live_alerts
from tests.support.processes import Pipeline, Service, metric
from tests.support.prometheus import PrometheusServer, prometheus_binary, render_config
from tests.support.servers import RedisServer
from tools.redis_server import free_port

pytestmark = pytest.mark.e2e

CLIENTS: Final = 2
JUMP_SYMBOL: Final = "SYM007USDT"
SCRAPE_INTERVAL: Final = "1s"
# Grafana's variables, as the dashboard would expand them on a 1 s scrape: wide enough that
# every rate() spans several samples.
GRAFANA_VARIABLES: Final = {"$__rate_interval": "30s", "$__interval": "5s", "$__range": "5m"}
WEBHOOK_SECRET: Final = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# Two signed webhooks at the fake receiver; "broken" posts where nothing is mounted (404).
NOTIFY_FILE: Final = """\
[[channel]]
name = "hooks"
type = "webhook"
url = "{fake}/hooks/prometheus"
secret = "${{WEBHOOK_SECRET}}"

[[channel]]
name = "broken"
type = "webhook"
url = "{fake}/no-such-hook"
secret = "${{WEBHOOK_SECRET}}"

[[route]]
channels = ["hooks", "broken"]
"""


def scenario() -> list[list[Quote]]:
    """The jump scenario (700 quiet symbols, one +3 % move) with 20 COIN-M contracts mixed
    in, so that the ingestor's filter has something to count."""
    board = drifting_market(700, frames=24, coin_m_symbols=20)
    return list(with_jump(board, symbol=JUMP_SYMBOL, at_frame=4, pct=3.0, over_frames=8))


@dataclass
class Watcher:
    """A browser stand-in that counts the live alerts it is sent."""

    ws: ClientConnection
    alerts: list[dict[str, Any]] = field(default_factory=list)

    async def read(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw)
            self.alerts.extend(live_alerts(message))


@contextlib.asynccontextmanager
async def watchers(url: str, count: int) -> AsyncIterator[list[Watcher]]:
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for _ in range(count):
            ws = await stack.enter_async_context(connect(url, open_timeout=5))
            first = json.loads(await ws.recv())
            assert first["type"] == "history", first
            clients.append(Watcher(ws))
        async with asyncio.TaskGroup() as tasks:
            readers = [tasks.create_task(c.read()) for c in clients]
            try:
                yield clients
            finally:
                for reader in readers:
                    reader.cancel()


async def eventually(check: Callable[[], object], timeout_s: float, what: str) -> None:
    """Poll ``check`` (blocking, so in a thread) until it returns a truthy value."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(check)
        if last:
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def expand(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unexpanded variable in {expr}"
    return expr


@dataclass
class Stack:
    exchange: FakeExchange
    pipeline: Pipeline
    prometheus: PrometheusServer
    receiver: FakeApis
    usdm_ticks: int  # what the scenario sends, by contract type
    coin_m_ticks: int


@pytest.fixture
async def stack(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[Stack]:
    prometheus_binary()  # skip (or fail under CI) before starting anything
    frames = scenario()
    usdm = sum(q.contract_type == 1 for frame in frames for q in frame)
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    async with (FakeExchange(frames, interval_s=0.25, wall_clock=True) as exchange,
                running_fake() as receiver):
        exchange.stall()  # the market opens once the clients watch (resumed by the test)
        pipeline = Pipeline(redis_server.url, exchange.url("!miniTicker@arr"), log_dir,
                            extra_env={"TICK_PARTITIONS": "4"})
        notify_file = tmp_path / "notify.toml"
        notify_file.write_text(NOTIFY_FILE.format(fake=receiver.url))
        notifier_port = free_port()
        pipeline.services["notifier"] = Service("notifier", {
            **pipeline.services["detector"].env, "NOTIFY_CONFIG": str(notify_file),
            "NOTIFIER_METRICS_PORT": str(notifier_port), "WEBHOOK_SECRET": WEBHOOK_SECRET,
        }, log_dir)
        targets = {"ingestor": f"127.0.0.1:{pipeline.ingestor_metrics_port}",
                   "detector": f"127.0.0.1:{pipeline.detector_metrics_port}",
                   "gateway": f"127.0.0.1:{pipeline.gateway_port}",
                   "notifier": f"127.0.0.1:{notifier_port}"}
        prometheus = PrometheusServer(render_config(tmp_path / "prometheus", targets,
                                                    SCRAPE_INTERVAL), tmp_path / "tsdb")
        prometheus.start()
        try:
            await asyncio.to_thread(pipeline.start)
            await asyncio.to_thread(prometheus.wait_ready)
            yield Stack(exchange, pipeline, prometheus, receiver, usdm,
                        sum(map(len, frames)) - usdm)
        except BaseException:
            print(pipeline.logs(), "\n===== prometheus\n", prometheus.output()[-4000:])
            raise
        finally:
            prometheus.stop()
            await asyncio.to_thread(pipeline.stop)


async def test_every_panel_has_data_and_the_counters_match_one_jump(stack: Stack) -> None:
    exchange, pipeline, prometheus = stack.exchange, stack.pipeline, stack.prometheus
    usdm_ticks = stack.usdm_ticks
    await eventually(lambda: prometheus.value('count(up == 1)') == 4, 20,
                     "Prometheus scraping the four services")
    async with watchers(pipeline.ws_url, CLIENTS) as clients:
        gateway_metrics = pipeline.http("/metrics")
        await eventually(lambda: metric(gateway_metrics, "gateway_clients_connected") == CLIENTS,
                         10, "both clients subscribed")
        exchange.resume()
        await exchange.wait_until_done(timeout=30)
        await eventually(lambda: all(c.alerts for c in clients), 10, "the alert at the clients")
        async with httpx.AsyncClient() as http:  # a few requests for the HTTP panel
            for path in ("/api/alerts", "/api/rules", "/readyz", "/"):
                assert (await http.get(pipeline.http(path))).status_code == 200

        expected = {
            "gateway_alerts_received_total": 1,
            "gateway_deliveries_total": CLIENTS,
            "gateway_clients_connected": CLIENTS,
            "gateway_end_to_end_latency_seconds_count": 1,
            'detector_alerts_total{direction="up"}': 1,
            'detector_alerts_total{direction="down"}': 0,
            "detector_alert_latency_seconds_count": 1,
            "detector_ticks_processed_total": usdm_ticks,
            "sum(detector_consumer_lag_entries)": 0,
            "ingestor_frames_received_total": exchange.frames_sent,
            "ingestor_ticks_received_total": usdm_ticks,
            "ingestor_ticks_filtered_total": stack.coin_m_ticks,
            "ingestor_ticks_published_total": usdm_ticks,
            "ingestor_ticks_dropped_total": 0,
            "sum(ingestor_malformed_frames_total)": 0,
            "sum(ingestor_reconnects_total)": 0,
            "sum(gateway_clients_dropped_total)": 0,
            "notifier_alerts_received_total": 1,
            'notifier_messages_sent_total{channel="hooks", kind="alert"}': 1,
            'sum(notifier_messages_sent_total{channel="broken"})': 0,
            'notifier_alert_accepted_seconds_count{channel="hooks"}': 1,
            'notifier_channel_failing{channel="hooks"}': 0,
            'notifier_channel_failing{channel="broken"}': 1,
            'notifier_failures_total{channel="broken", reason="http_404"}': 1,
            'sum(notifier_dead_letters_total{channel="broken"})': 1,
            "sum(notifier_dead_letters_total)": 1,
            "sum(notifier_alerts_skipped_total)": 0,
            "sum(notifier_channel_queued_alerts)": 0,
        }

        def as_scraped() -> dict[str, float | None]:
            return {expr: prometheus.value(expr) for expr in expected}

        await eventually(lambda: as_scraped() == expected, 15,
                         f"Prometheus to scrape {expected}")
        assert [c.alerts[0]["symbol"] for c in clients] == [JUMP_SYMBOL] * CLIENTS
        assert all(len(c.alerts) == 1 for c in clients)
        [webhook] = [r for r in stack.receiver.of("webhook") if r.status == 200]
        assert json.loads(webhook.body)["alert"]["id"] == clients[0].alerts[0]["id"]

        empty = []
        for expr in panel_exprs():
            result = await asyncio.to_thread(prometheus.query, expand(expr))
            if not result:
                empty.append(expr)
        assert empty == [], f"panels without data: {empty}"
        # The latency panels measured something real, not an empty rate turned into NaN.
        for histogram in ("gateway_end_to_end_latency_seconds_bucket",
                          'notifier_alert_accepted_seconds_bucket{channel="hooks"}'):
            p99 = prometheus.value(f"histogram_quantile(0.99, sum by (le) "
                                   f"(rate({histogram}[5m])))")
            assert p99 is not None, histogram
            assert math.isfinite(p99), histogram
            assert 0 < p99 < 2.0, histogram

    rules = [rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]]
    assert [rule["health"] for rule in rules] == ["ok"] * 11, rules

    # The broken channel is seen by its rules (pending: their minute has not passed), and
    # nothing else is wrong.
    def raised() -> set[tuple[str, str | None]]:
        return {(a["labels"]["alertname"], a["labels"].get("channel"))
                for a in prometheus.api("alerts")["alerts"]}

    await eventually(lambda: raised() == {("NotifierChannelFailing", "broken"),
                                          ("NotifierDeadLetters", "broken")}, 10,
                     "the broken channel's alerts")
    firing = [a for a in prometheus.api("alerts")["alerts"] if a["state"] == "firing"]
    assert all(a["labels"].get("channel") == "broken" for a in firing), firing
