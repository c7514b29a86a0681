"""Symbol → partition mapping shared by every process.

``crc32`` is used because Python's ``hash()`` of a str is salted per process, which would
send one symbol to different partitions from different ingestor replicas.

The streams and their semantics: docs/architecture.md#streams.
"""

from __future__ import annotations

from zlib import crc32

TICKS_STREAM_PREFIX = "ticks."
ALERTS_STREAM = "alerts"
RULES_STREAM = "rules"
# Entries kept on ``rules`` (MAXLEN ~): the newest rule set and the audit trail before it.
RULES_KEPT = 100
DETECTOR_GROUP = "detector"
# Each detector's heartbeat (``DetectorHeartbeat``), about one a second, followed by every
# gateway to tell "no detector consuming" and "detector behind" on the page. Kept by age
# (both backends can; Redis cannot trim by count and age at once): only the newest entry of
# each consumer matters.
DETECTOR_HEARTBEAT_STREAM = "detector.heartbeat"
HEARTBEATS_KEPT_S = 600.0
NOTIFIER_GROUP = "notifier"
# The notifier's delivery state: one entry per (alert, channel) once that channel sent the
# alert, folded it into a digest it sent, or gave up on it; kept by age
# (``NOTIFY_LEDGER_KEPT_S``). A restart reads it back and sends nothing already done.
NOTIFICATIONS_LEDGER_STREAM = "notifications.delivered"
# What a channel could not deliver (a permanent refusal, a retry deadline passed), with the
# reason and the alert: nothing is lost silently.
NOTIFICATIONS_DEAD_STREAM = "notifications.dead"
NOTIFICATIONS_DEAD_KEPT = 10_000


def partition_of(symbol: str, partitions: int) -> int:
    return crc32(symbol.encode()) % partitions


def ticks_stream(partition: int) -> str:
    return f"{TICKS_STREAM_PREFIX}{partition}"


def ticks_streams(partitions: int) -> list[str]:
    return [ticks_stream(p) for p in range(partitions)]
