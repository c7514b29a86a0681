"""The gateway's rules follower: what the page shows is what the detectors apply, and a
follower that fails does not leave a ready gateway serving stale rules."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import fakeredis
import httpx
import pytest

from common.bus import BroadcastReader, Delivery, Record
from common.bus.redis_streams import RedisConfig, RedisTransport
from common.partitioning import RULES_STREAM
from common.rule_model import Rule
from common.schemas import RuleSet, encode_rule_set
from gateway.app import create_app, metrics_of
from tests.support.gateway import gateway_settings, serve_until_it_fails, serving


class BrokenRulesReader:
    """Reads the (empty) backlog, then fails as a bug would: not a bus outage."""

    def __init__(self) -> None:
        self.closed = False

    async def backlog(self, count: int) -> list[Delivery]:
        return []

    async def read(self, count: int, block_ms: int) -> list[Delivery]:
        await asyncio.sleep(0.05)
        raise RuntimeError("a bug in the rules follower")

    async def close(self) -> None:
        self.closed = True


class BrokenRulesTransport(RedisTransport):
    """fakeredis for everything, except that the rules stream's reader is broken."""

    def __init__(self) -> None:
        super().__init__(RedisConfig("redis://fake"), client=fakeredis.FakeAsyncRedis())
        self.rules_reader = BrokenRulesReader()

    def broadcast_reader(self, stream: str) -> BroadcastReader:  # type: ignore[override]
        if stream == RULES_STREAM:
            return self.rules_reader
        return super().broadcast_reader(stream)


async def publish_rules(bus: RedisTransport, version: int, *rules: Rule) -> None:
    rule_set = RuleSet(rules=list(rules), updated_at_ms=1, updated_by="test", version=version)
    await bus.publish([Record(RULES_STREAM, "rules", encode_rule_set(rule_set))])


async def readiness(http: httpx.AsyncClient, status: int, timeout_s: float = 5) -> httpx.Response:
    async with asyncio.timeout(timeout_s):
        while (response := await http.get("/readyz")).status_code != status:
            await asyncio.sleep(0.02)
    return response


@pytest.fixture
async def fake_bus() -> AsyncIterator[RedisTransport]:
    bus = RedisTransport(RedisConfig("redis://fake"), client=fakeredis.FakeAsyncRedis())
    yield bus
    await bus.close()


async def test_a_failed_rules_follower_stops_the_gateway_and_says_why() -> None:
    """Rather than serve rules that no longer change: the error ends ``serve`` (so the
    supervisor restarts the service), and until then ``/readyz`` names the follower."""
    transport = BrokenRulesTransport()
    settings = gateway_settings("redis://unused")
    app = create_app(settings, transport)
    try:
        failed = await serve_until_it_fails(app, settings)
    finally:
        await transport.close()
    assert isinstance(failed, ExceptionGroup)
    assert [str(error) for error in failed.exceptions] == ["a bug in the rules follower"]
    assert transport.rules_reader.closed
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                 base_url="http://gateway") as http:
        not_ready = await http.get("/readyz")
    assert not_ready.status_code == 503
    assert "rules follower failed" in not_ready.json()["reason"]
    assert "a bug in the rules follower" in not_ready.json()["reason"]


async def test_the_page_shows_only_what_a_detector_applies(fake_bus: RedisTransport) -> None:
    """Version 0 is refused by every reader (the gateway used to show it), and of two
    entries of one version the first on the stream wins."""
    await publish_rules(fake_bus, 0, Rule(threshold_up_pct=9.0))
    settings = gateway_settings("redis://unused", read_block_ms=20)
    app = create_app(settings, fake_bus)
    async with serving(app, settings) as gateway:
        http = gateway.http
        await readiness(http, 200)
        await asyncio.sleep(0.1)  # the follower had its chance at the backlog
        assert (await http.get("/api/rules")).json() == {
            "rules": [], "updated_at_ms": None, "version": None}

        await publish_rules(fake_bus, 1, Rule(name="first"))
        await publish_rules(fake_bus, 1, Rule(name="second"))  # lost the race for 1
        await publish_rules(fake_bus, -3, Rule(name="negative"))
        await publish_rules(fake_bus, 3, Rule(name="after-a-gap"))
        await fake_bus.publish([Record(RULES_STREAM, "rules", b"\x85torn")])
        async with asyncio.timeout(5):
            while (await http.get("/api/rules")).json()["version"] != 3:
                await asyncio.sleep(0.02)
        await publish_rules(fake_bus, 2, Rule(name="late"))
        await publish_rules(fake_bus, 3, Rule(name="also-three"))
        await publish_rules(fake_bus, 4, Rule(name="fourth"))
        async with asyncio.timeout(5):
            while (document := (await http.get("/api/rules")).json())["version"] != 4:
                await asyncio.sleep(0.02)
        assert [r["name"] for r in document["rules"]] == ["fourth"]
    registry = metrics_of(app).registry
    skipped = {kind: registry.get_sample_value("gateway_rules_entries_skipped_total",
                                               {"kind": kind})
               for kind in ("unversioned", "undecodable", "invalid")}
    assert skipped == {"unversioned": 2, "undecodable": None, "invalid": 1}  # the torn entry
