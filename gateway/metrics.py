"""Prometheus metrics of the gateway (names are public: README and dashboard use them).

Each app gets its own registry rather than the process-global one, so that several apps can
live in one process (the tests start many) without "duplicated timeseries" errors, and so
that ``/metrics`` shows exactly what this gateway counts.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

DROP_REASONS: Final = ("too_slow", "max_clients", "flood", "origin", "bad_since",
                       "unknown_since")


class Metrics:
    content_type: Final = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.clients_connected = Gauge(
            "gateway_clients_connected", "WebSocket clients subscribed to live alerts.",
            registry=self.registry)
        self.alerts_received = Counter(
            "gateway_alerts_received", "Distinct alerts read from the bus (once per alert id).",
            registry=self.registry)
        self.duplicates = Counter(
            "gateway_duplicate_alerts", "Bus entries skipped because their alert id was seen.",
            registry=self.registry)
        self.deliveries = Counter(
            "gateway_deliveries", "Live alert messages written to a client (once per client).",
            registry=self.registry)
        self.clients_dropped = Counter(
            "gateway_clients_dropped", "Clients closed or refused by the gateway, by reason.",
            ["reason"], registry=self.registry)
        self.bad_payloads = Counter(
            "gateway_bad_payloads", "Bus entries that could not be decoded as an alert.",
            registry=self.registry)
        self.bus_errors = Counter(
            "gateway_bus_errors", "Reads of the alerts stream that failed and were retried.",
            registry=self.registry)
        self.reader_up = Gauge(
            "gateway_reader_up", "1 while the alerts reader is reading from the bus.",
            registry=self.registry)
        for reason in DROP_REASONS:
            # Pre-create the series so that rate() sees a 0 before the first drop.
            self.clients_dropped.labels(reason)

    def render(self) -> bytes:
        return generate_latest(self.registry)
