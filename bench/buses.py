"""The bus a benchmark runs on, started locally on a free port: ``--bus redis|kafka``.

Redis is a Redis-compatible server (see ``tools.redis_server``); Kafka is the in-memory
``tansu`` broker, with the settings ``binance-alerter up --bus kafka`` gives its services
(``launcher.TANSU_ENV``; variables already set in the environment win), so the figures
are those of the local run, not of a tuned Kafka cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tools.kafka_server import start_tansu, stop_tansu
from tools.launcher import TANSU_ENV
from tools.redis_server import free_port, start_redis_server

BUSES = ("redis", "kafka")


@dataclass(frozen=True)
class LocalBus:
    kind: str
    url: str
    env: dict[str, str] = field(default_factory=dict)  # for the service processes


def add_bus_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bus", choices=BUSES, default="redis",
                        help="transport to measure (default redis)")


@contextlib.contextmanager
def local_bus(kind: str, scratch: Path, *, aof: bool = False) -> Iterator[LocalBus]:
    """Start the bus, yield its URL and environment, stop it. ``aof`` is Redis-only."""
    port = free_port()
    if kind == "redis":
        server = start_redis_server(port, scratch / "redis", appendonly=aof)
        try:
            yield LocalBus(kind, f"redis://127.0.0.1:{port}/0")
        finally:
            server.terminate()
            server.wait(timeout=10)
        return
    broker = start_tansu(port)
    env = {name: os.environ.get(name, value) for name, value in TANSU_ENV.items()}
    try:
        yield LocalBus(kind, f"kafka://127.0.0.1:{port}", env)
    finally:
        stop_tansu(broker)


def use_in_process(bus: LocalBus) -> None:
    """Give a transport made in this process the same settings as the service processes."""
    for name, value in bus.env.items():
        os.environ.setdefault(name, value)
