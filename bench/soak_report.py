"""The soak's verdict, computed after the run from what was recorded (pure: no I/O).

- **Alerts**: each received alert is matched to the scripted move it belongs to (same
  symbol and direction, event time between the move's start and the symbol's next move).
  Expected: the moves of the measured span; lost: an expected move with no alert;
  duplicated: an id delivered twice (live or in a resumed history), or a second id for one
  move; unexpected: an alert that matches no move.
- **Faults**: a detector's takeover is kill → every partition it held (its last heartbeat)
  listed again by a heartbeat sent after the kill by a detector that is not rebuilding; for
  any other part, recovery is kill → the first alert received whose event time is after the
  kill (the pipeline carries a move again end to end), and ``ready_s`` kill → the restarted
  process answering its health check.
- **Memory**: each process's RSS at its first sample past the warm-up and at its last, with
  the change in %.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.soak_client import Beat, Received
from bench.soak_cluster import Proc
from bench.soak_market import Move, Script

CLOCK_SLACK_S = 0.5  # the exchange stamps at send time; the harness schedules by its clock


@dataclass(frozen=True, slots=True)
class Fault:
    at_s: float
    role: str  # what the plan said: a service, or "redis" (the master)
    pid: int | None  # None: the role was not running, nothing was killed
    node: str = ""  # the process killed, when it differs from ``role`` (a Redis node)
    promoted_s: float | None = None  # a replica took over as master (Sentinel)


@dataclass
class FaultOutcome:
    at_s: float
    role: str
    pid: int | None
    kind: str  # "takeover" (a detector) or "recovery"
    seconds: float | None  # None: never within the run
    ready_s: float | None = None  # the killed process healthy again, or a replica promoted
    partitions: list[int] = field(default_factory=list)
    by: list[str] = field(default_factory=list)  # the detectors that took the partitions


@dataclass
class Memory:
    role: str
    pid: int
    lived_s: float
    sampled_s: float
    start_kib: int
    end_kib: int

    @property
    def change_pct(self) -> float:
        return (self.end_kib - self.start_kib) / self.start_kib * 100.0


@dataclass
class Report:
    expected: int
    received: int
    lost: int
    duplicated: int
    unexpected: int
    overlap: int
    delay_p50_s: float | None
    delay_max_s: float | None
    lost_moves: list[dict[str, Any]]
    duplicate_ids: list[str]
    unexpected_ids: list[str]
    faults: list[FaultOutcome]
    memory: list[Memory]
    crashes: list[tuple[str, float, int | None]]
    connections: int
    resumes: int
    unknown_since: int
    settings: dict[str, Any] = field(default_factory=dict)

    def by_role(self) -> list[tuple[str, int, int, float]]:
        """Each role across its restarts: its first sample of the run, its last, the
        change in % (a role whose processes grow from one life to the next drifts here)."""
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        for m in self.memory:
            first.setdefault(m.role, m.start_kib)
            last[m.role] = m.end_kib
        return [(role, first[role], last[role], (last[role] - first[role]) / first[role] * 100)
                for role in first]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for row, memory in zip(out["memory"], self.memory, strict=True):
            row["change_pct"] = round(memory.change_pct, 2)
        out["memory_by_role"] = [{"role": role, "start_kib": a, "end_kib": b,
                                  "change_pct": round(pct, 2)}
                                 for role, a, b, pct in self.by_role()]
        return out


def match_move(script: Script, alert: Received) -> Move | None:
    """The scripted move ``alert`` belongs to, or None."""
    if not alert.symbol.startswith("SOAK") or not alert.symbol.endswith("USDT"):
        return None
    try:
        i = int(alert.symbol[4:-4])
    except ValueError:
        return None
    if not 0 <= i < script.symbols:
        return None
    t = alert.event_time_ms / 1000.0 + CLOCK_SLACK_S
    rotation = script.symbols * script.every_s
    j = int((t - script.t0 - i * script.every_s) // rotation)
    if j < 0:
        return None
    move = script.move(i + j * script.symbols)
    return move if move.direction == alert.direction else None


def alerts_verdict(script: Script, expected: list[Move], received: list[Received],
                   duplicates: list[Received]) -> dict[str, Any]:
    by_move: dict[int, list[Received]] = defaultdict(list)
    unexpected = []
    for alert in received:
        move = match_move(script, alert)
        if move is None:
            unexpected.append(alert.id)
        else:
            by_move[move.index].append(alert)
    lost = [m for m in expected if m.index not in by_move]
    second_ids = [a.id for alerts in by_move.values() for a in alerts[1:]]
    delays = sorted(by_move[m.index][0].at_s - m.start_s for m in expected if m.index in by_move)
    return {
        "expected": len(expected),
        "received": sum(1 for m in expected if m.index in by_move),
        "lost": len(lost),
        "duplicated": len(duplicates) + len(second_ids),
        "unexpected": len(unexpected),
        "delay_p50_s": round(statistics.median(delays), 3) if delays else None,
        "delay_max_s": round(delays[-1], 3) if delays else None,
        "lost_moves": [{"index": m.index, "symbol": m.symbol, "direction": m.direction,
                        "start_s": m.start_s} for m in lost],
        "duplicate_ids": [a.id for a in duplicates] + second_ids,
        "unexpected_ids": unexpected,
    }


def owns(consumer: str, role: str) -> bool:
    """Heartbeats of ``role``'s processes: the consumer is the role, or ``<role>.<life>``."""
    return consumer == role or consumer.startswith(role + ".")


def takeover(fault: Fault, beats: list[Beat]) -> FaultOutcome:
    held: list[int] = []
    for beat in beats:
        hb = beat.heartbeat
        if hb.sent_at_ms / 1000.0 < fault.at_s and owns(hb.consumer, fault.role):
            held = sorted(hb.partitions)
    outcome = FaultOutcome(fault.at_s, fault.role, fault.pid, "takeover", None,
                           partitions=held)
    missing = set(held)
    by: set[str] = set()
    for beat in beats:
        hb = beat.heartbeat
        if hb.sent_at_ms / 1000.0 <= fault.at_s or hb.rebuilding:
            continue
        covered = missing & set(hb.partitions)
        if covered:
            missing -= covered
            by.add(hb.consumer)
        if not missing:
            outcome.seconds = round(beat.at_s - fault.at_s, 3)
            break
    outcome.by = sorted(by)
    return outcome


def recovery(fault: Fault, received: list[Received], proc: Proc | None) -> FaultOutcome:
    outcome = FaultOutcome(fault.at_s, fault.role, fault.pid, "recovery", None)
    after = [a.at_s for a in received if a.event_time_ms / 1000.0 > fault.at_s]
    if after:
        outcome.seconds = round(min(after) - fault.at_s, 3)
    if proc is not None:
        ready = [life.ready_s for life in proc.lives
                 if life.started_s > fault.at_s and life.ready_s is not None]
        if ready:
            outcome.ready_s = round(min(ready) - fault.at_s, 3)
    return outcome


def fault_outcomes(faults: list[Fault], beats: list[Beat], received: list[Received],
                   procs: dict[str, Proc]) -> list[FaultOutcome]:
    outcomes = []
    for fault in faults:
        if fault.role.startswith("detector"):
            outcome = takeover(fault, beats)
            restarted = recovery(fault, [], procs.get(fault.role))
            outcome.ready_s = restarted.ready_s
        else:
            outcome = recovery(fault, received, procs.get(fault.node or fault.role))
            if fault.promoted_s is not None:
                outcome.ready_s = round(fault.promoted_s - fault.at_s, 3)
                outcome.by = [fault.node]
        outcomes.append(outcome)
    return outcomes


def memory_rows(procs: dict[str, Proc]) -> list[Memory]:
    rows = []
    for proc in procs.values():
        for life in proc.lives:
            if life.rss_first is None or life.rss_last is None:
                continue
            ended = life.ended_s if life.ended_s is not None else life.rss_last[0]
            rows.append(Memory(proc.role, life.pid, round(ended - life.started_s, 1),
                               round(life.rss_last[0] - life.rss_first[0], 1),
                               life.rss_first[1], life.rss_last[1]))
    return rows


def render(report: Report) -> str:
    """The readable table printed at the end of a run."""
    lines = [
        f"alerts: expected {report.expected}, received {report.received}, lost {report.lost}, "
        f"duplicated {report.duplicated}, unexpected {report.unexpected} "
        f"(history overlap {report.overlap}, not shown twice by the page)",
        f"move → alert at the client: median {report.delay_p50_s} s, max {report.delay_max_s} s"
        f"; client connections {report.connections} ({report.resumes} resumed with since, "
        f"{report.unknown_since} refused as unknown)",
        "",
        f"{'fault at':>9}  {'kill -9':<11} {'what':<9} {'seconds':>8} {'ready':>7}  detail",
    ]
    start = report.settings.get("started_s", 0.0)
    for f in report.faults:
        seconds = "never" if f.seconds is None else f"{f.seconds:.2f}"
        ready = "-" if f.ready_s is None else f"{f.ready_s:.2f}"
        detail = (f"partitions {f.partitions} → {', '.join(f.by) or 'nobody'}"
                  if f.kind == "takeover" else "first alert after the kill")
        if f.by and f.kind == "recovery":
            detail += f"; master {f.by[0]} killed, ready = a replica promoted"
        if f.pid is None:
            detail = "not running: skipped"
        lines.append(f"{f.at_s - start:>8.1f}s  {f.role:<11} {f.kind:<9} {seconds:>8} "
                     f"{ready:>7}  {detail}")
    lines += ["", f"{'process':<11} {'pid':>7} {'lived s':>8} {'sampled s':>9} "
                  f"{'RSS start':>10} {'RSS end':>10} {'change':>8}"]
    for m in report.memory:
        lines.append(f"{m.role:<11} {m.pid:>7} {m.lived_s:>8.0f} {m.sampled_s:>9.0f} "
                     f"{m.start_kib / 1024:>8.1f}MB {m.end_kib / 1024:>8.1f}MB "
                     f"{m.change_pct:>+7.1f}%")
    lines.append("across restarts (a role's first sample → its last): " + ", ".join(
        f"{role} {a / 1024:.1f} → {b / 1024:.1f} MB ({pct:+.1f}%)"
        for role, a, b, pct in report.by_role()))
    if report.crashes:
        lines += ["", "exits the soak did not cause: " + ", ".join(
            f"{role} (code {code}) at {at - start:.0f}s" for role, at, code in report.crashes)]
    return "\n".join(lines)
