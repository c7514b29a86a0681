"""The ingestor's Prometheus metrics, on a registry of its own.

A registry per service instance (rather than the process-global one) lets tests run several
ingestors in one process and read each one's counters without cross-talk; the process and
GC collectors are added to it so that a scrape still shows the usual ``process_*`` series.
"""

from __future__ import annotations

import logging
import time
from typing import Final

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

log = logging.getLogger(__name__)

RECONNECT_REASONS: Final = ("closed", "stale", "rotated", "error")
MALFORMED_KINDS: Final = ("not_json", "truncated", "binary", "wrong_shape")

_LAG_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LATENCY_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                           1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)


def new_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


class IngestorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.frames = Counter("ingestor_frames_received", "Websocket messages received",
                              registry=registry)
        self.ticks = Counter("ingestor_ticks_received", "USDⓈ-M price ticks parsed",
                             registry=registry)
        self.ticks_filtered = Counter(
            "ingestor_ticks_filtered", "Entries skipped on purpose (COIN-M, other events)",
            registry=registry)
        self.malformed = Counter("ingestor_malformed_frames", "Frames skipped as unusable",
                                 ["kind"], registry=registry)
        self.bad_entries = Counter("ingestor_bad_entries",
                                   "Entries skipped for a missing or invalid field",
                                   registry=registry)
        self.reconnects = Counter("ingestor_reconnects", "Exchange reconnects", ["reason"],
                                  registry=registry)
        self.connected = Gauge("ingestor_connected", "1 while the exchange socket is open",
                               registry=registry)
        self.last_frame = Gauge("ingestor_last_frame_timestamp_seconds",
                                "Wall-clock time of the last data frame", registry=registry)
        self.since_last_frame = Gauge(
            "ingestor_seconds_since_last_frame",
            "Seconds since the last data frame (since start if none yet)", registry=registry)
        self.exchange_lag = Histogram(
            "ingestor_exchange_lag_seconds",
            "Arrival time minus exchange event time E, newest entry of each frame",
            buckets=_LAG_BUCKETS, registry=registry)
        self.publish_latency = Histogram("ingestor_publish_latency_seconds",
                                         "Duration of one successful bus publish",
                                         buckets=_LATENCY_BUCKETS, registry=registry)
        self.publish_batch = Histogram("ingestor_publish_batch_records",
                                       "Bus entries written per publish call",
                                       buckets=_BATCH_BUCKETS, registry=registry)
        self.ticks_published = Counter("ingestor_ticks_published", "Ticks written to the bus",
                                       registry=registry)
        self.publish_errors = Counter("ingestor_publish_errors",
                                      "Publish attempts that failed with the bus unavailable",
                                      registry=registry)
        self.ticks_dropped = Counter("ingestor_ticks_dropped",
                                     "Ticks lost to a full buffer or an unfinished flush",
                                     registry=registry)
        self.buffer_frames = Gauge("ingestor_buffer_frames", "Frames waiting for the bus",
                                   registry=registry)
        for reason in RECONNECT_REASONS:
            self.reconnects.labels(reason)
        for kind in MALFORMED_KINDS:
            self.malformed.labels(kind)
        # Plain attributes read at scrape time: a gauge's set() takes a lock on every frame.
        self.last_frame_at = 0.0
        self._started = time.time()
        self.last_frame.set_function(lambda: self.last_frame_at)
        self.since_last_frame.set_function(self._seconds_since_last_frame)

    def _seconds_since_last_frame(self) -> float:
        return time.time() - (self.last_frame_at or self._started)
