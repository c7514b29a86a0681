"""Rules of every kind through the admin API, against a real gateway and a real Redis:
created, read, patched and replaced with their fields; each kind's required fields, the
fields of another kind and the bounds refused as the rule model refuses them (a 422 naming
the field); rule documents written before kinds still load as price rules; and the
OpenAPI schema's bounds agree with what the API accepts."""

from __future__ import annotations

import time
from typing import Any

import jsonschema_rs
import msgspec
import pytest

from common.bus import Record
from common.bus.redis_streams import RedisTransport
from common.partitioning import RULES_STREAM
from common.rule_model import Rule
from common.schemas import decode_rule_set
from tests.support.admin import AUTH, TOKEN, seed
from tests.support.gateway import field_of, running_gateway
from tests.support.servers import RedisServer

LIQUIDATION = {"name": "cascade", "kind": "liquidation", "window_s": 60,
               "min_notional_usdt": 1_000_000, "escalation_step_usdt": 500_000,
               "cooldown_s": 120}
FUNDING = {"name": "funding", "kind": "funding", "min_funding_rate_pct": 0.1}
VOLUME = {"name": "spike", "kind": "volume", "window_s": 60, "baseline_s": 3600,
          "volume_factor": 5, "min_window_volume_usdt": 250_000,
          "overrides": [{"pattern": "BTCUSDT", "volume_factor": 8}]}


async def rules_on_bus(bus: RedisTransport) -> list[Rule]:
    entries = await bus.broadcast_reader(RULES_STREAM).backlog(100)
    return decode_rule_set(entries[-1].payload).rules


async def test_a_rule_of_each_kind_is_created_read_and_followed_by_the_bus(
        redis_server: RedisServer, bus: RedisTransport) -> None:
    await seed(bus)  # the default price rule, window 60
    async with running_gateway(redis_server.url, admin_token=TOKEN) as gw:
        for document in (LIQUIDATION, FUNDING, VOLUME):
            # Same window as the price rule: only price rules need windows of their own.
            created = await gw.http.post("/api/admin/rules", headers=AUTH, json=document)
            assert created.status_code == 201, created.text
        listed = (await gw.http.get("/api/admin/rules", headers=AUTH)).json()
        assert [r["kind"] for r in listed["rules"]] == ["price", "liquidation", "funding",
                                                       "volume"]
        spike = (await gw.http.get("/api/admin/rules/spike", headers=AUTH)).json()
        assert (spike["baseline_s"], spike["volume_factor"], spike["min_window_volume_usdt"]
                ) == (3600, 5, 250_000)
        assert spike["overrides"][0]["volume_factor"] == 8
        assert spike["min_notional_usdt"] is None
        assert listed["version"] == 4
        assert listed["change"].startswith("create 'spike' (kind=volume")
    on_bus = {r.name: r for r in await rules_on_bus(bus)}
    assert on_bus["cascade"].kind == "liquidation"
    assert on_bus["cascade"].min_notional_usdt == 1_000_000
    assert on_bus["cascade"].escalation_step_usdt == 500_000
    assert on_bus["funding"].min_funding_rate_pct == 0.1
    assert on_bus["spike"].baseline_s == 3600


@pytest.mark.parametrize(("body", "loc"), [
    ({"name": "x", "kind": "liquidation"}, ["body", "min_notional_usdt"]),
    ({"name": "x", "kind": "funding"}, ["body", "min_funding_rate_pct"]),
    ({**VOLUME, "name": "x", "baseline_s": None}, ["body", "baseline_s"]),
    ({**VOLUME, "name": "x", "baseline_s": 60}, ["body", "baseline_s"]),  # not > window_s
    ({"name": "x", "window_s": 30, "min_notional_usdt": 5}, ["body", "min_notional_usdt"]),
    ({**FUNDING, "name": "x", "volume_factor": 3}, ["body", "volume_factor"]),
    ({**LIQUIDATION, "name": "x", "escalation_step_pct": 1}, ["body", "escalation_step_pct"]),
    ({**LIQUIDATION, "name": "x", "min_notional_usdt": 0}, ["body", "min_notional_usdt"]),
    ({**VOLUME, "name": "x", "volume_factor": 0.5}, ["body", "volume_factor"]),
    ({**FUNDING, "name": "x", "min_funding_rate_pct": -0.1}, ["body", "min_funding_rate_pct"]),
    ({**FUNDING, "name": "x", "overrides": [{"pattern": "BTC*", "min_notional_usdt": 9}]},
     ["body", "overrides", 0, "min_notional_usdt"]),
    ({**LIQUIDATION, "name": "x", "overrides": [{"pattern": "BTC*", "threshold_up_pct": 9}]},
     ["body", "overrides", 0, "threshold_up_pct"]),
    ({"name": "x", "kind": "open_interest"}, ["body", "kind"]),
])
async def test_what_the_rule_model_refuses_is_a_422_naming_the_field(
        redis_server: RedisServer, bus: RedisTransport, body: dict[str, Any],
        loc: list[Any]) -> None:
    await seed(bus)
    async with running_gateway(redis_server.url, admin_token=TOKEN) as gw:
        assert field_of(await gw.http.post("/api/admin/rules", headers=AUTH, json=body)) == loc
        assert [r.name for r in await rules_on_bus(bus)] == ["default"]


async def test_patch_and_put_change_a_rule_of_another_kind(redis_server: RedisServer,
                                                           bus: RedisTransport) -> None:
    await seed(bus, Rule(), msgspec.convert(LIQUIDATION, Rule))
    async with running_gateway(redis_server.url, admin_token=TOKEN) as gw:
        http = gw.http
        patched = await http.patch("/api/admin/rules/cascade", headers=AUTH,
                                   json={"min_notional_usdt": 2_000_000})
        assert patched.status_code == 200, patched.text
        assert "min_notional_usdt 1000000.0 → 2000000.0" in patched.json()["change"]
        # A field of another kind is refused, whoever's it is...
        assert field_of(await http.patch("/api/admin/rules/cascade", headers=AUTH,
                                       json={"volume_factor": 3})) == ["body", "volume_factor"]
        # ...but changing the kind drops the old kind's fields the patch does not restate.
        to_funding = await http.patch("/api/admin/rules/cascade", headers=AUTH,
                                      json={"kind": "funding", "min_funding_rate_pct": 0.2})
        assert to_funding.status_code == 200, to_funding.text
        rule = (await http.get("/api/admin/rules/cascade", headers=AUTH)).json()
        assert (rule["kind"], rule["min_funding_rate_pct"]) == ("funding", 0.2)
        assert rule["min_notional_usdt"] is None
        assert rule["escalation_step_usdt"] is None
        assert field_of(await http.patch("/api/admin/rules/cascade", headers=AUTH,
                                       json={"kind": "volume"})) == ["body", "volume_factor"]
        replaced = await http.put("/api/admin/rules/cascade", headers=AUTH,
                                  json={k: v for k, v in VOLUME.items() if k != "name"})
        assert replaced.status_code == 200, replaced.text
    [default, cascade] = await rules_on_bus(bus)
    assert (default.kind, cascade.kind, cascade.volume_factor) == ("price", "volume", 5)


async def test_rule_documents_without_a_kind_load_as_price_rules(
        redis_server: RedisServer, bus: RedisTransport) -> None:
    # A rule set as a detector of before kinds wrote it: no kind, no other kind's fields.
    old = {"rules": [{"name": "default", "window_s": 60, "threshold_up_pct": 2.0,
                      "threshold_down_pct": 2.0, "cooldown_s": 60, "allow": [], "deny": [],
                      "overrides": []}],
           "updated_at_ms": int(time.time() * 1000), "updated_by": "old detector",
           "version": 1, "change": "seeded"}
    await bus.publish([Record(RULES_STREAM, "rules", msgspec.msgpack.encode(old))])
    async with running_gateway(redis_server.url, admin_token=TOKEN) as gw:
        listed = (await gw.http.get("/api/admin/rules", headers=AUTH)).json()
        assert listed["version"] == 1
        assert listed["rules"][0]["kind"] == "price"
        document = {"rules": [{"name": "default", "window_s": 60},
                              {"name": "slow", "window_s": 300, "threshold_up_pct": 4}]}
        replaced = await gw.http.put("/api/admin/rules", headers=AUTH, json=document)
        assert replaced.status_code == 200, replaced.text
        assert [r["kind"] for r in replaced.json()["rules"]] == ["price", "price"]
        posted = await gw.http.post("/api/admin/rules", headers=AUTH,
                                    json={"name": "fast", "window_s": 10})
        assert posted.status_code == 201, posted.text
    assert [r.kind for r in await rules_on_bus(bus)] == ["price", "price", "price"]


SCHEMA_CASES: list[dict[str, Any]] = [
    LIQUIDATION, FUNDING, VOLUME, {"name": "p", "window_s": 30},
    {"name": "x", "kind": "liquidation"},
    {"name": "x", "kind": "funding", "min_funding_rate_pct": 0},
    {"name": "x", "kind": "funding", "min_funding_rate_pct": 0.1, "min_notional_usdt": 1},
    {"name": "x", "window_s": 30, "min_notional_usdt": 5},
    {**VOLUME, "name": "x", "volume_factor": 1001},
    {**VOLUME, "name": "x", "min_window_volume_usdt": -1},
    {**LIQUIDATION, "name": "x", "escalation_step_usdt": 0},
    {**LIQUIDATION, "name": "x", "min_notional_usdt": 2e15},
    {"name": "x", "kind": "volume", "volume_factor": 2, "min_window_volume_usdt": 1},
]


async def test_the_schema_states_the_bounds_and_fields_of_every_kind_as_the_api_judges(
        redis_server: RedisServer, bus: RedisTransport) -> None:
    await seed(bus)
    async with running_gateway(redis_server.url, admin_token=TOKEN) as gw:
        document = (await gw.http.get("/openapi.json")).json()
        schemas = document["components"]["schemas"]
        rule = schemas["Rule"]
        assert set(rule["properties"]["kind"]["enum"]) == {"price", "liquidation", "funding",
                                                           "volume"}
        assert "min_notional_usdt required" in rule["description"]
        validator = jsonschema_rs.validator_for(
            {"components": document["components"], "$ref": "#/components/schemas/NewRule"})
        for case in SCHEMA_CASES:
            answer = await gw.http.post("/api/admin/rules", headers=AUTH, json=case)
            assert answer.status_code in (201, 422), answer.text
            assert validator.is_valid(case) == (answer.status_code == 201), (case, answer.text)
            if answer.status_code == 201:
                deleted = await gw.http.delete(f"/api/admin/rules/{case['name']}", headers=AUTH)
                assert deleted.status_code == 200, deleted.text
