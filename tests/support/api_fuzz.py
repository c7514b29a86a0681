"""The gateway's HTTP API under schemathesis: a gateway process on a real Redis, the check
that every refusal says why, and the three ways of sending (or not) the admin token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeAlias

import schemathesis

from tests.support.processes import Service, service_env, wait_answering
from tests.support.servers import RedisServer
from tools.redis_server import free_port

WRONG_TOKEN: Final = "not-the-admin-token-at-all"
ApiCase: TypeAlias = "schemathesis.Case[Any]"


@dataclass(frozen=True)
class LiveGateway:
    service: Service
    url: str


@contextmanager
def live_gateway(redis_dir: Path, log_dir: Path, **env: str) -> Iterator[LiveGateway]:
    """``python -m gateway`` on a free port and its own Redis, once ready; stopped after,
    insisting on a clean exit."""
    redis = RedisServer(redis_dir)
    redis.start()
    port = free_port()
    service = Service("gateway", service_env(
        BUS_URL=redis.url, GATEWAY_HOST="127.0.0.1", GATEWAY_PORT=str(port),
        SHUTDOWN_TIMEOUT_S="3", LOG_LEVEL="WARNING", **env), log_dir)
    service.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_answering(service, f"{url}/readyz")
        yield LiveGateway(service, url)
        assert service.stop() == 0, service.output()
    except BaseException:
        print(service.output()[-20_000:])
        raise
    finally:
        service.kill()
        redis.stop()


def reason_of(status: int, content_type: str, body: bytes) -> str:
    """Why a 4xx refused, as its body says: a JSON ``detail`` (a non-empty string, or
    FastAPI's list of ``{"loc", "msg", "type"}`` with a message in each), or a non-empty
    text body. Raises AssertionError for an answer that gives no reason."""
    assert body.strip(), f"{status} with an empty body"
    if "json" not in content_type:
        assert content_type.startswith("text/"), f"{status} as {content_type!r}"
        return body.decode()
    document = json.loads(body)
    assert isinstance(document, dict), f"{status}: {document!r} is not an object"
    detail = document.get("detail")
    if isinstance(detail, list):
        assert detail, f"{status}: an empty list of errors"
        for error in detail:
            assert isinstance(error, dict), f"{status}: {error!r}"
            assert isinstance(error.get("msg"), str), f"{status}: {error!r}"
            assert error["msg"].strip(), f"{status}: {error!r}"
            assert isinstance(error.get("loc"), list), f"{status}: {error!r}"
        return "; ".join(str(e["msg"]) for e in detail)
    assert isinstance(detail, str), f"{status}: no detail in {document!r}"
    assert detail.strip(), f"{status}: an empty detail"
    return detail


@schemathesis.check
def a_refusal_says_why(ctx: schemathesis.CheckContext, response: schemathesis.Response,
                       case: ApiCase) -> bool | None:
    """Every 4xx carries its reason (``reason_of``)."""
    if not 400 <= response.status_code < 500:
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    reason_of(response.status_code, content_type, response.content)
    return True


def bearer_auth(token: str | None) -> type[Any]:
    """A schemathesis auth provider that sends ``Authorization: Bearer <token>``, or none at
    all (None). Schemathesis leaves it out of the cases it makes to spoil the credentials."""

    class Bearer:
        def get(self, case: ApiCase, context: schemathesis.AuthContext) -> str:
            return token or ""  # None would mean "no credentials to set" to schemathesis

        def set(self, case: ApiCase, data: str,
                context: schemathesis.AuthContext) -> None:
            case.headers.pop("Authorization", None)  # case-insensitive
            if data:
                case.headers["Authorization"] = f"Bearer {data}"

    return Bearer


def load_schema(url: str, token: str | None) -> schemathesis.BaseSchema:
    """The gateway's own schema, its cases sent with ``token`` (``bearer_auth``)."""
    api = schemathesis.openapi.from_url(f"{url}/openapi.json")
    api.auth()(bearer_auth(token))
    return api
