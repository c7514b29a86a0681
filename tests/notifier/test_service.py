"""The notifier as a service, against a real Redis server and the fake APIs over HTTP: an
alert reaches every routed channel once and is acknowledged only after; a 200-alert burst
to six channels stays within every API's limits, folds into digests and accounts for every
alert; a refusing channel dead-letters without holding the others back."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
import standardwebhooks

from common.bus.redis_streams import RedisConfig, RedisTransport
from common.partitioning import ALERTS_STREAM, NOTIFICATIONS_DEAD_STREAM, NOTIFIER_GROUP
from common.schemas import alert_json_encoder
from fake_notify.notify_config import WEBHOOK_SECRET
from fake_notify.server import FakeApis, running_fake
from notifier.ledger import dead_letter_decoder
from tests.support.notifier import (
    hosted_notifier,
    ledger_entries,
    notifier_settings,
    publish_alerts,
    wait_until,
    write_notify_config,
)
from tests.support.notify import burst, make_alert
from tests.support.servers import RedisServer

EVERY_CHANNEL = ["tg", "group", "discord", "slack", "ntfy", "hooks"]


@pytest.fixture
async def bus(redis_server: RedisServer) -> AsyncIterator[RedisTransport]:
    transport = RedisTransport(RedisConfig(redis_server.url, timeout_s=3))
    yield transport
    await transport.close()


@pytest.fixture
async def fakes() -> AsyncIterator[FakeApis]:
    async with running_fake() as fakes:
        yield fakes


async def pending(url: str) -> int:
    client = aioredis.from_url(url)
    try:
        info = await client.xpending(ALERTS_STREAM, NOTIFIER_GROUP)
        return int(info["pending"])
    finally:
        await client.aclose()


async def test_an_alert_reaches_every_routed_channel_once_then_is_acknowledged(
        redis_server: RedisServer, bus: RedisTransport, fakes: FakeApis, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    env = write_notify_config(tmp_path / "notify.toml", fakes, ["tg", "hooks"])
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    alert = make_alert("SOLUSDT", 3.1)
    async with hosted_notifier(notifier_settings(redis_server.url, tmp_path / "notify.toml"),
                               bus):
        await publish_alerts(bus, [alert])

        async def delivered() -> bool:
            return len(fakes.of("telegram")) == 1 and len(fakes.of("webhook")) == 1

        await wait_until(delivered, what="both channels")
        await wait_until(lambda: _none_pending(redis_server.url), what="the ack")
    hook = fakes.of("webhook")[0]
    body = hook.body
    assert body == b'{"type":"alert","alert":' + alert_json_encoder.encode(alert) + b"}"
    standardwebhooks.Webhook(WEBHOOK_SECRET).verify(body, hook.headers)
    assert hook.headers["webhook-id"] == alert.id
    text = fakes.of("telegram")[0].json()["text"]
    assert "SOLUSDT" in text
    assert "+3.10 %" in text
    done = await ledger_entries(bus)
    assert sorted((d.alert_id, d.channel, d.outcome) for d in done) == [
        (alert.id, "hooks", "sent"), (alert.id, "tg", "sent")]


async def _none_pending(url: str) -> bool:
    return await pending(url) == 0


async def test_an_alert_no_route_matches_is_acknowledged_without_a_request(
        redis_server: RedisServer, bus: RedisTransport, fakes: FakeApis, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    routes = '[[route]]\nchannels = ["hooks"]\ndirections = ["down"]\n'
    env = write_notify_config(tmp_path / "notify.toml", fakes, ["hooks"], routes)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    up, down = make_alert("BTCUSDT", 2.5), make_alert("ETHUSDT", -2.5)
    async with hosted_notifier(notifier_settings(redis_server.url, tmp_path / "notify.toml"),
                               bus) as notifier:
        await publish_alerts(bus, [up, down])

        async def down_delivered() -> bool:
            return len(fakes.of("webhook")) == 1 and await pending(redis_server.url) == 0

        await wait_until(down_delivered, what="the down alert")
        skipped = notifier.registry.get_sample_value(
            "notifier_alerts_skipped_total", {"reason": "unrouted"})
    assert fakes.of("webhook")[0].headers["webhook-id"] == down.id
    assert skipped == 1


async def test_an_alert_older_than_the_max_age_is_not_sent(
        redis_server: RedisServer, bus: RedisTransport, fakes: FakeApis, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    env = write_notify_config(tmp_path / "notify.toml", fakes, ["hooks"])
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    old = make_alert("BTCUSDT", detected_at_ms=int(time.time() * 1000) - 120_000)
    fresh = make_alert("ETHUSDT")
    settings = notifier_settings(redis_server.url, tmp_path / "notify.toml",
                                 notify_max_age_s=60)
    async with hosted_notifier(settings, bus) as notifier:
        await publish_alerts(bus, [old, fresh])

        async def settled() -> bool:
            return len(fakes.of("webhook")) == 1 and await pending(redis_server.url) == 0

        await wait_until(settled, what="the fresh alert")
        stale = notifier.registry.get_sample_value(
            "notifier_alerts_skipped_total", {"reason": "stale"})
    assert [r.headers["webhook-id"] for r in fakes.of("webhook")] == [fresh.id]
    assert stale == 1


async def test_a_200_alert_burst_stays_within_every_limit_and_every_alert_is_accounted_for(
        redis_server: RedisServer, bus: RedisTransport, fakes: FakeApis, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    env = write_notify_config(tmp_path / "notify.toml", fakes, EVERY_CHANNEL)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    alerts = burst(200)
    async with hosted_notifier(notifier_settings(redis_server.url, tmp_path / "notify.toml"),
                               bus):
        for start in range(0, 200, 20):  # the market moving for 2 s
            await publish_alerts(bus, alerts[start:start + 20])
            await asyncio.sleep(0.2)

        async def all_settled() -> bool:
            done = await ledger_entries(bus)
            return len(done) == 200 * len(EVERY_CHANNEL) and await pending(
                redis_server.url) == 0

        await wait_until(all_settled, timeout_s=30, what="every alert settled")
    assert fakes.violations == []
    assert [r for r in fakes.received if r.status != 200 and r.status != 204] == []
    # Webhooks: every alert by itself, once.
    hook_ids = Counter(r.headers["webhook-id"] for r in fakes.of("webhook"))
    assert hook_ids == Counter(a.id for a in alerts)
    # Every human channel: each alert sent or digested once, in a few messages.
    done = await ledger_entries(bus)
    for name in ["tg", "group", "discord", "slack", "ntfy"]:
        outcomes = Counter(d.outcome for d in done if d.channel == name)
        assert sum(outcomes.values()) == 200, (name, outcomes)
        assert outcomes["dead"] == 0, (name, outcomes)
        assert outcomes["digested"] > outcomes["sent"]
    # Telegram's messages add up to the 200 alerts: singles plus each digest's count.
    for chat in ("42", "-1001234567890"):
        texts = [r.json()["text"] for r in fakes.of("telegram") if
                 str(r.json()["chat_id"]) == chat]
        counts = [int(m.group(1)) if (m := re.search(r"(\d+) alerts in", t)) else 1
                  for t in texts]
        assert sum(counts) == 200, (chat, counts)
        assert len(texts) <= 8  # ~2 s of burst at one message a second, not 200


async def test_a_refusing_channel_dead_letters_its_alerts_and_the_others_deliver(
        redis_server: RedisServer, bus: RedisTransport, fakes: FakeApis, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    env = write_notify_config(tmp_path / "notify.toml", fakes, ["tg", "hooks"])
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TG_TOKEN", "987654321:not-a-token-the-fake-knows-AAAAAAAAAAAA")
    alerts = [make_alert("BTCUSDT"), make_alert("ETHUSDT", -2.2)]
    async with hosted_notifier(notifier_settings(redis_server.url, tmp_path / "notify.toml"),
                               bus) as notifier:
        await publish_alerts(bus, alerts[:1])
        await wait_until(lambda: _none_pending(redis_server.url), what="the first ack")
        await publish_alerts(bus, alerts[1:])

        async def settled() -> bool:
            return len(fakes.of("webhook")) == 2 and await pending(redis_server.url) == 0

        await wait_until(settled, what="both alerts")
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"http://127.0.0.1:{notifier.health_port}/readyz")
        ready = answer.json()
        failing = notifier.registry.get_sample_value("notifier_channel_failing",
                                                     {"channel": "tg"})
    assert len(fakes.of("telegram")) == 1  # refused once; the second never asked
    assert ready["healthy"] is True
    assert ready["details"]["tg"]["failing"] is True
    assert "Unauthorized" in ready["details"]["tg"]["reason"]
    assert ready["details"]["hooks"]["failing"] is False
    assert failing == 1
    dead = await bus.broadcast_reader(NOTIFICATIONS_DEAD_STREAM).backlog(10)
    letters = [dead_letter_decoder.decode(d.payload) for d in dead]
    assert [(d.channel, d.alert) for d in letters] == [("tg", a) for a in alerts]
    assert letters[0].reason == "http_401"
    assert letters[1].reason == "channel_failing"


async def test_an_outcome_is_recorded_once_the_bus_is_back_and_nothing_is_sent_again(
        redis_server: RedisServer, bus: RedisTransport, fakes: FakeApis, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    env = write_notify_config(tmp_path / "notify.toml", fakes, ["hooks"])
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    alert = make_alert("BTCUSDT")
    fakes.slow("webhook", 1.0)  # the answer comes after Redis went away
    async with hosted_notifier(notifier_settings(redis_server.url, tmp_path / "notify.toml",
                                                 bus_timeout_s=1),
                               bus) as notifier:
        await publish_alerts(bus, [alert])

        async def asked() -> bool:
            return len(fakes.of("webhook")) == 1

        await wait_until(asked, what="the request")
        await asyncio.to_thread(redis_server.stop)
        await asyncio.sleep(2.5)  # the webhook answered; its outcome cannot be written
        await asyncio.to_thread(redis_server.start)
        await wait_until(lambda: _none_pending(redis_server.url), what="the ack")
        errors = notifier.registry.get_sample_value("notifier_bus_errors_total")
    assert errors is not None
    assert errors >= 1
    assert len(fakes.of("webhook")) == 1
    assert [(d.alert_id, d.channel) for d in await ledger_entries(bus)] == [
        (alert.id, "hooks")]
