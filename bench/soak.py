"""A soak under faults: the whole pipeline for a long run at high load while its parts are
killed, measured from outside as a trader would see it.

Run (for the note, on a quiet machine, not in CI): ``python -m bench.soak`` — one hour at
ten times the real load (1,000 symbols × 10 frames/s, a scripted move every second), an
ingestor, two detectors sharing the partitions through leases and a gateway on Redis
behind Sentinels (a master, a replica, three Sentinels), and every two minutes a kill -9 of
one of them or of the Redis master, chosen by a seeded RNG (a shuffled round of all five, then
another, so every kind recurs evenly). A supervisor restarts what was killed after
``--restart-delay`` s, as systemd or Compose would. ``--json FILE`` writes the figures
(the test suite runs a five-minute version, tests/e2e/test_soak.py).

Reported: alerts expected / received / lost / duplicated / unexpected at a WebSocket client
that resumes with ``since`` (``bench.soak_client``); each fault with its takeover (a
detector: its partitions owned again) or recovery time (any other part: the first alert
after the kill), and the killed service's restart-to-healthy time; each process's memory
at the end of the warm-up and at its end (``bench.soak_report``).

The load comes from the fake exchange in a process of its own (``bench.soak_market``);
the services are real processes (``python -m <service>``) with their production code paths.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from bench.soak_client import HeartbeatLog, ResumingClient
from bench.soak_cluster import (
    Cluster,
    PlainRedis,
    Proc,
    SentinelRedis,
    clean_environment,
    healthy,
    python_launcher,
)
from bench.soak_market import Script
from bench.soak_report import Fault, Report, alerts_verdict, fault_outcomes, memory_rows, render
from common.runner import wait_or_stop
from tools.redis_server import free_port, wait_for_port

log = logging.getLogger(__name__)

PARTITIONS: Final = 4
DETECTORS: Final = ("detector-a", "detector-b")
SERVICES: Final = ("ingestor", *DETECTORS, "gateway")
THRESHOLD_PCT: Final = 2.0  # the market's moves are ±2.9-3 %, its wiggle under 0.2 %
REBUILD_MARGIN_S: Final = 10


@dataclass(frozen=True)
class Options:
    duration_s: float = 3600.0
    symbols: int = 1000
    frames_per_s: float = 10.0
    move_every_s: float = 1.0
    fault_every_s: float = 120.0
    seed: int = 13
    window_s: int = 60
    warmup_s: float = 120.0  # no fault, no expected move, no memory sample before this
    tail_s: float = 60.0  # no fault and no expected move in the last tail_s: time to recover
    restart_delay_s: float = 2.0
    # "fixed": DETECTOR_PARTITIONS splits the partitions; "shared": leases divide them.
    detectors: str = "shared"
    lease_s: float = 5.0
    # "redis": one server, restarted after a kill; "sentinel": a master, a replica and
    # three Sentinels, a kill of the master fails over.
    bus: str = "sentinel"
    targets: tuple[str, ...] = (*SERVICES, "redis")

    def problem(self) -> str | None:
        if self.symbols * self.move_every_s < 2 * self.window_s:
            return ("--symbols × --move-every must be at least twice --window: a symbol moves "
                    "again only after its alert's cooldown (one window) has passed")
        if self.duration_s <= self.warmup_s + self.tail_s:
            return "--duration must exceed --warmup + --tail"
        if self.fault_every_s <= 0 or self.frames_per_s <= 0 or self.restart_delay_s < 0:
            return "--fault-every and --frames-per-s must be > 0, --restart-delay >= 0"
        return None


def fault_plan(options: Options, started_s: float) -> list[tuple[float, str]]:
    """When and what to kill: every ``fault_every_s`` from the end of the warm-up to the
    tail, the targets in seeded shuffled rounds (each kind once per round)."""
    rng = random.Random(options.seed)
    plan: list[tuple[float, str]] = []
    at = started_s + options.warmup_s
    round_: list[str] = []
    while at <= started_s + options.duration_s - options.tail_s:
        if not round_:
            round_ = list(options.targets)
            rng.shuffle(round_)
        plan.append((at, round_.pop()))
        at += options.fault_every_s
    return plan


Bus = PlainRedis | SentinelRedis


def make_bus(options: Options, scratch: Path) -> Bus:
    if options.bus == "sentinel":
        return SentinelRedis(scratch / "sentinel")
    return PlainRedis(scratch / "redis")


def build(options: Options, scratch: Path, t0: float, bus_url: str
          ) -> tuple[dict[str, Proc], dict[str, str]]:
    """The services and the market, not started, the market's first move at ``t0``; the
    addresses the harness watches."""
    ports = {name: free_port() for name in ("market", "gateway", "ingestor", *DETECTORS)}
    retention_s = options.window_s + REBUILD_MARGIN_S + 30
    common = clean_environment(
        BUS_URL=bus_url, TICK_PARTITIONS=str(PARTITIONS), TICKS_RETENTION_S=str(retention_s),
        METRICS_HOST="127.0.0.1", LOG_LEVEL="INFO", SHUTDOWN_TIMEOUT_S="10")
    procs: dict[str, Proc] = {}
    procs["ingestor"] = Proc("ingestor", python_launcher("ingestor", {
        **common, "BINANCE_WS_URL": f"ws://127.0.0.1:{ports['market']}/market/stream"
                                    "?streams=!miniTicker@arr",
        "INGESTOR_METRICS_PORT": str(ports["ingestor"])}, scratch / "ingestor.log"),
        health_url=f"http://127.0.0.1:{ports['ingestor']}/healthz")
    for i, role in enumerate(DETECTORS):
        env = {**common, "WINDOW_S": str(options.window_s),
               "THRESHOLD_UP_PCT": str(THRESHOLD_PCT), "THRESHOLD_DOWN_PCT": str(THRESHOLD_PCT),
               "REBUILD_MARGIN_S": str(REBUILD_MARGIN_S),
               "DETECTOR_METRICS_PORT": str(ports[role])}
        per_start = None
        if options.detectors == "fixed":
            # Half the partitions each, for good; a restart takes its own back by name.
            share = [p for p in range(PARTITIONS) if p % len(DETECTORS) == i]
            env.update(DETECTOR_PARTITIONS=",".join(map(str, share)), DETECTOR_CONSUMER=role)
        else:
            # Shared through leases: every process a member of its own, as the default
            # name (host and pid) would be, but one the report can tie to its role.
            env["LEASE_S"] = str(options.lease_s)
            per_start = _member_name(role)
        procs[role] = Proc(role, python_launcher("detector", env, scratch / f"{role}.log",
                                                 per_start=per_start),
                           health_url=f"http://127.0.0.1:{ports[role]}/healthz")
    procs["gateway"] = Proc("gateway", python_launcher("gateway", {
        **common, "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(ports["gateway"])},
        scratch / "gateway.log"), health_url=f"http://127.0.0.1:{ports['gateway']}/readyz")
    market_argv = ["--port", str(ports["market"]), "--symbols", str(options.symbols),
                   "--frames-per-s", str(options.frames_per_s), "--t0", f"{t0:.3f}",
                   "--move-every", str(options.move_every_s)]
    procs["market"] = Proc("market", python_launcher(
        "bench.soak_market", common, scratch / "market.log", market_argv), restart=False)
    addresses = {"ws": f"ws://127.0.0.1:{ports['gateway']}/ws",
                 "market_port": str(ports["market"])}
    return procs, addresses


def _member_name(role: str) -> Callable[[int], dict[str, str]]:
    return lambda start: {"DETECTOR_CONSUMER": f"{role}.{start}"}


async def inject(cluster: Cluster, bus: Bus, plan: list[tuple[float, str]],
                 faults: list[Fault], stopping: asyncio.Event) -> None:
    for at, role in plan:
        if await wait_or_stop(stopping, max(0.0, at - time.time())):
            return
        node = await asyncio.to_thread(bus.master_role) if role == "redis" else role
        life = cluster.kill(node)
        killed_at = time.time()
        log.info("kill -9 %s (%s, pid %s)", role, node, None if life is None else life.pid)
        promoted = None
        if role == "redis" and life is not None:
            promoted = await asyncio.to_thread(bus.wait_promoted, node)
        faults.append(Fault(killed_at, role, None if life is None else life.pid,
                            node if node != role else "", promoted))


async def wait_ready(cluster: Cluster, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    for proc in cluster.procs.values():
        while proc.health_url is not None and not await asyncio.to_thread(
                healthy, proc.health_url):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{proc.role} not healthy after {timeout_s:.0f}s")
            await asyncio.sleep(0.2)


async def run(options: Options, scratch: Path) -> Report:
    bus = make_bus(options, scratch)
    cluster = Cluster({}, options.restart_delay_s)
    stopping = asyncio.Event()
    faults: list[Fault] = []
    try:
        await asyncio.to_thread(bus.start, cluster)
        t0 = time.time() + 5.0
        procs, addresses = build(options, scratch, t0, bus.url)
        cluster.procs.update(procs)
        script = Script(t0, options.move_every_s, options.symbols)
        client = ResumingClient(addresses["ws"])
        beats = HeartbeatLog(bus.url)
        await asyncio.to_thread(cluster.start, ["market"])
        await asyncio.to_thread(wait_for_port, "127.0.0.1", int(addresses["market_port"]))
        await asyncio.to_thread(cluster.start, list(SERVICES))
        await wait_ready(cluster)
        started = time.time()
        cluster.memory_from_s = started + options.warmup_s
        plan = fault_plan(options, started)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(cluster.supervise(stopping), name="supervisor")
            tasks.create_task(client.run(stopping), name="client")
            tasks.create_task(beats.run(stopping), name="heartbeats")
            tasks.create_task(inject(cluster, bus, plan, faults, stopping), name="faults")
            await wait_or_stop(stopping, started + options.duration_s - time.time())
            stopping.set()
    finally:
        await asyncio.to_thread(cluster.stop, [*SERVICES, "market"])
        await asyncio.to_thread(bus.stop)
    expected = script.moves_between(started + options.warmup_s,
                                    started + options.duration_s - options.tail_s)
    verdict = alerts_verdict(script, expected, client.received, client.duplicates)
    return Report(
        **verdict, overlap=client.overlap,
        faults=fault_outcomes(faults, beats.beats, client.received, cluster.procs),
        memory=memory_rows(cluster.procs), crashes=cluster.crashes,
        connections=client.connections, resumes=client.resumes,
        unknown_since=client.unknown_since,
        settings={**asdict(options), "started_s": started,
                  "partitions": PARTITIONS, "threshold_pct": THRESHOLD_PCT,
                  "cores": os.cpu_count(),
                  "load_average": os.getloadavg()})


def parse_args(argv: list[str] | None = None) -> tuple[Options, Path | None, Path | None]:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Options()
    p.add_argument("--duration", type=float, default=d.duration_s, help="seconds")
    p.add_argument("--symbols", type=int, default=d.symbols)
    p.add_argument("--frames-per-s", type=float, default=d.frames_per_s)
    p.add_argument("--move-every", type=float, default=d.move_every_s, help="seconds")
    p.add_argument("--fault-every", type=float, default=d.fault_every_s, help="seconds")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--window", type=int, default=d.window_s, help="the rule's WINDOW_S")
    p.add_argument("--warmup", type=float, default=d.warmup_s, help="seconds")
    p.add_argument("--tail", type=float, default=d.tail_s, help="seconds")
    p.add_argument("--restart-delay", type=float, default=d.restart_delay_s, help="seconds")
    p.add_argument("--detectors", choices=("fixed", "shared"), default=d.detectors,
                   help="shared: leases (LEASE_S, the default); fixed: DETECTOR_PARTITIONS "
                        "halves")
    p.add_argument("--lease", type=float, default=d.lease_s, help="LEASE_S, shared only")
    p.add_argument("--bus", choices=("redis", "sentinel"), default=d.bus,
                   help="sentinel: master, replica, 3 Sentinels (the default); redis: one "
                        "server, restarted after its kill")
    p.add_argument("--json", type=Path, help="write the report there as JSON")
    p.add_argument("--logs", type=Path, help="keep the processes' logs in this folder")
    a = p.parse_args(argv)
    options = Options(
        duration_s=a.duration, symbols=a.symbols, frames_per_s=a.frames_per_s,
        move_every_s=a.move_every, fault_every_s=a.fault_every, seed=a.seed,
        window_s=a.window, warmup_s=a.warmup, tail_s=a.tail, restart_delay_s=a.restart_delay,
        detectors=a.detectors, lease_s=a.lease, bus=a.bus)
    problem = options.problem()
    if problem is not None:
        p.error(problem)
    return options, a.json, a.logs


def main(argv: list[str] | None = None) -> int:
    options, json_path, logs = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="soak-") as scratch:
        folder = logs if logs is not None else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        report = asyncio.run(run(options, folder))
    print(render(report))
    if json_path is not None:
        json_path.write_text(json.dumps(report.to_json(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
