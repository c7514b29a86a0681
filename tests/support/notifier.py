"""Helpers of the notifier's tests: a scripted channel for the dispatcher's unit tests,
and the notifier's settings and config files for the service tests."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import msgspec

from common.bus import Record, Transport
from common.partitioning import ALERTS_STREAM, NOTIFICATIONS_LEDGER_STREAM
from common.runner import Hosted
from common.schemas import Alert, encode_alert
from common.settings import NotifierSettings, load_settings
from fake_notify import discord, slack, telegram
from fake_notify.server import FakeApis
from notifier.channels.base import Accepted, Answer, Budget, Limit
from notifier.ledger import Done
from notifier.service import SERVICE


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


# -- the service against the fake APIs -------------------------------------------------------

WEBHOOK_SECRET: Final = "whsec_" + base64.b64encode(b"binance-alerter-test-key-32bytes").decode()


def channel_tables(fakes: FakeApis, names: Sequence[str]) -> tuple[str, dict[str, str]]:
    """``[[channel]]`` tables for the fake APIs, by test name (``tg``: a private Telegram
    chat, ``group``: a group of the same bot, ``discord``, ``slack``, ``ntfy``, ``hooks``:
    a webhook), and the environment their ``${VAR}`` secrets come from."""
    tables = {
        "tg": f'type = "telegram"\ntoken = "${{TG_TOKEN}}"\n'
              f'chat_id = "{telegram.PRIVATE_CHAT}"\napi_url = "{fakes.url}"',
        "group": f'type = "telegram"\ntoken = "${{TG_TOKEN}}"\n'
                 f'chat_id = "{telegram.GROUP_CHAT}"\napi_url = "{fakes.url}"',
        "discord": 'type = "discord"\nurl = "${DISCORD_URL}"',
        "slack": 'type = "slack"\nurl = "${SLACK_URL}"',
        "ntfy": f'type = "ntfy"\nserver = "{fakes.url}/ntfy"\ntopic = "alerts"',
        "hooks": f'type = "webhook"\nurl = "{fakes.url}/hooks/main"\nsecret = "${{HOOK_SECRET}}"',
    }
    env = {"TG_TOKEN": telegram.TOKEN, "DISCORD_URL": discord.webhooks(fakes).url(fakes),
           "SLACK_URL": slack.hooks(fakes).url(fakes), "HOOK_SECRET": WEBHOOK_SECRET}
    text = "".join(f'[[channel]]\nname = "{name}"\n{tables[name]}\n\n' for name in names)
    return text, env


def write_notify_config(path: Path, fakes: FakeApis, names: Sequence[str],
                        routes: str | None = None) -> dict[str, str]:
    """A NOTIFY_CONFIG file at ``path`` with those channels and, unless ``routes`` is
    given, one route sending every alert to all of them; the environment it needs."""
    text, env = channel_tables(fakes, names)
    if routes is None:
        routes = "[[route]]\nchannels = [" + ", ".join(f'"{n}"' for n in names) + "]\n"
    path.write_text(text + routes)
    return env


@contextlib.asynccontextmanager
async def hosted_notifier(settings: NotifierSettings, transport: Transport
                          ) -> AsyncIterator[Hosted[NotifierSettings]]:
    """The notifier in this process on ``transport``, until the block ends (then stopped
    as SIGTERM stops it)."""
    stopping = asyncio.Event()
    hosted = Hosted(SERVICE, settings, transport)
    task = asyncio.create_task(hosted.run(stopping))
    try:
        async with asyncio.timeout(15):
            while not hosted.healthy():
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield hosted
    finally:
        stopping.set()
        await asyncio.wait_for(task, 20)


async def publish_alerts(transport: Transport, alerts: Sequence[Alert]) -> None:
    await transport.publish([Record(ALERTS_STREAM, a.symbol, encode_alert(a)) for a in alerts])


async def ledger_entries(transport: Transport) -> list[Done]:
    reader = transport.broadcast_reader(NOTIFICATIONS_LEDGER_STREAM)
    try:
        return [msgspec.msgpack.decode(d.payload, type=Done)
                for d in await reader.backlog(1_000_000)]
    finally:
        await reader.close()


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 20.0,
                     what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s}s")
        await asyncio.sleep(0.05)
