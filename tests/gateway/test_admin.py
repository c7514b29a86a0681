"""The rules admin API against a real gateway (uvicorn on a free port) and a real Redis."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest
from websockets.asyncio.client import connect

from common.bus import Record
from common.bus.redis_streams import RedisTransport
from common.partitioning import RULES_STREAM, partition_of, ticks_stream
from common.rule_model import Rule
from common.schemas import RuleSet, Tick, decode_rule_set, encode_ticks
from common.settings import DetectorSettings, load_settings
from detector.service import Detector
from tests.support.admin import AUTH, TOKEN, seed
from tests.support.gateway import field_of, receive, running_gateway
from tests.support.servers import RedisServer


async def rule_sets_on_bus(bus: RedisTransport) -> list[RuleSet]:
    return [decode_rule_set(d.payload)
            for d in await bus.broadcast_reader(RULES_STREAM).backlog(100)]


async def test_without_a_token_every_admin_route_is_off(redis_server: RedisServer,
                                                        bus: RedisTransport) -> None:
    await seed(bus)
    async with running_gateway(redis_server.url) as gw:
        for method, path in [("GET", "/api/admin/rules"), ("POST", "/api/admin/rules"),
                             ("DELETE", "/api/admin/rules/default"),
                             ("PATCH", "/api/admin/rules/default")]:
            response = await gw.http.request(method, path, headers=AUTH, json={})
            assert response.status_code == 404
            assert "ADMIN_TOKEN" in response.json()["detail"]
        assert (await gw.http.get("/api/rules")).status_code == 200


async def test_missing_token_is_401_and_wrong_token_is_403(redis_server: RedisServer,
                                                           bus: RedisTransport) -> None:
    await seed(bus)
    async with running_gateway(redis_server.url, admin_token=TOKEN) as gw:
        for headers in [{}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer"}]:
            response = await gw.http.get("/api/admin/rules", headers=headers)
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"]:
            response = await gw.http.request(
                method, "/api/admin/rules/default" if method != "POST" else "/api/admin/rules",
                headers={"Authorization": "Bearer wrong-token-of-enough-length"},
                content=b"{not json")
            assert response.status_code == 403, method  # auth comes before the body
        # Nothing was written.
        assert len(await rule_sets_on_bus(bus)) == 1


async def test_list_create_update_patch_delete(redis_server: RedisServer, bus: RedisTransport,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    await seed(bus)
    async with running_gateway(redis_server.url, admin_token=TOKEN) as gw:
        listed = await gw.http.get("/api/admin/rules", headers=AUTH)
        assert listed.status_code == 200
        assert listed.headers["etag"] == '"1"'
        assert listed.json()["version"] == 1
        assert [r["name"] for r in listed.json()["rules"]] == ["default"]

        async with connect(gw.ws_url) as ws:
            assert (await receive(ws))["type"] == "history"
            assert (await receive(ws, skip=frozenset({"ping", "health"})))["type"] == "rules"

            fast = {"name": "fast", "window_s": 10, "threshold_up_pct": 1.0,
                    "threshold_down_pct": 1.5, "cooldown_s": 30, "escalation_step_pct": 1.0,
                    "min_quote_volume": 5e6, "deny": ["1000*"],
                    "overrides": [{"pattern": "BTCUSDT", "threshold_up_pct": 0.5}]}
            created = await gw.http.post("/api/admin/rules", json=fast,
                                         headers={**AUTH, "X-Admin-User": "alice"})
            assert created.status_code == 201, created.text
            assert created.json()["version"] == 2
            assert created.json()["updated_by"] == "alice"
            pushed = await receive(ws, skip=frozenset({"ping", "health"}))
            assert pushed["type"] == "rules"
            assert pushed["version"] == 2
            assert [r["name"] for r in pushed["rules"]] == ["default", "fast"]
            assert pushed["rules"][1]["overrides"][0]["threshold_up_pct"] == 0.5

        public = (await gw.http.get("/api/rules")).json()
        assert (public["version"], len(public["rules"])) == (2, 2)
        assert "updated_by" not in public  # who changed what is for admins

        again = await gw.http.post("/api/admin/rules", json=fast, headers=AUTH)
        assert again.status_code == 409

        replaced = await gw.http.put("/api/admin/rules/fast", headers=AUTH,
                                     json={**fast, "threshold_up_pct": 3.0, "name": "fast"})
        assert replaced.status_code == 200, replaced.text
        patched = await gw.http.patch("/api/admin/rules/default", headers=AUTH,
                                      json={"threshold_up_pct": 1.5, "cooldown_s": 30})
        assert patched.status_code == 200, patched.text
        default = next(r for r in patched.json()["rules"] if r["name"] == "default")
        assert (default["threshold_up_pct"], default["cooldown_s"], default["window_s"]) == (
            1.5, 30, 60)

        one = await gw.http.get("/api/admin/rules/fast", headers=AUTH)
        assert one.json()["threshold_up_pct"] == 3.0
        assert (await gw.http.get("/api/admin/rules/nope", headers=AUTH)).status_code == 404

        deleted = await gw.http.delete("/api/admin/rules/fast", headers=AUTH)
        assert deleted.status_code == 200
        assert [r["name"] for r in deleted.json()["rules"]] == ["default"]
        last = await gw.http.delete("/api/admin/rules/default", headers=AUTH)
        assert last.status_code == 409
        assert "last rule" in last.json()["detail"]
        assert (await gw.http.delete("/api/admin/rules/fast", headers=AUTH)).status_code == 404

        history = (await gw.http.get("/api/admin/rules/history", headers=AUTH)).json()
        assert [h["version"] for h in history] == [5, 4, 3, 2, 1]
        assert history[1]["change"] == ("update 'default': threshold_up_pct 2.0 → 1.5, "
                                        "cooldown_s 60 → 30")
        assert (history[1]["updated_by"], history[3]["updated_by"]) == ("admin", "alice")
        assert all(h["applied"] for h in history)

    stored = await rule_sets_on_bus(bus)
    assert [s.version for s in stored] == [1, 2, 3, 4, 5]
    audit = [r.getMessage() for r in caplog.records if r.name == "gateway.admin"]
    assert any("version 2 written by alice" in m and "create 'fast'" in m for m in audit)
    assert any("version 4 written by admin" in m and "threshold_up_pct 2.0 → 1.5" in m
               for m in audit)
    assert TOKEN not in caplog.text


@pytest.mark.parametrize(("body", "loc"), [
    ({"threshold_up_pct": -1}, ["body", "threshold_up_pct"]),
    ({"threshold_up_pct": "high"}, ["body", "threshold_up_pct"]),
    ({"window_s": 0}, ["body", "window_s"]),
    ({"window_s": 10}, ["body", "window_s"]),  # the window of rule "fast"
    ({"cooldown_s": 1.5}, ["body", "cooldown_s"]),
    ({"treshold_up_pct": 1}, ["body", "treshold_up_pct"]),
    ({"escalation_step_pct": -0.5}, ["body", "escalation_step_pct"]),
    ({"min_quote_volume": -1}, ["body", "min_quote_volume"]),
    ({"allow": ["BTCUSDT", "eth*"]}, ["body", "allow", 1]),
    ({"overrides": [{"pattern": "1000*", "cooldown_s": -1}]},
     ["body", "overrides", 0, "cooldown_s"]),
    ({"overrides": [{"threshold_up_pct": 1}]}, ["body", "overrides", 0, "pattern"]),
    ({"name": "other"}, ["body", "name"]),
    ([1, 2], ["body"]),
])
async def test_bad_values_are_422_naming_the_field(redis_server: RedisServer,
                                                   bus: RedisTransport, body: Any,
                                                   loc: list[Any]) -> None:
    await seed(bus, Rule(), Rule(name="fast", window_s=10))
    async with running_gateway(redis_server.url, admin_token=TOKEN) as gw:
        response = await gw.http.patch("/api/admin/rules/default", headers=AUTH, json=body)
        assert field_of(response) == loc
        assert len(await rule_sets_on_bus(bus)) == 1


async def test_other_bad_requests(redis_server: RedisServer, bus: RedisTransport) -> None:
    await seed(bus)
    async with running_gateway(redis_server.url, admin_token=TOKEN) as gw:
        http = gw.http
        assert field_of(await http.post("/api/admin/rules", headers=AUTH,
                                        json={"window_s": 30})) == ["body", "name"]
        assert field_of(await http.post("/api/admin/rules", headers=AUTH,
                                        json={"name": "Bad Name", "window_s": 30})) == [
            "body", "name"]
        assert field_of(await http.put("/api/admin/rules/Bad!", headers=AUTH,
                                       json={})) == ["path", "name"]
        assert field_of(await http.post("/api/admin/rules", headers=AUTH,
                                        content=b"{oops")) == ["body"]
        assert field_of(await http.put("/api/admin/rules", headers=AUTH, json={"rules": [
            {"name": "a", "window_s": 30}, {"name": "b", "window_s": 30}]})) == [
            "body", "rules", 1, "window_s"]
        assert field_of(await http.put("/api/admin/rules", headers=AUTH,
                                       json={"rules": []})) == ["body", "rules"]
        assert field_of(await http.patch("/api/admin/rules/default",
                                         headers={**AUTH, "If-Match": "latest"},
                                         json={})) == ["header", "if-match"]
        huge = {"name": "big", "window_s": 5, "deny": ["A" * 30] * 3000}
        assert (await http.post("/api/admin/rules", headers=AUTH,
                                json=huge)).status_code == 413
        assert (await http.put("/api/admin/rules/nope", headers=AUTH,
                               json={})).status_code == 404
    assert len(await rule_sets_on_bus(bus)) == 1


async def test_history_is_not_a_rule_name_the_history_route_would_shadow(
        redis_server: RedisServer, bus: RedisTransport) -> None:
    await seed(bus)
    async with running_gateway(redis_server.url, admin_token=TOKEN) as gw:
        http = gw.http
        created = await http.post("/api/admin/rules", headers=AUTH,
                                  json={"name": "history", "window_s": 30})
        assert field_of(created) == ["body", "name"]
        assert "reserved" in created.json()["detail"][0]["msg"]
        replaced = await http.put("/api/admin/rules", headers=AUTH, json={"rules": [
            {"name": "default", "window_s": 60}, {"name": "history", "window_s": 30}]})
        assert field_of(replaced) == ["body", "rules", 1, "name"]
        history = await http.get("/api/admin/rules/history", headers=AUTH)
        assert [h["version"] for h in history.json()] == [1]
    assert len(await rule_sets_on_bus(bus)) == 1


async def test_a_write_on_a_stale_version_is_409(redis_server: RedisServer,
                                                 bus: RedisTransport) -> None:
    await seed(bus)
    async with running_gateway(redis_server.url, admin_token=TOKEN) as gw:
        first = await gw.http.patch("/api/admin/rules/default", json={"cooldown_s": 5},
                                    headers={**AUTH, "If-Match": '"1"'})
        assert first.status_code == 200
        assert first.headers["etag"] == '"2"'
        stale = await gw.http.patch("/api/admin/rules/default", json={"cooldown_s": 9},
                                    headers={**AUTH, "If-Match": '"1"'})
        assert stale.status_code == 409
        assert "version 2 is in force" in stale.json()["detail"]
    assert [s.version for s in await rule_sets_on_bus(bus)] == [1, 2]


async def test_two_gateways_racing_agree_on_every_winner(redis_server: RedisServer,
                                                         bus: RedisTransport) -> None:
    await seed(bus)
    async with running_gateway(redis_server.url, admin_token=TOKEN) as one, \
            running_gateway(redis_server.url, admin_token=TOKEN) as two:
        async def bump(gw: Any, value: int, version: int | None = None) -> tuple[int, int]:
            headers = AUTH if version is None else {**AUTH, "If-Match": str(version)}
            response = await gw.http.patch("/api/admin/rules/default", headers=headers,
                                           json={"cooldown_s": value})
            return response.status_code, response.json().get("version", 0)

        # Without If-Match a write that loses the race is applied again on top: all land.
        results = await asyncio.gather(*(bump(gw, i) for i in range(1, 11)
                                         for gw in (one, two)))
        assert sorted(results) == [(200, v) for v in range(2, 22)]
        # With If-Match on the same version, exactly one wins and the others get 409.
        results = await asyncio.gather(*(bump(gw, 100 + i, version=21) for i in range(3)
                                         for gw in (one, two)))
        assert sorted(status for status, _ in results) == [200, 409, 409, 409, 409, 409]

        history = (await one.http.get("/api/admin/rules/history", headers=AUTH)).json()
        applied = [h["version"] for h in history if h["applied"]]
        assert applied == list(range(22, 0, -1))
        async with asyncio.timeout(2):
            while {(await gw.http.get("/api/rules")).json()["version"]
                   for gw in (one, two)} != {22}:
                await asyncio.sleep(0.02)


async def test_a_change_through_the_api_alters_what_a_running_detector_fires(
        redis_server: RedisServer, bus: RedisTransport) -> None:
    partitions = 2
    settings = load_settings(DetectorSettings, bus_url=redis_server.url,
                             tick_partitions=partitions, read_block_ms=50,
                             detector_metrics_port=0)
    detector = Detector(settings, bus)
    stopping = asyncio.Event()
    task = asyncio.create_task(detector.run(stopping))
    now = int(time.time() * 1000)

    async def quote(price: float, offset_ms: int) -> None:
        tick = Tick("BTCUSDT", price, now + offset_ms, "mini_ticker", 1e9)
        stream = ticks_stream(partition_of(tick.symbol, partitions))
        await bus.publish([Record(stream, "0", encode_ticks([tick]))])

    try:
        await asyncio.wait_for(detector.rebuilt.wait(), 10)
        async with running_gateway(redis_server.url, admin_token=TOKEN) as gw, \
                connect(gw.ws_url) as ws:
            assert (await receive(ws))["type"] == "history"
            await quote(100.0, 0)
            await quote(101.5, 1000)  # +1.5 %: under the seeded 2 %
            response = await gw.http.put(
                "/api/admin/rules/default", headers=AUTH,
                json={"window_s": 60, "threshold_up_pct": 1.0, "threshold_down_pct": 1.0,
                      "cooldown_s": 60})
            assert response.status_code == 200, response.text
            changed = time.perf_counter()
            while detector.engine.rules[0].threshold_up_pct != 1.0:
                assert time.perf_counter() - changed < 1.0, "not applied within 1 s"
                await asyncio.sleep(0.01)
            await quote(101.6, 2000)  # +1.6 % over the same base now fires
            alert = (await receive(ws, skip=frozenset({"ping", "rules", "health"})))["alert"]
            assert (alert["symbol"], alert["threshold_pct"], alert["base_price"]) == (
                "BTCUSDT", 1.0, 100.0)
            assert (alert["rule"], alert["level"]) == ("default", 1)
    finally:
        stopping.set()
        await asyncio.wait_for(task, 5)


def test_admin_token_setting_is_checked_and_never_shown() -> None:
    from common.settings import GatewaySettings, SettingsError

    with pytest.raises(SettingsError, match="ADMIN_TOKEN") as error:
        load_settings(GatewaySettings, admin_token="too-short")
    assert "too-short" not in str(error.value)
    settings = load_settings(GatewaySettings, admin_token=TOKEN)
    assert TOKEN not in repr(settings)
    assert load_settings(GatewaySettings, admin_token="  ").admin_token is None
    assert json.dumps(str(settings.admin_token)) == '"**********"'
