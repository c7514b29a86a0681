"""Pipeline health as a trader needs it: is the data fresh, is a detector looking at it?

Pure: ``evaluate`` turns what the gateway observed on the bus (an ``Observation``) and the
thresholds into a ``Health``, with no I/O and no clock of its own, so that every edge is a
unit test. ``gateway.health_monitor`` does the observing and publishes the result on
``/ws`` and ``/readyz``.

Three components, each ``ok``, ``warn`` or ``down``; the pipeline is as bad as its worst:

- ``bus``: can this gateway read the bus at all (if not, nothing below is known);
- ``feed``: how old the newest tick on ``ticks.*`` is (exchange event time, so a feed that
  connects but stays silent, an ingestor that is gone and an exchange that stopped all
  read as the same truth: the data is old);
- ``detector``: the heartbeats of the detectors (``detector.heartbeat``): none recent is
  "no detector consuming"; one whose newest processed tick trails the feed is "behind";
  partitions that no recent heartbeat names are read by nobody.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import msgspec

from common.schemas import DetectorHeartbeat

Level = Literal["ok", "warn", "down"]
_RANK: Final[dict[Level, int]] = {"ok": 0, "warn": 1, "down": 2}


@dataclass(frozen=True, slots=True)
class Thresholds:
    feed_stale_s: float = 5.0
    feed_down_s: float = 30.0
    detector_stale_s: float = 5.0
    detector_lag_s: float = 5.0
    detector_down_s: float = 30.0


@dataclass(frozen=True, slots=True)
class Observation:
    """What the gateway saw, all times in ms of the wall clock (ticks: exchange time)."""

    now_ms: int
    partitions: int
    reading: bool = True
    # Newest tick event time per partition that has any.
    newest_by_partition: Mapping[int, int] = field(default_factory=dict)
    symbols: int = 0
    heartbeats: Sequence[DetectorHeartbeat] = ()


class Component(msgspec.Struct, frozen=True):
    level: Level
    detail: str


class Health(msgspec.Struct, frozen=True):
    level: Level
    summary: str
    reasons: list[str]
    symbols: int
    newest_tick_ms: int | None
    at_ms: int
    components: dict[str, Component]

    def same_state(self, other: Health | None) -> bool:
        """Equal but for the clock: what a browser must be told again when it changes."""
        return other is not None and (self.level, self.symbols, self.components_levels()) == (
            other.level, other.symbols, other.components_levels())

    def components_levels(self) -> tuple[tuple[str, Level], ...]:
        return tuple((name, c.level) for name, c in self.components.items())


def format_age(seconds: float) -> str:
    """"0.4 s", "12 s", "3 min": a tenth is worth showing only while it is small."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


def worst(levels: Sequence[Level]) -> Level:
    return max(levels, key=_RANK.__getitem__, default="ok")


def _feed(seen: Observation, limits: Thresholds) -> Component:
    if not seen.newest_by_partition:
        return Component("down", "no exchange data on the bus")
    age_s = (seen.now_ms - max(seen.newest_by_partition.values())) / 1000
    if age_s > limits.feed_down_s:
        return Component("down", f"exchange feed stale for {format_age(age_s)}")
    if age_s > limits.feed_stale_s:
        return Component("warn", f"exchange feed stale for {format_age(age_s)}")
    return Component("ok", f"data {format_age(age_s)} old")


def _detector(seen: Observation, limits: Thresholds) -> Component:
    live = [b for b in seen.heartbeats
            if seen.now_ms - b.sent_at_ms <= limits.detector_stale_s * 1000]
    if not live:
        return Component("down", "no detector consuming")
    problems: list[tuple[Level, str]] = []
    covered = {p for b in live for p in b.partitions}
    missing = sorted(set(range(seen.partitions)) - covered)
    if missing:
        names = ", ".join(str(p) for p in missing)
        problems.append(("warn", f"no detector reading partition{'s' * (len(missing) > 1)} "
                                 f"{names}"))
    lag_s, behind = 0.0, 0
    for beat in live:
        if beat.rebuilding:
            problems.append(("warn", f"detector {beat.consumer} rebuilding its windows"))
            continue
        if beat.newest_event_ms is None:
            continue
        newest = [seen.newest_by_partition[p] for p in beat.partitions
                  if p in seen.newest_by_partition]
        if newest:
            lag_s = max(lag_s, (max(newest) - beat.newest_event_ms) / 1000)
        behind = max(behind, beat.behind or 0)
    if lag_s > limits.detector_lag_s:
        entries = f" ({behind:,} entries)" if behind else ""
        level: Level = "down" if lag_s > limits.detector_down_s else "warn"
        problems.append((level, f"detector {format_age(lag_s)} behind{entries}"))
    if problems:
        return Component(worst([lvl for lvl, _ in problems]),
                         "; ".join(text for _, text in problems))
    consumers = len(live)
    return Component("ok", f"{consumers} detector{'s' * (consumers > 1)} consuming")


def evaluate(seen: Observation, limits: Thresholds) -> Health:
    newest = max(seen.newest_by_partition.values(), default=None)
    if not seen.reading:
        down = Component("down", "gateway cannot read the bus")
        components = {"bus": down, "feed": Component("down", "unknown"),
                      "detector": Component("down", "unknown")}
        return Health("down", "pipeline state unknown", [down.detail], seen.symbols, newest,
                      seen.now_ms, components)
    components = {"bus": Component("ok", "reading"), "feed": _feed(seen, limits),
                  "detector": _detector(seen, limits)}
    level = worst([c.level for c in components.values()])
    reasons = [c.detail for c in components.values() if c.level != "ok"]
    if newest is None:
        summary = "no exchange data yet"
    else:
        summary = (f"watching {seen.symbols:,} symbol{'s' * (seen.symbols != 1)} · data "
                   f"{format_age((seen.now_ms - newest) / 1000)} old")
    return Health(level, summary, reasons, seen.symbols, newest, seen.now_ms, components)
