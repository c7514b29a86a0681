"""The rules admin API: list, create, update and delete detection rules while everything runs.

Enabled only when ``ADMIN_TOKEN`` is set; every route then wants ``Authorization: Bearer
<token>`` (missing → 401 with ``WWW-Authenticate: Bearer``, wrong → 403, compared in
constant time). Without the token every ``/api/admin/*`` route answers 404 saying why.

A change is a whole new ``RuleSet`` written to the ``rules`` stream, one version above the
newest one there; every detector follows the stream and applies it within a second.
Optimistic concurrency, twice over:

- a write may carry ``If-Match: <version>`` (the ``ETag`` of a ``GET``): if another version
  is in force by then, 409;
- two writers (two gateways, say) that both publish the next version race on the stream,
  which is the arbiter (``common.rules_stream``: the first entry of a version wins). Each
  write reads the stream back to learn whether it won. Without ``If-Match`` the loser
  applies its change again on top of the winner's (retried with a random pause for up to
  ``RETRY_FOR_S``); with it, the loser answers 409.

A rule cannot be named ``history``: ``GET /api/admin/rules/history`` is the audit trail.

Bodies are JSON (at most 64 KiB) read and validated in ``gateway.admin_requests`` by the
same structs as the bus, so what is accepted here is exactly what a detector accepts, for
rules of every kind; a bad value is a 422 whose ``loc`` names the field. The changes
themselves are pure functions (``gateway.admin_changes``). Every change is logged with who
(``X-Admin-User``, else "admin"), when, and what (a field-by-field diff), and the diff
rides on the stream entry as its ``change``: ``GET /api/admin/rules/history`` is the audit
trail of the kept entries.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import random
import re
import time
from collections.abc import Callable
from typing import Final

import msgspec
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from common import rules_stream
from common.bus import BusUnavailable, Transport
from common.rule_documents import rule_error
from common.rule_model import RULE_NAME_PATTERN, Rule, check_rules
from common.schemas import RuleSet
from common.settings import GatewaySettings
from gateway import admin_changes as changes
from gateway import api_schema
from gateway.admin_requests import (
    PREFIX,
    Unprocessable,
    expected_version,
    read_json,
)
from gateway.api_schema import admin_operation
from gateway.rules import RulesFollower

log = logging.getLogger(__name__)

CONFIRM_TIMEOUT_S: Final = 5.0
RETRY_FOR_S: Final = 5.0
OFF_REASON: Final = ("the admin API is off: set ADMIN_TOKEN (at least 16 characters) in the "
                     "gateway's environment to turn it on")
_USER: Final = re.compile(r"[^\w.@+-]")
_json: Final = msgspec.json.Encoder()


class AdminRules(msgspec.Struct, frozen=True):
    """What ``GET /api/admin/rules`` answers: the rule set in force and its metadata."""

    version: int
    updated_at_ms: int | None
    updated_by: str | None
    change: str | None
    rules: list[Rule]


class HistoryEntry(msgspec.Struct, frozen=True):
    version: int
    updated_at_ms: int
    updated_by: str
    change: str
    applied: bool  # False: a losing or stale write that every reader ignored


def register_admin(app: FastAPI, settings: GatewaySettings, follower: RulesFollower,
                   transport: Callable[[], Transport | None]) -> None:
    """Add the ``/api/admin`` routes (or, with no token, routes that explain it is off).
    Call it before the catch-all static mount."""
    router = APIRouter(prefix=PREFIX)
    if settings.admin_token is None:
        @router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                          include_in_schema=False)
        async def admin_off(path: str) -> JSONResponse:
            return JSONResponse({"detail": OFF_REASON}, status_code=404)

        app.include_router(router)
        return

    admin = _Admin(settings.admin_token.get_secret_value().encode(), follower, transport)

    @router.get("/rules", openapi_extra=admin_operation(answer="AdminRules"))
    async def list_rules(request: Request) -> Response:
        admin.authorize(request)
        return admin.answer(await admin.in_force())

    @router.put("/rules", openapi_extra=admin_operation(answer="AdminRules",
                                                        body="RulesDocument", write=True))
    async def replace_rules(request: Request) -> Response:
        return await admin.write(request, changes.replace_all)

    @router.get("/rules/history", openapi_extra=admin_operation(answer="History"))
    async def history(request: Request) -> Response:
        admin.authorize(request)
        return Response(_json.encode(await admin.history()), media_type="application/json")

    @router.post("/rules", status_code=201, openapi_extra=admin_operation(
        answer="AdminRules", status=201, body="NewRule", write=True))
    async def create_rule(request: Request) -> Response:
        return await admin.write(request, changes.create, status=201)

    @router.get("/rules/{name}", openapi_extra=admin_operation(answer="Rule"))
    async def get_rule(name: str, request: Request) -> Response:
        admin.authorize(request)
        current = await admin.in_force()
        rule = current.rule(name) if current else None
        if rule is None:
            raise HTTPException(404, f"no rule named {name!r}")
        return Response(_json.encode(rule), media_type="application/json")

    @router.put("/rules/{name}", openapi_extra=admin_operation(
        answer="AdminRules", body="RuleFields", write=True))
    async def replace_rule(name: str, request: Request) -> Response:
        return await admin.write(request, changes.replace_one, name=name)

    @router.patch("/rules/{name}", openapi_extra=admin_operation(
        answer="AdminRules", body="RuleFields", write=True))
    async def patch_rule(name: str, request: Request) -> Response:
        return await admin.write(request, changes.patch_one, name=name)

    @router.delete("/rules/{name}", openapi_extra=admin_operation(answer="AdminRules",
                                                                  write=True))
    async def delete_rule(name: str, request: Request) -> Response:
        return await admin.write(request, changes.delete_one, name=name, body=False)

    app.include_router(router)
    api_schema.install(app, [AdminRules, HistoryEntry])


class _Admin:
    def __init__(self, token: bytes, follower: RulesFollower,
                 transport: Callable[[], Transport | None]) -> None:
        self._token = token
        self._follower = follower
        self._transport = transport
        self._lock = asyncio.Lock()  # one write at a time from this gateway

    # --- requests -------------------------------------------------------------------------

    def authorize(self, request: Request) -> str:
        """The admin's name for the audit trail; raises 401/403."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(401, "missing bearer token: send Authorization: Bearer <token>",
                                headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(token.strip().encode(), self._token):
            raise HTTPException(403, "wrong admin token")
        user = _USER.sub("", request.headers.get("x-admin-user", ""))[:64]
        return user or "admin"

    async def write(self, request: Request, mutation: changes.Mutation, *, name: str = "",
                    status: int = 200, body: bool = True) -> Response:
        who = self.authorize(request)
        try:
            if name and RULE_NAME_PATTERN.fullmatch(name) is None:
                raise Unprocessable(("path", "name"), "must be 1-40 characters of a-z, 0-9, "
                                     "_ and -")
            expected = expected_version(request)
            document = await read_json(request) if body else None
            async with self._lock:
                give_up_at = time.monotonic() + RETRY_FOR_S
                while True:
                    transport = self._bus()
                    current = await self.in_force()
                    in_force = current.version if current else 0
                    if expected is not None and expected != in_force:
                        raise HTTPException(409, f"version {in_force} is in force, not "
                                            f"{expected}: GET the rules again and retry")
                    rules, change = mutation(current, document, name)
                    try:
                        check_rules(rules)
                    except ValueError as exc:  # a whole set's limits: the body as a whole
                        error = rule_error(exc)
                        loc = error.loc if mutation is changes.replace_all else ()
                        raise Unprocessable(("body", *loc), error.msg) from None
                    written = rules_stream.next_version(current, rules, by=who,
                                                        change=change)
                    winner = await self._publish(transport, written)
                    if winner.change_id == written.change_id:
                        break
                    # Another writer took this version first. Without If-Match the change
                    # is applied again on top of theirs; with it, the caller decides.
                    if expected is not None or time.monotonic() > give_up_at:
                        raise HTTPException(409, f"another change took version "
                                            f"{written.version} first (by "
                                            f"{winner.updated_by}); GET the rules again "
                                            "and retry")
                    log.info("rules version %d lost to a concurrent write by %s; retrying",
                             written.version, winner.updated_by)
                    await asyncio.sleep(random.uniform(0, 0.05))  # break the symmetry
        except Unprocessable as exc:
            return JSONResponse({"detail": [{"loc": list(exc.loc), "msg": exc.msg,
                                             "type": "value_error"}]}, status_code=422)
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(written.updated_at_ms / 1000))
        client = request.client.host if request.client else "?"
        log.info("rules version %d written by %s at %s from %s (%s %s): %s", written.version,
                 who, when, client, request.method, request.url.path, change)
        return self.answer(written, status=status)

    def answer(self, rule_set: RuleSet | None, status: int = 200) -> Response:
        if rule_set is None:
            document = AdminRules(0, None, None, None, [])
        else:
            document = AdminRules(rule_set.version, rule_set.updated_at_ms,
                                  rule_set.updated_by, rule_set.change, rule_set.rules)
        return Response(_json.encode(document), status_code=status,
                        media_type="application/json", headers={"ETag": f'"{document.version}"'})

    # --- the stream (which entry wins is ``common.rules_stream``'s to say) ---------------

    def _bus(self) -> Transport:
        transport = self._transport()
        if transport is None:
            raise HTTPException(503, "the gateway is not connected to the bus")
        return transport

    async def _kept(self) -> list[rules_stream.Judged]:
        try:
            return await rules_stream.kept(self._bus())
        except BusUnavailable as exc:
            raise HTTPException(503, f"bus unavailable: {exc}") from None

    async def in_force(self) -> RuleSet | None:
        """The rule set every reader applies, read from the stream now (this gateway's
        follower may be a few milliseconds behind another gateway's write)."""
        current = rules_stream.in_force(await self._kept())
        if current is not None:
            self._follower.offer(current)
        return current

    async def history(self) -> list[HistoryEntry]:
        """The kept valid entries, newest first, each marked applied or ignored."""
        return [HistoryEntry(row.entry.version, row.entry.updated_at_ms, row.entry.updated_by,
                             row.entry.change, row.applied)
                for row in reversed(await self._kept()) if row.entry is not None]

    async def _publish(self, transport: Transport, written: RuleSet) -> RuleSet:
        """Write, then read back until our entry is seen; returns the rule set in force
        right after it: ours, unless another writer won its version first."""
        try:
            await rules_stream.write(transport, written)
        except BusUnavailable as exc:
            raise HTTPException(503, f"bus unavailable, nothing changed: {exc}") from None
        try:
            decided = await rules_stream.confirm(transport, written.change_id,
                                                 CONFIRM_TIMEOUT_S)
        except BusUnavailable as exc:
            raise HTTPException(503, f"bus unavailable: {exc}") from None
        except TimeoutError:
            raise HTTPException(504, "the change was written but not seen on the bus in "
                                "time; GET the rules to see whether it applies") from None
        if decided.change_id == written.change_id:
            self._follower.offer(written)
        return decided
