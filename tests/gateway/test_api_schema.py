"""The gateway's HTTP API under schemathesis, from its own ``/openapi.json``: a gateway
process (``ADMIN_TOKEN`` set) on a real Redis, every operation of the schema, the admin
routes once with the token, once without and once with a wrong one.

Checks: schemathesis' own (no 5xx, statuses, content types, headers and bodies as the
schema says, invalid data refused, valid data not refused as invalid; a valid rule set can
still be a 409 or a 422 for what no schema says, such as two rules sharing a window, so
``positive_data_acceptance`` is off), and ``a_refusal_says_why`` (every 4xx gives its
reason). Without a valid token, every admin answer is a 401 or a 403. Budgets: short here,
``HYPOTHESIS_PROFILE=fuzz`` for the long run (``tests.support.fuzzing``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.support.admin import AUTH, TOKEN
from tests.support.api_fuzz import (
    WRONG_TOKEN,
    ApiCase,
    LiveGateway,
    a_refusal_says_why,
    live_gateway,
    load_schema,
    reason_of,
)
from tests.support.fuzzing import budget, timeout

pytestmark = timeout()
EXAMPLES = 20  # per operation, valid and invalid requests together


# Rules named as the generated names often are, so that the routes of one rule find one.
SEEDED = {"rules": [{"name": "0", "window_s": 60}, {"name": "a", "window_s": 300},
                    {"name": "default", "window_s": 900}]}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    with live_gateway(tmp_path_factory.mktemp("redis"), tmp_path_factory.mktemp("logs"),
                      ADMIN_TOKEN=TOKEN) as running:
        seeded = httpx.put(f"{running.url}/api/admin/rules", json=SEEDED, headers=AUTH)
        assert seeded.status_code == 200, seeded.text
        yield running


@pytest.fixture(scope="module")
def apis(gateway: LiveGateway) -> dict[str, schemathesis.BaseSchema]:
    """The schema three times over: with the admin token, with none, with a wrong one."""
    return {name: load_schema(gateway.url, token) for name, token in TOKENS.items()}


PUBLIC = [("GET", "/api/alerts"), ("GET", "/api/rules"), ("GET", "/healthz"),
          ("GET", "/readyz"), ("GET", "/metrics")]
ADMIN = [("GET", "/api/admin/rules"), ("PUT", "/api/admin/rules"), ("POST", "/api/admin/rules"),
         ("GET", "/api/admin/rules/history"), ("GET", "/api/admin/rules/{name}"),
         ("PUT", "/api/admin/rules/{name}"), ("PATCH", "/api/admin/rules/{name}"),
         ("DELETE", "/api/admin/rules/{name}")]
TOKENS = {"token": TOKEN, "no token": None, "wrong token": WRONG_TOKEN}


@pytest.mark.e2e  # a gateway process
def test_the_operations_here_are_every_operation_of_the_schema(
        apis: dict[str, schemathesis.BaseSchema]) -> None:
    found = set()
    for result in apis["token"].get_all_operations():
        assert isinstance(result, Ok), result
        found.add((result.ok().method.upper(), result.ok().path))
    assert found == set(PUBLIC) | set(ADMIN)


@pytest.mark.e2e  # a gateway process
def test_the_schema_describes_every_route_the_admin_api_included(gateway: LiveGateway) -> None:
    document = httpx.get(f"{gateway.url}/openapi.json").json()
    assert set(document["paths"]) == {
        "/api/alerts", "/api/rules", "/healthz", "/readyz", "/metrics", "/api/admin/rules",
        "/api/admin/rules/history", "/api/admin/rules/{name}"}
    assert set(document["paths"]["/api/admin/rules/{name}"]) == {"get", "put", "patch",
                                                                 "delete"}
    put = document["paths"]["/api/admin/rules"]["put"]
    assert put["security"] == [{"bearer": []}]
    assert "requestBody" in put
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


@pytest.mark.parametrize(("status", "content_type", "body"), [
    (404, "application/json", b""), (404, "application/json", b'{"detail": ""}'),
    (404, "application/json", b"{}"), (422, "application/json", b'{"detail": []}'),
    (422, "application/json", b'{"detail": [{"loc": ["body"], "msg": " "}]}'),
    (413, "text/plain", b" \n"), (400, "application/octet-stream", b"x")])
def test_a_refusal_without_a_reason_fails_the_check(status: int, content_type: str,
                                                     body: bytes) -> None:
    with pytest.raises(AssertionError):
        reason_of(status, content_type, body)


def test_a_refusal_with_a_reason_passes_the_check() -> None:
    assert reason_of(404, "application/json", b'{"detail": "no rule"}') == "no rule"
    assert reason_of(422, "application/json",
                     b'{"detail": [{"loc": ["body"], "msg": "bad", "type": "x"}]}') == "bad"
    assert reason_of(413, "text/plain; charset=utf-8", b"body too large\n")


def cases(api: schemathesis.BaseSchema, method: str, path: str) -> st.SearchStrategy[Any]:
    """Valid and invalid requests of one operation, as its schema describes them."""
    operation = api[path][method]
    return st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                     operation.as_strategy(GenerationMode.NEGATIVE))


def tally(statuses: list[int]) -> str:
    """``"12 requests: 200 ×7, 422 ×5"``."""
    counts = sorted(Counter(statuses).items())
    return f"{len(statuses)} requests: " + ", ".join(f"{s} ×{n}" for s, n in counts)


def call_and_check(case: ApiCase) -> tuple[schemathesis.Response, bool]:
    """The request, validated; and whether it was one that schemathesis made to spoil the
    credentials themselves (left as it made them: none, or not a bearer token)."""
    response = case.call_and_validate(additional_checks=[a_refusal_says_why],
                                      excluded_checks=[positive_data_acceptance])
    return response, case.operation.schema.is_security_param_negated(case)


@pytest.mark.e2e  # a gateway process
@pytest.mark.parametrize(("method", "path"), PUBLIC + ADMIN)
def test_every_operation_with_the_admin_token(apis: dict[str, schemathesis.BaseSchema],
                                              method: str, path: str) -> None:
    statuses: list[int] = []

    @budget(EXAMPLES)
    @given(case=cases(apis["token"], method, path))
    def run(case: ApiCase) -> None:
        response, spoiled = call_and_check(case)
        statuses.append(response.status_code)
        if spoiled:
            assert response.status_code in (401, 403), response.text

    run()
    print(f"{method} {path} with the token: {tally(statuses)}")  # for the long runs (-s)
    if method == "GET" and "{" not in path:  # the token is taken, not only refused
        plain = apis["token"][path][method].Case()
        response = plain.call_and_validate(headers=AUTH, additional_checks=[a_refusal_says_why],
                                           excluded_checks=[positive_data_acceptance])
        assert response.status_code == 200, response.text


@pytest.mark.e2e  # a gateway process
@pytest.mark.parametrize("token", ["no token", "wrong token"])
@pytest.mark.parametrize(("method", "path"), ADMIN)
def test_the_admin_api_refuses_without_the_token(apis: dict[str, schemathesis.BaseSchema],
                                                 method: str, path: str, token: str) -> None:
    statuses: list[int] = []

    @budget(EXAMPLES // 2)
    @given(case=cases(apis[token], method, path))
    def run(case: ApiCase) -> None:
        response, spoiled = call_and_check(case)
        statuses.append(response.status_code)
        expected = (401, 403) if spoiled else (401,) if token == "no token" else (403,)
        assert response.status_code in expected, response.text

    run()
    print(f"{method} {path} with {token}: {tally(statuses)}")


@pytest.mark.e2e  # a gateway process
@pytest.mark.parametrize(("method", "path", "headers", "body"), [
    # Found by hand beside the fuzzing: a 500 each, before the fix.
    ("PUT", "/api/admin/rules", {}, b"[" * 30_000 + b"]" * 30_000),
    ("PATCH", "/api/admin/rules/0", {b"If-Match": b"\xb2"}, b"{}"),  # a digit int() refuses
    ("PATCH", "/api/admin/rules/0", {b"If-Match": b"9" * 5000}, b"{}"),  # beyond int()'s digits
    ("POST", "/api/admin/rules", {}, b'{"name": "b", "window_s": 1e999}'),
    ("POST", "/api/admin/rules", {}, b"\xff\xfe"),
])
def test_odd_requests_are_refused_with_a_reason(
        gateway: LiveGateway, method: str, path: str, headers: dict[bytes, bytes],
        body: bytes) -> None:
    sent = {k.encode(): v.encode() for k, v in AUTH.items()}
    sent[b"Content-Type"] = b"application/json"
    response = httpx.request(method, f"{gateway.url}{path}", content=body,
                             headers={**sent, **headers})
    assert 400 <= response.status_code < 500, response.text
    assert reason_of(response.status_code, response.headers.get("content-type", ""),
                     response.content)


@pytest.mark.e2e  # a gateway process
def test_the_admin_routes_are_absent_from_the_schema_when_the_api_is_off(
        tmp_path: Path) -> None:
    with live_gateway(tmp_path / "redis", tmp_path) as gateway:
        document = httpx.get(f"{gateway.url}/openapi.json").json()
        assert not [p for p in document["paths"] if p.startswith("/api/admin")]
        assert httpx.get(f"{gateway.url}/api/admin/rules").status_code == 404
