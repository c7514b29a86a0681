"""The soak under faults, five minutes of it (``python -m bench.soak`` runs the hour).

The same run as the benchmark, every part a real process: an ingestor, two detectors
sharing the partitions through leases (LEASE_S 2 s) and a gateway on Redis behind Sentinels
(a master, a replica, three Sentinels), the market from the fake exchange in its own
process, a kill -9 of one of the four services or of the Redis master every ~46 s so that
each kind happens (a shuffled round of all five, then one more), a supervisor that restarts
the killed part after 2 s, and a WebSocket client that resumes with ``since``. Every
scripted move must reach the client exactly once.

The load is scaled to what a loaded 2-core CI box sustains beside nothing else: 200
symbols × 2 frames/s (a twenty-fifth of the hour's 1,000 × 10) with a move every second, and
a 10 s window so that a restarted detector rebuilds in well under a second.

``SOAK_DURATION_S`` (default 300) lengthens or shortens it for local runs; the fault cadence
follows so that every kind is still killed at least once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

DURATION_S = float(os.environ.get("SOAK_DURATION_S", "300"))
WARMUP_S = 40.0
TAIL_S = 30.0
FAULT_EVERY_S = (DURATION_S - WARMUP_S - TAIL_S) / 5
# The bus: a master, a replica and three Sentinels, a kill -9 of the master fails over
# ("redis" for one server restarted after its kill).
BUS = os.environ.get("SOAK_BUS", "sentinel")
# The detectors: "shared" divides the partitions through leases (a kill is taken over by
# the survivor after LEASE_S), "fixed" gives each half for good (a kill waits for its
# restart).
DETECTORS = os.environ.get("SOAK_DETECTORS", "shared")
LEASE_S = 2.0
TARGETS = {"ingestor", "detector-a", "detector-b", "gateway", "redis"}
# Kill to partitions owned again, or to the first alert after the kill: the restart delay
# (2 s), a Python process's start on a loaded box, the window rebuild, and a heartbeat;
# shared detectors: the lease, the rebuild and a heartbeat.
RECOVERY_BOUND_S = 30.0
TAKEOVER_BOUND_S = LEASE_S + 12.0 if DETECTORS == "shared" else RECOVERY_BOUND_S
# Memory: a generous bound for a short run (the hour's note asks for 10 %; the services
# measured within 1 %). A Redis node is bounded in MiB instead: it starts at ~9 MiB, so a
# promotion's replication buffers, the alerts stream's growth (an alert a second, by design)
# and the allocator's share of trimmed stream nodes are large percentages of little
# (measured: a replica promoted early went from 9.2 to 18.6 MiB in five minutes).
SERVICE_GROWTH_PCT = 50.0
BUS_GROWTH_MIB = 32.0
MIN_SAMPLED_S = 60.0

pytestmark = [pytest.mark.e2e, pytest.mark.soak,
              pytest.mark.timeout(int(DURATION_S) + 240)]


def run_soak(tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "soak.json"
    argv = [sys.executable, "-m", "bench.soak", "--duration", str(DURATION_S),
            "--symbols", "200", "--frames-per-s", "2", "--window", "10",
            "--warmup", str(WARMUP_S), "--tail", str(TAIL_S),
            "--fault-every", f"{FAULT_EVERY_S:.1f}", "--seed", "13", "--bus", BUS,
            "--detectors", DETECTORS, "--lease", str(LEASE_S),
            "--json", str(out), "--logs", str(tmp_path / "logs")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=DURATION_S + 180,
                          check=False)
    print(done.stdout)
    assert done.returncode == 0, done.stderr[-4000:]
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def test_every_move_reaches_the_resuming_client_exactly_once_through_kills(
        tmp_path: Path) -> None:
    report = run_soak(tmp_path)

    minimum = 0.9 * (DURATION_S - WARMUP_S - TAIL_S)
    assert report["expected"] >= minimum, report["expected"]
    assert (report["lost"], report["duplicated"], report["unexpected"]) == (0, 0, 0), (
        report["lost_moves"], report["duplicate_ids"], report["unexpected_ids"])
    assert report["received"] == report["expected"]
    assert report["crashes"] == [], "a part exited without being killed"

    faults = report["faults"]
    assert {f["role"] for f in faults} == TARGETS
    for fault in faults:
        assert fault["pid"] is not None, fault  # it was running, and was killed
        assert fault["seconds"] is not None, fault
        if fault["kind"] == "takeover":
            assert fault["partitions"], fault  # its heartbeat said what it held
            assert fault["seconds"] <= TAKEOVER_BOUND_S, fault
        else:
            assert fault["seconds"] <= RECOVERY_BOUND_S, fault

    roles = {m["role"] for m in report["memory"]}
    assert roles >= TARGETS - {"redis"} | {"market"}
    assert any(role.startswith("redis") for role in roles)
    sampled = [m for m in report["memory"] if m["sampled_s"] >= MIN_SAMPLED_S]
    assert sampled
    for row in sampled:
        if row["role"].startswith(("redis", "sentinel")):
            assert row["end_kib"] - row["start_kib"] <= BUS_GROWTH_MIB * 1024, row
        else:
            assert row["change_pct"] <= SERVICE_GROWTH_PCT, row
