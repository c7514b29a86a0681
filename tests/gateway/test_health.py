"""The pure health evaluation: every threshold edge, without I/O."""

from __future__ import annotations

from typing import Any

import pytest

from common.schemas import DetectorHeartbeat
from gateway.health import Observation, Thresholds, evaluate, format_age

NOW = 1_800_000_000_000
LIMITS = Thresholds(feed_stale_s=5, feed_down_s=30, detector_stale_s=5, detector_lag_s=5,
                    detector_down_s=30)


def beat(consumer: str = "detector-1", partitions: tuple[int, ...] = (0, 1), *,
         sent_ago_s: float = 0.5, newest_event_ms: int | None = NOW - 400,
         behind: int | None = 0, rebuilding: bool = False) -> DetectorHeartbeat:
    return DetectorHeartbeat(consumer=consumer, partitions=list(partitions),
                             sent_at_ms=NOW - int(sent_ago_s * 1000),
                             newest_event_ms=newest_event_ms, behind=behind,
                             rebuilding=rebuilding)


def seen(**overrides: Any) -> Observation:
    values: dict[str, Any] = {
        "now_ms": NOW, "partitions": 2, "newest_by_partition": {0: NOW - 400, 1: NOW - 600},
        "symbols": 612, "heartbeats": [beat()]}
    values.update(overrides)
    return Observation(**values)


def test_a_fresh_pipeline_is_ok_and_says_what_it_watches() -> None:
    health = evaluate(seen(), LIMITS)
    assert health.level == "ok"
    assert health.summary == "watching 612 symbols · data 0.4 s old"
    assert health.reasons == []
    assert health.newest_tick_ms == NOW - 400
    assert health.at_ms == NOW
    assert {name: c.level for name, c in health.components.items()} == {
        "bus": "ok", "feed": "ok", "detector": "ok"}
    assert health.components["detector"].detail == "1 detector consuming"


@pytest.mark.parametrize(("age_s", "level"), [(5.0, "ok"), (5.1, "warn"), (30.0, "warn"),
                                              (30.1, "down")])
def test_the_feed_is_stale_then_down_by_the_age_of_the_newest_tick(age_s: float,
                                                                    level: str) -> None:
    newest = NOW - int(age_s * 1000)
    beats = [beat(newest_event_ms=newest)]
    health = evaluate(seen(newest_by_partition={0: newest, 1: newest - 50},
                           heartbeats=beats), LIMITS)
    assert health.level == level
    assert health.components["feed"].level == level
    if level != "ok":
        assert health.reasons == [f"exchange feed stale for {format_age(age_s)}"]


def test_no_ticks_at_all_is_down() -> None:
    health = evaluate(seen(newest_by_partition={}, symbols=0), LIMITS)
    assert health.level == "down"
    assert health.summary == "no exchange data yet"
    assert "no exchange data on the bus" in health.reasons


def test_no_recent_heartbeat_is_no_detector_consuming() -> None:
    for beats in ([], [beat(sent_ago_s=5.1)]):
        health = evaluate(seen(heartbeats=beats), LIMITS)
        assert health.level == "down"
        assert health.reasons == ["no detector consuming"]
    assert evaluate(seen(heartbeats=[beat(sent_ago_s=4.9)]), LIMITS).level == "ok"


@pytest.mark.parametrize(("lag_s", "level"), [(5.0, "ok"), (8.0, "warn"), (31.0, "down")])
def test_a_detector_behind_the_feed(lag_s: float, level: str) -> None:
    beats = [beat(newest_event_ms=NOW - 400 - int(lag_s * 1000), behind=1200)]
    health = evaluate(seen(heartbeats=beats), LIMITS)
    assert health.level == level
    if level != "ok":
        assert health.reasons == [f"detector {format_age(lag_s)} behind (1,200 entries)"]


def test_partitions_nobody_reads_and_a_rebuild_are_warnings() -> None:
    health = evaluate(seen(partitions=4, heartbeats=[beat(partitions=(0, 1))]), LIMITS)
    assert health.level == "warn"
    assert health.reasons == ["no detector reading partitions 2, 3"]
    health = evaluate(seen(heartbeats=[beat(rebuilding=True)]), LIMITS)
    assert health.reasons == ["detector detector-1 rebuilding its windows"]
    both = [beat("a", (0,)), beat("b", (1,))]
    assert evaluate(seen(heartbeats=both), LIMITS).components["detector"].detail == (
        "2 detectors consuming")


def test_a_gateway_that_cannot_read_the_bus_knows_nothing() -> None:
    health = evaluate(seen(reading=False), LIMITS)
    assert health.level == "down"
    assert health.reasons == ["gateway cannot read the bus"]
    assert health.summary == "pipeline state unknown"


def test_the_worst_component_wins_and_every_reason_is_listed() -> None:
    newest = NOW - 12_000
    health = evaluate(seen(newest_by_partition={0: newest}, heartbeats=[]), LIMITS)
    assert health.level == "down"
    assert health.reasons == ["exchange feed stale for 12 s", "no detector consuming"]


def test_same_state_ignores_the_clock() -> None:
    first = evaluate(seen(), LIMITS)
    later = evaluate(seen(now_ms=NOW + 300), LIMITS)
    assert later.same_state(first)
    assert not evaluate(seen(heartbeats=[]), LIMITS).same_state(first)
    assert not first.same_state(None)


@pytest.mark.parametrize(("seconds", "text"), [(0.04, "0.0 s"), (0.44, "0.4 s"), (9.94, "9.9 s"),
                                               (12.4, "12 s"), (119, "119 s"), (180, "3 min"),
                                               (-1, "0.0 s")])
def test_ages_read_naturally(seconds: float, text: str) -> None:
    assert format_age(seconds) == text
