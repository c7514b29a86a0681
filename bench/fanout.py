"""Gateway fan-out: many WebSocket clients, alerts written into ``alerts`` as the detector
writes them, delay from the write to each client's receipt and the gateway's CPU per
delivery.

Run: ``python -m bench.fanout --clients 2000 --rate 5`` (steady), ``--clients 1000 --burst
100 --burst-seconds 2`` (a crash), ``--clients 20000 --rate 1 --workers 4`` (several worker
processes behind one port, ``GATEWAY_WORKERS``) or ``--gateways 4`` (that many separate
gateway processes on ports of their own, the clients spread over them).

The gateway runs as a real process (``python -m gateway``); the clients live in other
processes (``--client-processes``), each holding many connections with a minimal asyncio
client (a full client library costs more CPU per message than the gateway under test). Each
alert's ``detected_at_ms`` is the wall clock just before its ``XADD``, so the delay is
receipt − write. The gateway's CPU is utime + stime of its processes (``/proc``) over the
measured phase, divided by the alerts the clients received; memory per client is the
growth of the gateway's RSS from before the clients connected to after.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import multiprocessing
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import cast

from common.bus import Record, Retention
from common.bus.redis_streams import RedisConfig, RedisTransport
from common.partitioning import ALERTS_STREAM
from common.schemas import Alert, alert_id, encode_alert
from tools.redis_server import free_port, start_redis_server

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
DETECTED_AT = re.compile(rb'"detected_at_ms":(\d+)')
CONNECT_CONCURRENCY = 200
DRAIN_S = 3.0  # after the last write: time for the tail of the fan-out to arrive


def raise_nofile(limit: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, limit)) if hard != resource.RLIM_INFINITY else max(soft, limit)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


# -- clients -------------------------------------------------------------------------------

class BenchClient(asyncio.Protocol):
    """A WebSocket client that only reads: handshake, then unmasked server frames; answers
    protocol pings (masked pong, as a client must) and records each alert's delay."""

    def __init__(self, delays: list[float], host: str, port: int,
                 connected: asyncio.Future[None]) -> None:
        self.delays = delays
        self.request = (f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}"
                        "\r\n\r\n").encode()
        self.connected = connected
        self.buffer = b""
        self.open = False
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.connected.done():
            self.connected.set_exception(ConnectionError("closed during the handshake"))

    def data_received(self, data: bytes) -> None:
        now_ms = time.time() * 1000
        buffer = self.buffer + data if self.buffer else data
        if not self.open:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.connected.set_exception(ConnectionError(buffer[:40].decode()))
                return
            self.open = True
            self.connected.set_result(None)
            buffer = buffer[end + 4:]
        offset = 0
        size = len(buffer)
        while size - offset >= 2:
            opcode = buffer[offset] & 0x0F
            length = buffer[offset + 1] & 0x7F
            start = offset + 2
            if length == 126:
                if size - start < 2:
                    break
                length = int.from_bytes(buffer[start:start + 2], "big")
                start += 2
            elif length == 127:
                if size - start < 8:
                    break
                length = int.from_bytes(buffer[start:start + 8], "big")
                start += 8
            if size - start < length:
                break
            payload = buffer[start:start + length]
            offset = start + length
            if opcode == 0x1:
                self.record(payload, now_ms)
            elif opcode == 0x9 and self.transport is not None:  # protocol ping: pong
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
        self.buffer = buffer[offset:]


    def record(self, payload: bytes, now_ms: float) -> None:
        if payload.startswith(b'{"type":"alert",'):  # the common case, without a regex
            at = payload.find(b'"detected_at_ms":') + 17
            self.delays.append(now_ms - int(payload[at:payload.find(b",", at)]))
        elif payload.startswith(b'{"type":"alerts",'):
            self.delays.extend(now_ms - int(m) for m in DETECTED_AT.findall(payload))


async def hold_clients(targets: list[tuple[str, int]], count: int, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    delays: list[float] = []
    clients: list[BenchClient] = []
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def open_one(i: int) -> None:
        host, port = targets[i % len(targets)]
        async with gate:
            connected: asyncio.Future[None] = loop.create_future()
            _, client = await loop.create_connection(
                lambda: BenchClient(delays, host, port, connected), host, port)
            await asyncio.wait_for(connected, 30)
            clients.append(client)

    async with asyncio.TaskGroup() as group:
        for i in range(count):
            group.create_task(open_one(i))
    conn.send(("connected", len(clients)))
    await loop.run_in_executor(None, conn.recv)  # "stop"
    conn.send(("delays", delays, sum(c.closed for c in clients)))


def client_process(targets: list[tuple[str, int]], count: int, conn: Connection) -> None:
    raise_nofile(count + 100)
    import uvloop

    uvloop.run(hold_clients(targets, count, conn))


# -- the gateway ---------------------------------------------------------------------------

@dataclass
class Gateway:
    process: subprocess.Popen[bytes]
    port: int

    def pids(self) -> list[int]:
        """The process and its children (worker processes, when there are any)."""
        found = [self.process.pid]
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{self.process.pid}/task").iterdir():
                children = (task / "children").read_text().split()
                found.extend(int(c) for c in children)
        return found

    def cpu_s(self) -> tuple[float, float]:
        """User and system CPU seconds of the gateway's processes so far."""
        user = system = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                user += int(fields[11])
                system += int(fields[12])
        return user / CLOCK_TICKS, system / CLOCK_TICKS

    def rss_bytes(self) -> int:
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        return total


def start_gateway(bus_url: str, log_path: Path, *, max_clients: int,
                  workers: int) -> Gateway:
    port = free_port()
    env = {**os.environ, "BUS_URL": bus_url, "GATEWAY_HOST": "127.0.0.1",
           "GATEWAY_PORT": str(port), "MAX_CLIENTS": str(max_clients), "LOG_LEVEL": "WARNING",
           "HISTORY_SIZE": "0", "SHUTDOWN_TIMEOUT_S": "10"}
    if workers > 1:
        env["GATEWAY_WORKERS"] = str(workers)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway"], env=env, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=lambda: raise_nofile(max_clients + 1000))
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return Gateway(process, port)
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"gateway did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.1)


# -- the run -------------------------------------------------------------------------------

def alert_now(n: int) -> Alert:
    now = int(time.time() * 1000)
    symbol = f"B{n % 500:03d}USDT"
    return Alert(id=alert_id(symbol, 60, now + n), symbol=symbol, direction="up",
                 change_pct=2.5, price=102.5, base_price=100.0, window_s=60,
                 threshold_pct=2.0, event_time_ms=now, detected_at_ms=now,
                 source="mini_ticker", path=[(now - 1000 * (20 - i), 100.0 + i * 0.1)
                                             for i in range(20)])


async def produce(bus_url: str, times: list[float]) -> int:
    """One XADD per alert at the given offsets (seconds from now), as the detector does."""
    bus = RedisTransport(RedisConfig(bus_url, timeout_s=5))
    await bus.start()
    try:
        start = time.monotonic()
        for n, at in enumerate(times):
            await asyncio.sleep(max(0.0, start + at - time.monotonic()))
            alert = alert_now(n)
            await bus.publish([Record(ALERTS_STREAM, alert.symbol, encode_alert(alert))])
    finally:
        await bus.close()
    return len(times)


async def declare(bus_url: str) -> None:
    bus = RedisTransport(RedisConfig(bus_url, timeout_s=5))
    await bus.start()
    try:
        await bus.declare([ALERTS_STREAM], Retention(max_len=10_000))
    finally:
        await bus.close()


@dataclass
class Figures:
    cpu_us_per_delivery: float
    user_us_per_delivery: float  # the rest is the kernel's (on loopback, both TCP ends)
    p50_ms: float
    p99_ms: float
    max_ms: float
    deliveries: int
    expected: int
    rss_per_client_kib: float
    rss_mib: float
    dropped: int


@contextlib.contextmanager
def gateways(bus_url: str, scratch: Path, args: argparse.Namespace) -> Iterator[list[Gateway]]:
    count = max(1, args.gateways)
    per = -(-args.clients // count) + 100
    started = [start_gateway(bus_url, scratch / f"gateway{i}.log", max_clients=per,
                             workers=args.workers) for i in range(count)]
    try:
        yield started
    finally:
        for gateway in started:
            gateway.process.terminate()
        for gateway in started:
            try:
                gateway.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                gateway.process.kill()


def schedule(args: argparse.Namespace) -> list[float]:
    if args.burst:
        return [i * args.burst_seconds / args.burst for i in range(args.burst)]
    return [i / args.rate for i in range(int(args.seconds * args.rate))]


def run(args: argparse.Namespace, scratch: Path) -> Figures:
    port = free_port()
    redis = start_redis_server(port, scratch / "redis", appendonly=False)
    bus_url = f"redis://127.0.0.1:{port}/0"
    try:
        asyncio.run(declare(bus_url))
        with gateways(bus_url, scratch, args) as started:
            return measure(args, bus_url, started)
    finally:
        redis.terminate()
        redis.wait(timeout=10)


@contextlib.contextmanager
def profiling(output: str | None, pid: int) -> Iterator[None]:
    """py-spy samples the (first) gateway during the measured phase, when asked."""
    if output is None:
        yield
        return
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        raise SystemExit("--profile needs py-spy beside this interpreter: make install "
                         "(it is in the dev extra)")
    sampler = subprocess.Popen([str(spy), "record", "--pid", str(pid), "--format", "raw",
                                "--output", output, "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        sampler.send_signal(signal.SIGINT)
        sampler.wait(timeout=30)


def measure(args: argparse.Namespace, bus_url: str, started: list[Gateway]) -> Figures:
    targets = [("127.0.0.1", g.port) for g in started]
    rss_before = sum(g.rss_bytes() for g in started)
    spawn = multiprocessing.get_context("spawn")
    links = []
    share = [args.clients // args.client_processes] * args.client_processes
    share[0] += args.clients - sum(share)
    for count in share:
        ours, theirs = spawn.Pipe()
        spawn.Process(target=client_process, args=(targets, count, theirs), daemon=True).start()
        links.append(ours)
    connected = sum(link.recv()[1] for link in links)
    if connected != args.clients:
        raise SystemExit(f"only {connected} of {args.clients} clients connected")
    time.sleep(1.0)  # let the handshakes' garbage settle before measuring
    rss_after = sum(g.rss_bytes() for g in started)
    cpu_before = [g.cpu_s() for g in started]
    times = schedule(args)
    with profiling(args.profile, started[0].process.pid):
        asyncio.run(produce(bus_url, times))
        time.sleep(DRAIN_S)
    cpu_after = [g.cpu_s() for g in started]
    user = sum(a[0] - b[0] for a, b in zip(cpu_after, cpu_before, strict=True))
    system = sum(a[1] - b[1] for a, b in zip(cpu_after, cpu_before, strict=True))
    delays: list[float] = []
    dropped = 0
    for link in links:
        link.send("stop")
    for link in links:
        _, got, closed = link.recv()
        delays.extend(got)
        dropped += closed
    expected = len(times) * args.clients
    if len(delays) < 2:
        raise SystemExit("fanout: too few deliveries to measure")
    cuts = statistics.quantiles(delays, n=100)
    return Figures(cpu_us_per_delivery=(user + system) / len(delays) * 1e6,
                   user_us_per_delivery=user / len(delays) * 1e6, p50_ms=cuts[49],
                   p99_ms=cuts[98], max_ms=max(delays), deliveries=len(delays),
                   expected=expected,
                   rss_per_client_kib=(rss_after - rss_before) / args.clients / 1024,
                   rss_mib=rss_after / 2**20, dropped=dropped)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=5.0, help="alerts per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of a --rate run")
    parser.add_argument("--burst", type=int, default=0, help="alerts of one burst")
    parser.add_argument("--burst-seconds", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=1, help="GATEWAY_WORKERS")
    parser.add_argument("--gateways", type=int, default=1,
                        help="separate gateway processes, each on a port of its own")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--profile", metavar="FILE",
                        help="py-spy samples of the gateway (raw, collapsed stacks) to FILE")
    args = parser.parse_args()
    raise_nofile(args.clients + 1000)
    with tempfile.TemporaryDirectory() as scratch:
        figures = run(args, Path(scratch))
    load = (f"burst of {args.burst} in {args.burst_seconds:g} s" if args.burst
            else f"{args.rate:g} alerts/s for {args.seconds:g} s")
    print(f"fan-out, {args.clients:,} clients, {load}, {max(args.gateways, 1)} gateway(s) × "
          f"{args.workers} worker(s): gateway CPU {figures.cpu_us_per_delivery:.1f} µs/delivery "
          f"({figures.user_us_per_delivery:.1f} user); "
          f"delay p50 {figures.p50_ms:.1f} ms, p99 {figures.p99_ms:.1f} ms, max "
          f"{figures.max_ms:.1f} ms; {figures.deliveries:,}/{figures.expected:,} deliveries, "
          f"{figures.dropped} clients closed; gateway RSS {figures.rss_mib:.0f} MiB, "
          f"{figures.rss_per_client_kib:.1f} KiB per client")


if __name__ == "__main__":
    main()
