"""The ingestor's Prometheus metrics, on a registry of its own (see ``common.health``).

Names are public interface: the README's metrics table, the alerting rules in
``infra/prometheus`` and the Grafana dashboard use them. Counters are written with their
exposed ``_total`` name (prometheus_client adds the suffix anyway) so that a grep for what
a dashboard shows finds the line that counts it.
"""

from __future__ import annotations

import time
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from common.health import new_registry
from ingestor.parsing import ENTRY_KINDS, FRAME_KINDS

__all__ = ["MALFORMED_KINDS", "RECONNECT_REASONS", "REST_FAILURES", "IngestorMetrics",
           "new_registry"]

RECONNECT_REASONS: Final = ("closed", "stale", "rotated", "error")
# Why a request for the list of symbols failed: HTTP 429 or 418 (the exchange's rate limit
# and its ban), another HTTP error, an answer that is no exchangeInfo, no answer at all.
REST_FAILURES: Final = ("rate_limited", "banned", "http_error", "bad_response", "unreachable")
SUBSCRIPTION_METHODS: Final = ("SUBSCRIBE", "UNSUBSCRIBE")
# Whole frames skipped, then single entries skipped from a frame whose rest is kept.
MALFORMED_KINDS: Final = FRAME_KINDS + ENTRY_KINDS

# The exchange stamps E a few ms before the frame leaves; from a nearby region the lag is
# single-digit ms, from far away or on a congested link hundreds, and seconds mean trouble.
_LAG_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                       5.0, 10.0, 30.0)
_LATENCY_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                           1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)


class IngestorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.frames = Counter(
            "ingestor_frames_received_total",
            "WebSocket messages received from the exchange, usable or not.", registry=registry)
        self.ticks = Counter(
            "ingestor_ticks_received_total",
            "USDⓈ-M price ticks parsed from data frames.", registry=registry)
        self.ticks_filtered = Counter(
            "ingestor_ticks_filtered_total",
            "Entries skipped on purpose (COIN-M contracts, non-market trades).",
            registry=registry)
        self.malformed = Counter(
            "ingestor_malformed_frames_total",
            "Frames skipped as unusable, and entries skipped from a frame whose rest is kept, "
            "by kind.", ["kind"], registry=registry)
        self.bad_entries = Counter(
            "ingestor_bad_entries_total",
            "Entries skipped for a missing or out-of-range field (the rest of the frame is "
            "kept); by kind in ingestor_malformed_frames_total.", registry=registry)
        self.reconnects = Counter(
            "ingestor_reconnects_total", "Exchange connections ended and retried, by reason.",
            ["reason"], registry=registry)
        self.connected = Gauge(
            "ingestor_connected",
            "1 while every exchange connection the ingestor wants is open.", registry=registry)
        self.connections_open = Gauge(
            "ingestor_connections_open", "Exchange connections open (one per shard).",
            registry=registry)
        self.connection_streams = Gauge(
            "ingestor_connection_streams",
            "Streams an exchange connection is subscribed to (FEED=agg_trade), by connection.",
            ["connection"], registry=registry)
        self.subscription_messages = Counter(
            "ingestor_subscription_messages_total",
            "SUBSCRIBE and UNSUBSCRIBE messages sent to the exchange, by method.",
            ["method"], registry=registry)
        self.subscription_errors = Counter(
            "ingestor_subscription_errors_total",
            "Replies of the exchange refusing one of our (UN)SUBSCRIBE messages.",
            registry=registry)
        self.symbols_listed = Gauge(
            "ingestor_symbols_listed",
            "Tradable perpetuals on the board (FEED=agg_trade), from the last good refresh.",
            registry=registry)
        self.symbol_refreshes = Counter(
            "ingestor_symbol_refreshes_total",
            "Successful reads of the list of symbols (exchangeInfo).", registry=registry)
        self.rest_failures = Counter(
            "ingestor_rest_failures_total",
            "Failed reads of the list of symbols, by reason (the board in force is kept).",
            ["reason"], registry=registry)
        self.rest_used_weight = Gauge(
            "ingestor_rest_used_weight_1m",
            "The exchange's X-MBX-USED-WEIGHT-1M on its last answer: REST weight used by this "
            "IP in the current minute.", registry=registry)
        self.duplicates = Counter(
            "ingestor_duplicates_dropped_total",
            "Entries dropped because another connection had delivered them first (a "
            "make-before-break rotation overlaps two connections).", registry=registry)
        self.last_frame = Gauge(
            "ingestor_last_frame_timestamp_seconds",
            "Wall-clock time of the last data frame (0 before the first).", registry=registry)
        self.since_last_frame = Gauge(
            "ingestor_seconds_since_last_frame",
            "Seconds since the last data frame (since start if none yet).", registry=registry)
        self.exchange_lag = Histogram(
            "ingestor_exchange_lag_seconds",
            "Arrival time minus exchange event time (E, a trade's T), newest entry of a "
            "frame; one frame per 100 ms per connection.",
            buckets=_LAG_BUCKETS, registry=registry)
        self.publish_latency = Histogram(
            "ingestor_publish_latency_seconds",
            "Duration of one successful bus publish call.",
            buckets=_LATENCY_BUCKETS, registry=registry)
        self.publish_batch = Histogram(
            "ingestor_publish_batch_records",
            "Bus entries written per publish call (one per partition per flush; per frame "
            "buffered with FLUSH_MS=0).",
            buckets=_BATCH_BUCKETS, registry=registry)
        self.ticks_published = Counter(
            "ingestor_ticks_published_total", "Ticks written to the bus.", registry=registry)
        self.publish_errors = Counter(
            "ingestor_publish_errors_total",
            "Publish attempts that failed with the bus unavailable (then retried).",
            registry=registry)
        self.ticks_dropped = Counter(
            "ingestor_ticks_dropped_total",
            "Ticks lost while the bus was unreachable: evicted from the full buffer, or "
            "still unpublished at the shutdown deadline.", registry=registry)
        self.buffer_frames = Gauge(
            "ingestor_buffer_frames", "Frames waiting for the bus.", registry=registry)
        # Every label value exists from the start, so that rate() and increase() see a 0
        # (and a dashboard panel is not empty) before the first event of its kind.
        for reason in RECONNECT_REASONS:
            self.reconnects.labels(reason)
        for kind in MALFORMED_KINDS:
            self.malformed.labels(kind)
        for reason in REST_FAILURES:
            self.rest_failures.labels(reason)
        for method in SUBSCRIPTION_METHODS:
            self.subscription_messages.labels(method)
        # The connections (by name) that have a socket open, and how many are wanted.
        self.open_connections: set[str] = set()
        self.wanted_connections = 1
        self.connections_open.set_function(lambda: len(self.open_connections))
        self.connected.set_function(
            lambda: float(len(self.open_connections) >= self.wanted_connections > 0))
        # Plain attributes read at scrape time: a gauge's set() takes a lock on every frame.
        self.last_frame_at = 0.0
        self._started = time.time()
        self.last_frame.set_function(lambda: self.last_frame_at)
        self.since_last_frame.set_function(self._seconds_since_last_frame)

    def _seconds_since_last_frame(self) -> float:
        return time.time() - (self.last_frame_at or self._started)
