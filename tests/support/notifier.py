"""Helpers of the notifier's tests: a scripted channel for the dispatcher's unit tests,
and the notifier's settings and config files for the service tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.schemas import Alert
from common.settings import NotifierSettings, load_settings
from notifier.channels.base import Accepted, Answer, Budget, Limit


@dataclass
class ScriptedChannel:
    """A channel whose answers a test scripts (then ``Accepted``), recording each request:
    for the dispatcher's own logic, fast and without HTTP. The channels themselves are
    tested against the fake APIs over real sockets."""

    name: str = "desk"
    kind: str = "scripted"
    human: bool = True
    budget: Budget = field(default_factory=lambda: Budget((Limit(1, 0.2),)))
    answers: list[Answer] = field(default_factory=list)
    requests: list[tuple[float, list[Alert]]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    async def send(self, alerts: Sequence[Alert]) -> Answer:
        self.requests.append((time.monotonic(), list(alerts)))
        self.arrived.set()
        return self.answers.pop(0) if self.answers else Accepted(200, "ok")

    async def aclose(self) -> None:
        self.closed = True

    def alert_ids(self) -> list[str]:
        return [alert.id for _, alerts in self.requests for alert in alerts]


def notifier_settings(bus_url: str, config: Path, **overrides: object) -> NotifierSettings:
    values: dict[str, object] = {"bus_url": bus_url, "notify_config": str(config),
                                 "read_block_ms": 50, "notifier_metrics_port": 0,
                                 "metrics_host": "127.0.0.1"}
    values.update(overrides)
    return load_settings(NotifierSettings, **values)
