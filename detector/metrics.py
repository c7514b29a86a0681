"""Prometheus metrics of the detector (names are public: README and dashboard use them)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TICKS_PROCESSED = Counter("detector_ticks_processed_total", "Ticks fed to the engine (live).")
TICKS_REPLAYED = Counter(
    "detector_ticks_replayed_total", "Ticks replayed from history to rebuild windows.")
ALERTS = Counter("detector_alerts_total", "Alerts published.", ["direction"])
DUPLICATES_SKIPPED = Counter(
    "detector_duplicate_alerts_skipped_total",
    "Alerts recomputed from redelivered ticks that were already published.")
BAD_PAYLOADS = Counter("detector_bad_payloads_total", "Bus entries that could not be decoded.")
BATCH_SECONDS = Histogram(
    "detector_batch_processing_seconds", "From fetch to acknowledgement of one batch.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
REBUILD_SECONDS = Gauge("detector_rebuild_seconds", "Duration of the last window rebuild.")
SYMBOLS_TRACKED = Gauge("detector_symbols_tracked", "Symbols with a live window.")
BUS_ERRORS = Counter("detector_bus_errors_total", "Bus operations that failed and were retried.")
