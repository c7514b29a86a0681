"""Prometheus metrics of the detector, on a registry of its own (see ``common.health``).

Names are public interface: the README's metrics table, the alerting rules in
``infra/prometheus`` and the Grafana dashboard use them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from common.bus import ConsumerLag
from common.health import new_registry

__all__ = ["DIRECTIONS", "LAG_KINDS", "OWNERSHIP_CHANGES", "DetectorMetrics", "new_registry"]

DIRECTIONS: Final = ("up", "down")
# gained: a partition this detector started reading; released: one it handed over (another
# detector joined, or this one stops); lost: one taken away after this detector stalled
# past its lease or found another owner when publishing.
OWNERSHIP_CHANGES: Final = ("gained", "lost", "released")
LAG_KINDS: Final = ("behind", "pending")

# A batch of a few hundred entries takes well under a millisecond of engine time; the
# bus round trips (publish, ack) make it a few ms; anything past 100 ms is trouble.
_BATCH_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                         1.0, 2.5)
# Exchange event time to the alert on the bus: the exchange's own delay, the ingestor's
# batching and one hop on the bus; a few ms when healthy.
_ALERT_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25,
                         0.5, 1.0, 2.5, 5.0, 10.0)


class DetectorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = registry if registry is not None else new_registry()
        self.ticks_processed = Counter(
            "detector_ticks_processed_total", "Live ticks fed to the engine.",
            registry=registry)
        self.ticks_replayed = Counter(
            "detector_ticks_replayed_total",
            "Ticks replayed from history to rebuild windows (no alert can come of them).",
            registry=registry)
        self.alerts = Counter(
            "detector_alerts_total", "Alerts published on the alerts stream, by direction.",
            ["direction"], registry=registry)
        self.duplicates_skipped = Counter(
            "detector_duplicate_alerts_skipped_total",
            "Alerts recomputed from redelivered ticks that were already published.",
            registry=registry)
        self.bad_payloads = Counter(
            "detector_bad_payloads_total", "Bus entries that could not be decoded as ticks.",
            registry=registry)
        self.rules_skipped = Counter(
            "detector_rules_entries_skipped_total",
            "Entries of the rules stream skipped, by kind (undecodable, invalid, unversioned); "
            "the rules in force stay.", ["kind"], registry=registry)
        self.bus_errors = Counter(
            "detector_bus_errors_total", "Bus operations that failed and were retried.",
            registry=registry)
        self.batch_seconds = Histogram(
            "detector_batch_processing_seconds",
            "One live batch, from the end of its fetch to its acknowledgement (decode, "
            "detect, publish the alerts, ack).", buckets=_BATCH_BUCKETS, registry=registry)
        self.alert_latency = Histogram(
            "detector_alert_latency_seconds",
            "Exchange event time of the tick that fired to the alert published on the bus.",
            buckets=_ALERT_BUCKETS, registry=registry)
        self.rebuild_seconds = Gauge(
            "detector_rebuild_duration_seconds",
            "Duration of the last window rebuild from tick history (at start, or after taking "
            "partitions over).", registry=registry)
        self.partitions_owned = Gauge(
            "detector_partitions_owned", "Tick partitions this detector reads now.",
            registry=registry)
        self.ownership_changes = Counter(
            "detector_ownership_changes_total",
            "Tick partitions that came to this detector (gained) or left it (released: handed "
            "over; lost: taken away after it stalled or found another owner).", ["change"],
            registry=registry)
        self.alerts_dropped = Counter(
            "detector_alerts_dropped_total",
            "Alerts not published because their partition had moved to another detector, "
            "which publishes them instead.", registry=registry)
        self.symbols_tracked = Gauge(
            "detector_symbols_tracked", "Symbols with a live window in the engine.",
            registry=registry)
        self.consumer_lag = Gauge(
            "detector_consumer_lag_entries",
            "Entries of a ticks stream not yet delivered to group detector (kind=behind) or "
            "delivered but not acknowledged (kind=pending); refreshed every few seconds.",
            ["stream", "kind"], registry=registry)
        self.lag_updated = Gauge(
            "detector_consumer_lag_updated_timestamp_seconds",
            "Wall-clock time the consumer lag was last read from the bus.", registry=registry)
        # Every label value exists from the start, so that rate() and increase() see a 0
        # (and a dashboard panel is not empty) before the first alert of a direction.
        for direction in DIRECTIONS:
            self.alerts.labels(direction)
        for change in OWNERSHIP_CHANGES:
            self.ownership_changes.labels(change)

    def set_lag(self, lags: Mapping[str, ConsumerLag], now_s: float) -> None:
        for stream, lag in lags.items():
            self.consumer_lag.labels(stream, "behind").set(lag.behind)
            self.consumer_lag.labels(stream, "pending").set(lag.pending)
        self.lag_updated.set(now_s)
