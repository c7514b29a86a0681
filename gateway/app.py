"""The gateway's ASGI app: the page, ``/ws``, ``/api/alerts``, ``/api/rules``, the rules
admin API (``/api/admin``, see ``gateway.admin``), health and metrics.

``create_app`` builds everything but starts nothing: the transport is the runner's, and the
bus readers that feed the app (``readers_of``) are tasks of ``gateway.service.serve``, in
the same task group as the HTTP server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, Final

import msgspec
from fastapi import FastAPI, HTTPException, Query, WebSocket
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CollectorRegistry

import gateway
from common.bus import Transport
from common.schemas import ALERT_ID_PATTERN
from common.settings import GatewaySettings
from gateway.admin import register_admin
from gateway.api_schema import error_answer
from gateway.health import Component, Health
from gateway.health_monitor import HealthMonitor
from gateway.hub import Hub, UnknownAlert, alerts_document
from gateway.metrics import Metrics
from gateway.origins import OriginPolicy
from gateway.page import PageFiles
from gateway.rules import RulesFollower
from gateway.ws import SocketPolicy, serve_client

log = logging.getLogger(__name__)

# Installed next to the packages (the wheel force-includes it), and next to them in a checkout.
FRONTEND_DIR: Final = Path(gateway.__file__).resolve().parent.parent / "frontend"
API_MAX_LIMIT: Final = 1000
READY_PING_TIMEOUT_S: Final = 2.0
_json: Final = msgspec.json.Encoder()


Reader = Callable[[], Coroutine[Any, Any, None]]


def create_app(settings: GatewaySettings, transport: Transport,
               registry: CollectorRegistry | None = None) -> FastAPI:
    """Build the app on a transport that its caller starts and closes; its metrics go on
    ``registry`` (by default one of its own)."""
    metrics = Metrics(registry)
    hub = Hub(metrics=metrics, history_size=settings.history_size,
              max_buffered_bytes=settings.ws_max_buffered_bytes,
              max_clients=settings.max_clients,
              read_block_ms=settings.read_block_ms, seen_limit=settings.alerts_maxlen)
    rules = RulesFollower(hub, metrics, read_block_ms=settings.read_block_ms)
    health = HealthMonitor(settings, hub)
    policy = SocketPolicy(OriginPolicy.of(settings))

    # /openapi.json describes the HTTP API (the admin routes with it when it is on); no
    # documentation pages: they load scripts from elsewhere, against the page's CSP.
    app = FastAPI(title="binance-alerter gateway", docs_url=None,
                  redoc_url=None, openapi_url="/openapi.json")
    app.state.hub = hub
    app.state.rules = rules
    app.state.health = health
    app.state.metrics = metrics
    app.state.readers = {"alerts reader": lambda: hub.run(transport),
                         "rules follower": lambda: rules.run(transport),
                         "heartbeat": lambda: hub.heartbeat(settings.ws_heartbeat_s),
                         "health monitor": lambda: health.run(transport)}
    app.state.failed_readers = {}
    metrics.instrument(app)

    @app.websocket("/ws")
    async def alerts_socket(websocket: WebSocket) -> None:
        await serve_client(websocket, hub, metrics, rules, policy, health.message)

    @app.get("/api/alerts", responses={404: error_answer("before names an alert this gateway "
                                                       "no longer holds")})
    async def recent_alerts(
        limit: Annotated[int | None, Query(ge=1, le=API_MAX_LIMIT)] = None,
        before: Annotated[str | None, Query(pattern=ALERT_ID_PATTERN.pattern,
                                            max_length=100)] = None,
    ) -> Response:
        """Alerts newest first (the page's order); ``next`` is the ``before`` of the next
        page, ``null`` when this gateway holds nothing older."""
        try:
            entries, next_cursor = hub.page(
                settings.history_size if limit is None else limit, before)
        except UnknownAlert:
            raise HTTPException(404, f"unknown alert id {before!r}: no longer held by this "
                                     "gateway; start again without before") from None
        return Response(alerts_document(entries, next_cursor), media_type="application/json")

    @app.get("/api/rules")
    async def active_rules() -> Response:
        """The rules the detectors announced, as the page shows them."""
        return Response(rules.document(), media_type="application/json")

    register_admin(app, settings, rules, lambda: transport)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        """Readiness of this gateway (503 only for its own: bus unreachable, a reader
        down, history not loaded), and the pipeline's health in the body with 200: a stale
        exchange feed is every replica's, and must not make a load balancer pull them all.

        ``{"status": "ready"|"not ready", "reason": "...", "level": "ok"|"warn"|"down",
        "summary": "...", "reasons": [...], "symbols": n, "newest_tick_ms": ...,
        "at_ms": ..., "components": {"gateway"|"bus"|"feed"|"detector":
        {"level": ..., "detail": ...}}}``
        """
        reason = _failures_reason(app) or await _not_ready_reason(hub, transport)
        return Response(readiness_document(reason, health.current()),
                        status_code=503 if reason else 200, media_type="application/json")

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics_endpoint() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    # Last, so that the routes above win; html=True serves index.html for "/". Every file
    # carries the page's Content-Security-Policy (gateway.page).
    app.mount("/", PageFiles(directory=FRONTEND_DIR, html=True), name="frontend")
    return app


async def _not_ready_reason(hub: Hub, transport: Transport) -> str:
    if not hub.running:
        return "alerts reader is not running"
    try:
        async with asyncio.timeout(READY_PING_TIMEOUT_S):
            answered = await transport.ping()
    except TimeoutError:
        answered = False
    if not answered:
        return "bus does not answer"
    if not hub.reading:
        return "alerts reader is reconnecting to the bus"
    if not hub.primed.is_set():
        return "alert history is not loaded yet"
    return ""


def readiness_document(reason: str, health: Health) -> bytes:
    gateway = Component("down", reason) if reason else Component("ok", "ready")
    fields = msgspec.structs.asdict(health)
    fields["components"] = {"gateway": gateway, **health.components}
    return _json.encode(Readiness(status="not ready" if reason else "ready", reason=reason,
                                  **fields))


class Readiness(Health, frozen=True, kw_only=True):
    """The pipeline's health with this gateway's own readiness."""

    status: str
    reason: str


def hub_of(app: FastAPI) -> Hub:
    hub = app.state.hub
    if not isinstance(hub, Hub):
        raise TypeError("not a gateway app")
    return hub


def failed_readers(app: FastAPI) -> dict[str, Exception]:
    """The readers of ``readers_of`` that died, by name, with their errors: ``serve``
    records them there, ``/readyz`` names them while the service stops."""
    failed: dict[str, Exception] = app.state.failed_readers
    return failed


def _failures_reason(app: FastAPI) -> str:
    return "; ".join(f"{name} failed: {error!r}" for name, error in failed_readers(app).items())


def readers_of(app: FastAPI) -> dict[str, Reader]:
    """The tasks that keep the app's state current (the alerts and rules readers, the
    clients' heartbeat), by task name."""
    readers: dict[str, Reader] = app.state.readers
    return readers


def metrics_of(app: FastAPI) -> Metrics:
    metrics = app.state.metrics
    if not isinstance(metrics, Metrics):
        raise TypeError("not a gateway app")
    return metrics
