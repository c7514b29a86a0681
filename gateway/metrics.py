"""Prometheus metrics of the gateway (names are public: README, alerting rules, dashboard).

Each app gets its own registry (``common.health.new_registry``) rather than the
process-global one, so that several apps can live in one process (the tests start many)
without "duplicated timeseries" errors, and so that ``/metrics`` shows exactly what this
gateway counts. HTTP request metrics come from prometheus-fastapi-instrumentator, on the
same registry (``instrument``).
"""

from __future__ import annotations

from typing import Final

from fastapi import FastAPI
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator import metrics as http_metrics

from common.health import new_registry
from gateway.limits import REFUSAL_REASONS

DROP_REASONS: Final = ("too_slow", "max_clients", "flood", "origin", "bad_since",
                       "unknown_since")
# Exchange event time to the fan-out: the exchange's delay, ingestor, bus, detector, bus,
# gateway. A few ms on one host; the README's target is p99 ≤ 10 ms from the frame.
_END_TO_END_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
                              0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The API answers from memory: sub-millisecond to a few ms; the instrumentator's default
# buckets start at 10 ms and would put every request in the first one.
_HTTP_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                        1.0, 2.5, 5.0)
# Not timed as HTTP requests: the scrape itself (it would measure Prometheus), and the
# WebSocket, which the instrumentator never sees (it handles only "http" scopes).
_UNTIMED_HANDLERS: Final = ("^/metrics$",)


class Metrics:
    content_type: Final = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = registry if registry is not None else new_registry()
        self.clients_connected = Gauge(
            "gateway_clients_connected", "WebSocket clients subscribed to live alerts, or "
            "holding a place until the startup backlog is loaded.",
            registry=registry)
        self.alerts_received = Counter(
            "gateway_alerts_received_total",
            "Distinct live alerts read from the bus (once per alert id, however many "
            "clients).", registry=registry)
        self.duplicates = Counter(
            "gateway_duplicate_alerts_total",
            "Bus entries skipped because their alert id was seen.", registry=registry)
        self.deliveries = Counter(
            "gateway_deliveries_total",
            "Live alert messages written to a client's WebSocket (once per alert per client).",
            registry=registry)
        self.clients_dropped = Counter(
            "gateway_clients_dropped_total",
            "Clients closed or refused by the gateway, by reason (too_slow: its queue was "
            "full).", ["reason"], registry=registry)
        self.bad_payloads = Counter(
            "gateway_bad_payloads_total", "Bus entries that could not be decoded as an alert.",
            registry=registry)
        self.rules_skipped = Counter(
            "gateway_rules_entries_skipped_total",
            "Entries of the rules stream skipped, by kind (undecodable, invalid, unversioned); "
            "the rules shown stay.", ["kind"], registry=registry)
        self.bus_errors = Counter(
            "gateway_bus_errors_total",
            "Reads of the alerts stream that failed and were retried.", registry=registry)
        self.reader_up = Gauge(
            "gateway_reader_up", "1 while the alerts reader is reading from the bus.",
            registry=registry)
        self.end_to_end = Histogram(
            "gateway_end_to_end_latency_seconds",
            "Exchange event time of the tick that fired to the moment the gateway hands the "
            "alert to its clients' queues (once per live alert).",
            buckets=_END_TO_END_BUCKETS, registry=registry)
        for reason in DROP_REASONS:
            # Pre-create the series so that rate() sees a 0 before the first drop.
            self.clients_dropped.labels(reason)
        self.requests_refused = Counter(
            "gateway_requests_refused_total",
            "HTTP requests (WebSocket upgrades included) refused before the app saw them, by "
            "reason: request_line (414), headers (431), body (413), timeout (408).",
            ["reason"], registry=registry)
        for reason in REFUSAL_REASONS:
            self.requests_refused.labels(reason)

    def instrument(self, app: FastAPI) -> None:
        """Time every HTTP request of ``app`` except the scrape, on this registry:
        ``gateway_http_request_duration_seconds`` and ``gateway_http_requests_total``,
        labelled ``handler`` (the route template), ``method`` and ``status`` (2xx, 4xx…)."""
        registry = self.registry
        Instrumentator(
            excluded_handlers=list(_UNTIMED_HANDLERS), registry=registry,
        ).add(
            http_metrics.latency(metric_namespace="gateway", buckets=_HTTP_BUCKETS,
                                 registry=registry),
            http_metrics.requests(metric_namespace="gateway", registry=registry),
        ).instrument(app)

    def render(self) -> bytes:
        return generate_latest(self.registry)
