"""Which tick partitions this detector reads now, and what moving one means.

With ``DETECTOR_PARTITIONS`` unset the detectors divide the ``ticks.{p}`` streams among
themselves (``common.bus.Sharing``): the group consumer says after each fetch which streams
this member owns (``GroupConsumer.owned``). A stream that left takes its symbols' engine
state with it (its next owner rebuilds it from the replay), and nothing of it may be
processed, published or acknowledged here any more; one that arrived starts with its
replay, after the alert history of its symbols was read again (the previous owner may have
published since this detector started).

Symbols map to partitions as the ingestor routes them (``partition_of``), so "the symbols of
a stream" needs no bookkeeping of which symbol was seen where.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass

from common.partitioning import TICKS_STREAM_PREFIX, partition_of
from detector.metrics import DetectorMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Moves:
    gained: frozenset[str]
    left: frozenset[str]


def partition_of_stream(stream: str) -> int:
    return int(stream.removeprefix(TICKS_STREAM_PREFIX))


class Ownership:
    """The streams this detector processes, as last seen, with the metrics and log lines
    of every change."""

    def __init__(self, partitions: int, metrics: DetectorMetrics) -> None:
        self._partitions = partitions
        self._metrics = metrics
        self.streams: frozenset[str] = frozenset()

    def partitions(self) -> list[int]:
        return sorted(partition_of_stream(s) for s in self.streams)

    def symbols_of(self, streams: Collection[str]) -> Callable[[str], bool]:
        """A predicate: does this symbol belong to one of ``streams``?"""
        wanted = {partition_of_stream(s) for s in streams}
        total = self._partitions
        return lambda symbol: partition_of(symbol, total) in wanted

    def update(self, owned: frozenset[str], *, stalled: bool) -> Moves:
        """Take the consumer's ``owned()`` after a fetch. ``stalled``: this detector stood
        still longer than its lease since the fetch before, so what left was taken away
        (lost) rather than handed over (released)."""
        moves = Moves(owned - self.streams, self.streams - owned)
        self.streams = owned
        self._metrics.partitions_owned.set(len(owned))
        if moves.gained:
            self._count("gained", moves.gained)
        if moves.left:
            self._count("lost" if stalled else "released", moves.left)
        return moves

    def lose(self, streams: Collection[str]) -> frozenset[str]:
        """Publishing found another owner of ``streams``: they are gone from now on."""
        gone = self.streams & frozenset(streams)
        if gone:
            self.streams -= gone
            self._metrics.partitions_owned.set(len(self.streams))
            self._count("lost", gone)
        return gone

    def _count(self, change: str, streams: frozenset[str]) -> None:
        self._metrics.ownership_changes.labels(change).inc(len(streams))
        log.info("partitions %s %s; now reading %s", _names(streams), change,
                 _names(self.streams) or "none")


def _names(streams: Collection[str]) -> str:
    return ",".join(str(p) for p in sorted(partition_of_stream(s) for s in streams))
