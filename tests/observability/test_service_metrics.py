"""The metrics that need wiring beyond a counter's ``inc()``: the detector's consumer lag
(its own task, against a real Redis), the gateway's end-to-end latency (once per live alert,
never for the startup backlog), the gateway's HTTP timings, and the health server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from prometheus_client import Counter

from common.bus import ConsumerLag, Delivery, Record, Retention
from common.bus.redis_streams import RedisConfig, RedisTransport
from common.health import HealthServer, new_registry
from common.partitioning import ALERTS_STREAM, ticks_stream
from common.schemas import Tick, encode_alert, encode_ticks
from common.settings import DetectorSettings, load_settings
from detector.metrics import DetectorMetrics
from detector.service import Detector
from gateway.hub import Hub
from gateway.metrics import Metrics
from tests.support.gateway import RecordingSink, make_alert, running_gateway
from tests.support.servers import RedisServer


@pytest.fixture
async def bus(redis_server: RedisServer) -> AsyncIterator[RedisTransport]:
    transport = RedisTransport(RedisConfig(redis_server.url, timeout_s=3))
    await transport.start()
    yield transport
    await transport.close()


def lag(metrics: DetectorMetrics, stream: str, kind: str) -> float | None:
    return metrics.registry.get_sample_value("detector_consumer_lag_entries",
                                             {"stream": stream, "kind": kind})


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.02)


async def test_the_lag_task_reports_entries_behind_until_the_detector_catches_up(
        redis_server: RedisServer, bus: RedisTransport) -> None:
    stream = ticks_stream(0)
    now_ms = int(time.time() * 1000)
    await bus.declare([stream], Retention(max_age_s=900))
    await bus.publish([Record(stream, "BTCUSDT", encode_ticks(
        [Tick("BTCUSDT", 100.0 + i, now_ms + i, "mini_ticker")])) for i in range(5)])
    settings = load_settings(DetectorSettings, bus_url=redis_server.url, tick_partitions=1,
                             read_block_ms=50, detector_metrics_port=0)
    metrics = DetectorMetrics()
    detector = Detector(settings, bus, metrics=metrics)
    stopping = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        watcher = tasks.create_task(detector.watch_lag(stopping, every_s=0.05))
        await asyncio.sleep(0.2)
        assert lag(metrics, stream, "behind") is None  # no consumer yet, nothing claimed
        loop = tasks.create_task(detector.run(stopping))
        await eventually(lambda: metrics.registry.get_sample_value(
            "detector_ticks_processed_total") == 5)
        await eventually(lambda: (lag(metrics, stream, "behind"),
                                  lag(metrics, stream, "pending")) == (0, 0))
        assert metrics.registry.get_sample_value(
            "detector_consumer_lag_updated_timestamp_seconds") == pytest.approx(time.time(), abs=5)
        stopping.set()
    assert loop.done()
    assert watcher.done()


def test_set_lag_reports_both_kinds_per_stream() -> None:
    metrics = DetectorMetrics()
    metrics.set_lag({"ticks.0": ConsumerLag(7, 2), "ticks.1": ConsumerLag(0, 0)}, 123.0)
    assert lag(metrics, "ticks.0", "behind") == 7
    assert lag(metrics, "ticks.0", "pending") == 2
    assert lag(metrics, "ticks.1", "behind") == 0
    for direction in ("up", "down"):  # present before the first alert
        assert metrics.registry.get_sample_value(
            "detector_alerts_total", {"direction": direction}) == 0


async def test_end_to_end_latency_is_observed_once_per_live_alert_and_not_for_history(
) -> None:
    metrics = Metrics()
    hub = Hub(metrics=metrics, history_size=10, max_buffered_bytes=4096, max_clients=10,
              read_block_ms=20)
    old = make_alert("AUSDT", event_time_ms=int(time.time() * 1000) - 3_600_000)
    await hub.ingest([Delivery(ALERTS_STREAM, "1-0", encode_alert(old), 1)], live=False)
    subscriptions = [hub.subscribe(RecordingSink()), hub.subscribe(RecordingSink())]
    assert all(subscriptions)
    fresh = make_alert("BUSDT", event_time_ms=int(time.time() * 1000) - 40)
    await hub.ingest([Delivery(ALERTS_STREAM, "2-0", encode_alert(fresh), 1),
                      Delivery(ALERTS_STREAM, "3-0", encode_alert(fresh), 1)])  # a repeat
    registry = metrics.registry
    assert registry.get_sample_value("gateway_end_to_end_latency_seconds_count") == 1
    assert registry.get_sample_value("gateway_end_to_end_latency_seconds_sum") == \
        pytest.approx(0.04, abs=0.03)
    assert registry.get_sample_value("gateway_alerts_received_total") == 1


async def test_http_requests_are_timed_by_route_but_not_the_scrape(
        redis_server: RedisServer) -> None:
    async with running_gateway(redis_server.url) as gateway:
        for _ in range(3):
            assert (await gateway.http.get("/api/alerts")).status_code == 200
        assert (await gateway.http.get("/metrics")).status_code == 200
        assert await gateway.metric("gateway_http_requests_total", handler="/api/alerts",
                                    method="GET", status="2xx") == 3
        assert await gateway.metric("gateway_http_request_duration_seconds_count",
                                    handler="/api/alerts", method="GET", status="2xx") == 3
        with pytest.raises(KeyError):
            await gateway.metric("gateway_http_requests_total", handler="/metrics")


async def test_the_health_server_serves_its_own_registry_and_health() -> None:
    registry = new_registry()
    Counter("probe_total", "A counter only this registry has.", registry=registry).inc(3)
    healthy = True
    server = HealthServer("127.0.0.1", 0, healthy=lambda: healthy, registry=registry)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            scrape = (await http.get("/metrics")).text
            assert "probe_total 3.0" in scrape
            assert "process_cpu_seconds_total" in scrape or "python_info" in scrape
            assert (await http.get("/healthz")).status_code == 200
            healthy = False
            assert (await http.get("/healthz")).status_code == 503
    finally:
        await server.stop()

