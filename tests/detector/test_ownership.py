"""What the detector keeps of the partitions it owns, and how a move is counted."""

from __future__ import annotations

from common.partitioning import partition_of, ticks_stream
from detector.metrics import DetectorMetrics
from detector.ownership import Ownership


def changes(metrics: DetectorMetrics) -> dict[str, float]:
    return {change: metrics.registry.get_sample_value(
        "detector_ownership_changes_total", {"change": change}) or 0.0
        for change in ("gained", "lost", "released")}


def test_moves_are_told_apart_and_counted_per_partition() -> None:
    metrics = DetectorMetrics()
    ownership = Ownership(4, metrics)
    moves = ownership.update(frozenset({ticks_stream(0), ticks_stream(2)}), stalled=False)
    assert moves.gained == {ticks_stream(0), ticks_stream(2)}
    assert not moves.left
    assert ownership.partitions() == [0, 2]
    moves = ownership.update(frozenset({ticks_stream(2), ticks_stream(3)}), stalled=False)
    assert moves.gained == {ticks_stream(3)}
    assert moves.left == {ticks_stream(0)}
    ownership.update(frozenset({ticks_stream(3)}), stalled=True)  # after a stall: taken
    assert ownership.lose([ticks_stream(3), ticks_stream(1)]) == {ticks_stream(3)}
    assert ownership.partitions() == []
    assert changes(metrics) == {"gained": 3, "released": 1, "lost": 2}
    assert metrics.registry.get_sample_value("detector_partitions_owned") == 0


def test_the_symbols_of_a_partition_are_those_the_ingestor_routes_to_it() -> None:
    ownership = Ownership(4, DetectorMetrics())
    picks = ownership.symbols_of([ticks_stream(1)])
    symbols = [f"SYM{i:03d}USDT" for i in range(40)]
    assert [s for s in symbols if picks(s)] == [s for s in symbols if partition_of(s, 4) == 1]
