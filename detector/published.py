"""What this detector knows of the alerts already on the ``alerts`` stream: their ids (never
published twice) and, through the engine, their cooldowns (a restart or a takeover stays
quiet about moves already alerted).

Read at start for every symbol, and again for the symbols of a partition taken over, since
its previous owner may have published after this detector started
(docs/reliability.md#several-detectors).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Final

import msgspec

from common.bus import Delivery, Transport
from common.partitioning import ALERTS_STREAM, partition_of
from common.schemas import decode_alert
from common.settings import DetectorSettings
from detector.engine import DetectionEngine

log = logging.getLogger(__name__)

SEEN_IDS_CAPACITY: Final = 100_000


class SeenIds:
    """Bounded memory of published alert ids, oldest forgotten first."""

    def __init__(self, capacity: int = SEEN_IDS_CAPACITY) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def __contains__(self, alert_id: object) -> bool:
        return alert_id in self._ids

    def add(self, alert_id: str) -> None:
        self._ids[alert_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)


def remember(published: Sequence[Delivery], seen: SeenIds, engine: DetectionEngine,
             symbols: Callable[[str], bool] | None = None) -> None:
    """Note every published id in ``seen``, and in ``engine`` what the alerts of
    ``symbols`` (all of them when None) started: cooldowns, escalations, funding periods,
    for every kind. An entry that does not decode is skipped: the
    consumers of ``alerts`` bury such entries."""
    for delivery in published:
        try:
            alert = decode_alert(delivery.payload)
        except msgspec.DecodeError:
            continue
        seen.add(alert.id)
        if symbols is not None and not symbols(alert.symbol):
            continue
        engine.note(alert)


async def load_published(transport: Transport, settings: DetectorSettings, seen: SeenIds,
                         engine: DetectionEngine, partitions: set[int] | None = None) -> None:
    """Seed dedupe and the engine's state from the alert history so a restart stays quiet;
    with ``partitions``, only the state of their symbols (partitions just taken over)."""
    reader = transport.broadcast_reader(ALERTS_STREAM)
    published = await reader.backlog(min(settings.alerts_maxlen, SEEN_IDS_CAPACITY))
    total = settings.tick_partitions
    remember(published, seen, engine, None if partitions is None else
             lambda symbol: partition_of(symbol, total) in partitions)
    log.info("%d published alerts remembered%s", len(published),
             "" if partitions is None else
             f" for partitions {','.join(map(str, sorted(partitions)))}")
