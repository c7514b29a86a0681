"""The browser protocol: resuming with ``since``, origins, heartbeat, rules, pagination."""

from __future__ import annotations

import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from common.bus import Record, Retention
from common.bus.redis_streams import RedisTransport
from common.partitioning import RULES_STREAM
from common.rule_model import Rule
from common.schemas import RuleSet, encode_rule_set
from gateway.app import create_app
from gateway.origins import OriginPolicy
from gateway.service import server_config
from tests.support.gateway import (
    ScriptedReader,
    ScriptedTransport,
    gateway_settings,
    ids,
    make_alert,
    publish,
    receive,
    receive_alerts,
    running_gateway,
)
from tests.support.raw_http import exchange_async, upgrade
from tests.support.servers import RedisServer


async def test_since_resumes_with_exactly_the_alerts_missed(
        redis_server: RedisServer, bus: RedisTransport) -> None:
    seen = [make_alert("AUSDT"), make_alert("BUSDT")]
    await publish(bus, *seen)
    async with running_gateway(redis_server.url) as gw:
        async with connect(gw.ws_url) as ws:
            history = await receive(ws)
            assert ids(history["alerts"]) == [a.id for a in seen]
        missed = [make_alert("CUSDT"), make_alert("DUSDT"), make_alert("EUSDT")]
        await publish(bus, *missed)
        await gw.wait_metric("gateway_alerts_received_total", 3)  # live ones only
        async with connect(f"{gw.ws_url}?since={seen[-1].id}") as ws:
            resumed = await receive(ws)
            assert resumed["type"] == "history"
            assert resumed["resumed"] is True
            assert ids(resumed["alerts"]) == [a.id for a in missed]
            live = make_alert("FUSDT")
            await publish(bus, live)
            assert ids(await receive_alerts(ws, 1)) == [live.id]
        async with connect(f"{gw.ws_url}?since={live.id}") as ws:
            assert (await receive(ws))["alerts"] == []


@pytest.mark.parametrize(
    ("since", "code", "reason"),
    [("not-an-id", 4400, "bad_since"), ("BTCUSDT:60:1", 4404, "unknown_since"),
     ("", 4400, "bad_since")],
)
async def test_a_bad_since_gets_an_error_and_a_close_code(
        redis_server: RedisServer, bus: RedisTransport, since: str, code: int,
        reason: str) -> None:
    await publish(bus, make_alert())
    async with running_gateway(redis_server.url) as gw, \
            connect(f"{gw.ws_url}?since={since}") as ws:
        error = await receive(ws)
        assert error["type"] == "error"
        assert error["code"] == reason
        assert error["message"]
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == code
        assert await gw.metric("gateway_clients_dropped_total", reason=reason) == 1


async def test_foreign_origins_are_refused_unless_allowed(redis_server: RedisServer) -> None:
    async with running_gateway(redis_server.url,
                               allowed_origins="https://desk.example.com") as gw:
        # The page's own origins (whatever address it was opened by on this machine), the
        # configured one, and clients that are no browser.
        for origin in (f"http://127.0.0.1:{gw.port}", f"http://localhost:{gw.port}",
                       f"http://[::1]:{gw.port}", "https://desk.example.com",
                       "https://DESK.example.com/", None):
            headers = {"Origin": origin} if origin else None
            async with connect(gw.ws_url, additional_headers=headers) as ws:
                assert (await receive(ws))["type"] == "history"
        for origin in ("https://evil.example", f"http://localhost:{gw.port + 1}",
                       f"https://127.0.0.1:{gw.port}"):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(gw.ws_url, additional_headers={"Origin": origin}):
                    pass
            assert refused.value.response.status_code == 403
        assert await gw.metric("gateway_clients_dropped_total", reason="origin") == 3


async def test_an_origin_equal_to_its_host_is_no_proof(redis_server: RedisServer) -> None:
    """DNS rebinding: a page at http://rebound.example:PORT whose name now resolves to the
    gateway sends Host and Origin of that name; the page is not the gateway's."""
    async with running_gateway(redis_server.url) as gw:
        host = f"rebound.example:{gw.port}"
        answer = await exchange_async(gw.port, [upgrade("/ws", f"Origin: http://{host}",
                                                        host=host)], wait_s=2)
        assert answer.status == 403, answer.raw[:300]
        assert answer.closed
        assert await gw.metric("gateway_clients_dropped_total", reason="origin") == 1
        # The same handshake from the page's own origin is taken.
        own = f"127.0.0.1:{gw.port}"
        answer = await exchange_async(gw.port, [upgrade("/ws", f"Origin: http://{own}",
                                                        host=own)], wait_s=0.5)
        assert answer.status == 101, answer.raw[:300]


def test_a_bound_host_is_a_served_origin() -> None:
    policy = OriginPolicy.of(gateway_settings("redis://x", gateway_host="alerts.lan"))
    assert policy.allows("http://alerts.lan:8080", ("10.0.0.5", 8080))
    assert policy.allows("http://10.0.0.5:8080", ("10.0.0.5", 8080))
    assert policy.allows("http://192.0.2.7:8080", ("::ffff:192.0.2.7", 8080))
    assert not policy.allows("http://alerts.lan:8080", ("10.0.0.5", 9090))
    wildcard = OriginPolicy.of(gateway_settings("redis://x", gateway_host="0.0.0.0"))
    assert not wildcard.allows("http://0.0.0.0:8080", ("10.0.0.5", 8080))


def test_allowed_origins_are_parsed() -> None:
    settings = gateway_settings("redis://x", allowed_origins=" https://a.example/, http://b:8")
    assert settings.origins == {"https://a.example", "http://b:8"}


async def test_a_quiet_feed_gets_heartbeats(redis_server: RedisServer) -> None:
    async with running_gateway(redis_server.url, ws_heartbeat_s=0.2) as gw, \
            connect(gw.ws_url) as ws:
        await receive(ws)
        ping = await receive(ws, 2, skip=frozenset({"rules", "health"}))
        assert ping["type"] == "ping"
        assert abs(ping["t"] - time.time() * 1000) < 5000


async def test_rules_in_force_are_served_and_pushed(
        redis_server: RedisServer, bus: RedisTransport) -> None:
    await bus.declare([RULES_STREAM], Retention(max_len=100))

    versions = iter(range(1, 100))

    async def announce(*rules: Rule) -> None:
        rule_set = RuleSet(rules=list(rules), updated_at_ms=1, updated_by="test",
                           version=next(versions))
        await bus.publish([Record(RULES_STREAM, "rules", encode_rule_set(rule_set))])

    await announce(Rule(window_s=60, threshold_up_pct=2.0, threshold_down_pct=2.0))
    async with running_gateway(redis_server.url) as gw:
        document = (await gw.http.get("/api/rules")).json()
        assert document["rules"] == [{"name": "default", "kind": "price", "window_s": 60,
                                      "threshold_up_pct": 2.0, "threshold_down_pct": 2.0,
                                      "cooldown_s": 60, "escalation_step_pct": None,
                                      "min_quote_volume": None, "allow": [], "deny": [],
                                      "overrides": [], "min_notional_usdt": None,
                                      "escalation_step_usdt": None,
                                      "min_funding_rate_pct": None, "volume_factor": None,
                                      "baseline_s": None, "min_window_volume_usdt": None}]
        async with connect(gw.ws_url) as ws:
            assert (await receive(ws))["type"] == "history"
            first = await receive(ws, skip=frozenset({"ping", "health"}))
            assert first["type"] == "rules"
            assert first["rules"][0]["window_s"] == 60
            await announce(Rule(window_s=30, threshold_up_pct=1.0, threshold_down_pct=3.0,
                                cooldown_s=30))
            pushed = await receive(ws, skip=frozenset({"ping", "health"}))
            assert pushed["type"] == "rules"
            [rule] = pushed["rules"]
            assert (rule["window_s"], rule["threshold_up_pct"], rule["threshold_down_pct"],
                    rule["cooldown_s"]) == (30, 1.0, 3.0, 30)
        assert (await gw.http.get("/api/rules")).json()["rules"][0]["window_s"] == 30


async def test_api_alerts_pages_backwards_with_a_cursor(
        redis_server: RedisServer, bus: RedisTransport) -> None:
    alerts = [make_alert(f"P{i}USDT") for i in range(10)]
    await publish(bus, *alerts)
    newest_first = [a.id for a in reversed(alerts)]
    async with running_gateway(redis_server.url) as gw:
        pages: list[str] = []
        cursor: str | None = None
        while True:
            params = {"limit": "4", **({"before": cursor} if cursor else {})}
            document = (await gw.http.get("/api/alerts", params=params)).json()
            pages.extend(ids(document["alerts"]))
            cursor = document["next"]
            if cursor is None:
                break
        assert pages == newest_first
        unknown = await gw.http.get("/api/alerts", params={"before": "XUSDT:60:1"})
        assert unknown.status_code == 404
        assert "unknown alert id" in unknown.json()["detail"]
        malformed = await gw.http.get("/api/alerts", params={"before": "drop table"})
        assert malformed.status_code == 422
        assert malformed.json()["detail"][0]["loc"] == ["query", "before"]


def test_protocol_pings_follow_the_settings() -> None:
    settings = gateway_settings("redis://x", ws_ping_interval_s=7, ws_ping_timeout_s=3)
    app = create_app(settings, ScriptedTransport(ScriptedReader([])))  # type: ignore[arg-type]
    config = server_config(app, settings)
    assert (config.ws_ping_interval, config.ws_ping_timeout) == (7, 3)
    assert config.ws_max_size == 64 * 1024
