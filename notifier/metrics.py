"""Prometheus metrics of the notifier, on a registry of its own (see ``common.health``).

Names are public interface: the README's metrics table, the alerting rules in
``infra/prometheus`` and the Grafana dashboard use them. Every series is labelled by
``channel`` (the configured name), never by a URL or a token.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from common.dead_letters import REASONS
from common.health import new_registry

__all__ = ["NotifierMetrics", "new_registry"]

# Alert written by the detector → accepted by the channel's API: a local API answers in
# milliseconds, a real one in 50-500 ms; a burst paced at 1/s adds seconds.
_ACCEPTED_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                            30.0, 60.0, 300.0)


class NotifierMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = registry if registry is not None else new_registry()
        self.alerts_received = Counter(
            "notifier_alerts_received_total", "Alerts read from the alerts stream.",
            registry=registry)
        self.alerts_skipped = Counter(
            "notifier_alerts_skipped_total",
            "Alerts not sent anywhere, by reason (stale: older than NOTIFY_MAX_AGE_S; "
            "unrouted: no route matched; undecodable).", ["reason"], registry=registry)
        for reason in ("stale", "unrouted", "undecodable"):  # at 0 from the start
            self.alerts_skipped.labels(reason)
        self.poison_entries = Counter(
            "notifier_poison_entries_total",
            "Entries of the alerts stream moved to alerts.dead and acknowledged, by stream "
            "and reason (undecodable; failed: routing raised POISON_MAX_ATTEMPTS times).",
            ["stream", "reason"], registry=registry)
        self.sent = Counter(
            "notifier_messages_sent_total",
            "Messages a channel's API accepted, by channel and kind (alert, digest).",
            ["channel", "kind"], registry=registry)
        self.alerts_delivered = Counter(
            "notifier_alerts_delivered_total",
            "Alerts a channel delivered, by how (sent: its own message; digested: in a "
            "digest that was sent).", ["channel", "how"], registry=registry)
        self.failures = Counter(
            "notifier_failures_total",
            "Requests that failed, by channel and reason (http_503, timeout, connect, "
            "http_401…); transient ones are retried.", ["channel", "reason"],
            registry=registry)
        self.rate_limited = Counter(
            "notifier_rate_limited_total", "429 answers, by channel.", ["channel"],
            registry=registry)
        self.rate_limited_seconds = Counter(
            "notifier_rate_limited_wait_seconds_total",
            "Seconds a channel waited because its API said so (429 retry-after, "
            "X-RateLimit-Reset-After).", ["channel"], registry=registry)
        self.dead_letters = Counter(
            "notifier_dead_letters_total",
            "Alerts written to notifications.dead, by channel and reason.",
            ["channel", "reason"], registry=registry)
        self.failing = Gauge(
            "notifier_channel_failing",
            "1 while a channel's API refuses it permanently (bad token, unknown chat, "
            "deleted webhook); its alerts go to notifications.dead.", ["channel"],
            registry=registry)
        self.queued = Gauge(
            "notifier_channel_queued_alerts", "Alerts waiting for a channel's next slot.",
            ["channel"], registry=registry)
        self.accepted_seconds = Histogram(
            "notifier_alert_accepted_seconds",
            "Alert written on the bus (detected_at) → accepted by the channel's API.",
            ["channel"], buckets=_ACCEPTED_BUCKETS, registry=registry)
        self.bus_errors = Counter(
            "notifier_bus_errors_total", "Bus operations that failed and were retried.",
            registry=registry)

    def declare_streams(self, streams: Iterable[str]) -> None:
        """Create each stream's poison series at zero, so that ``increase()`` sees the
        first one."""
        for stream in streams:
            for reason in REASONS:
                self.poison_entries.labels(stream, reason)

    def declare_channels(self, names: Iterable[str]) -> None:
        """Create each channel's series at zero, so a dashboard and ``increase()`` see
        them before the first message."""
        for name in names:
            self.failing.labels(name).set(0)
            self.queued.labels(name).set(0)
            self.rate_limited.labels(name)
            self.rate_limited_seconds.labels(name)
            # Else the first alert's latency makes the series, and rate() cannot see it.
            self.accepted_seconds.labels(name)
            for kind in ("alert", "digest"):
                self.sent.labels(name, kind)
            for how in ("sent", "digested"):
                self.alerts_delivered.labels(name, how)
