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

Bodies are JSON, at most ``MAX_BODY_BYTES``, validated by the same structs as the bus (so
what is accepted here is exactly what a detector accepts); a bad value is a 422 whose
``loc`` names the field. Every change is logged with who (``X-Admin-User``, else "admin"),
when, and what (a field-by-field diff), and the diff rides on the stream entry as its
``change``: ``GET /api/admin/rules/history`` is the audit trail of the kept entries.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import random
import re
import time
from collections.abc import Callable
from typing import Any, Final

import msgspec
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from common import rules_stream
from common.bus import BusUnavailable, Transport
from common.rule_documents import (
    RuleError,
    RulesDocument,
    convert_rule,
    describe_changes,
    diff_rules,
    rule_error,
    summarize_rule,
)
from common.rule_model import RULE_NAME_PATTERN, Rule, check_rules
from common.schemas import RuleSet
from common.settings import GatewaySettings
from gateway import api_schema
from gateway.api_schema import admin_operation
from gateway.rules import RulesFollower

log = logging.getLogger(__name__)

PREFIX: Final = "/api/admin"
MAX_BODY_BYTES: Final = 64 * 1024
CONFIRM_TIMEOUT_S: Final = 5.0
RETRY_FOR_S: Final = 5.0
OFF_REASON: Final = ("the admin API is off: set ADMIN_TOKEN (at least 16 characters) in the "
                     "gateway's environment to turn it on")
RESERVED_NAMES: Final = frozenset({"history"})  # the routes under /rules/ that are not a rule
_USER: Final = re.compile(r"[^\w.@+-]")
_VERSION: Final = re.compile(r"[0-9]{1,18}")  # a version (or a length) that an int64 holds
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


class _Unprocessable(Exception):
    def __init__(self, loc: tuple[str | int, ...], msg: str) -> None:
        super().__init__(msg)
        self.loc = loc
        self.msg = msg


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
        return await admin.write(request, admin.replace_all)

    @router.get("/rules/history", openapi_extra=admin_operation(answer="History"))
    async def history(request: Request) -> Response:
        admin.authorize(request)
        return Response(_json.encode(await admin.history()), media_type="application/json")

    @router.post("/rules", status_code=201, openapi_extra=admin_operation(
        answer="AdminRules", status=201, body="NewRule", write=True))
    async def create_rule(request: Request) -> Response:
        return await admin.write(request, admin.create, status=201)

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
        return await admin.write(request, admin.replace_one, name=name)

    @router.patch("/rules/{name}", openapi_extra=admin_operation(
        answer="AdminRules", body="RuleFields", write=True))
    async def patch_rule(name: str, request: Request) -> Response:
        return await admin.write(request, admin.patch_one, name=name)

    @router.delete("/rules/{name}", openapi_extra=admin_operation(answer="AdminRules",
                                                                  write=True))
    async def delete_rule(name: str, request: Request) -> Response:
        return await admin.write(request, admin.delete_one, name=name, body=False)

    app.include_router(router)
    api_schema.install(app, [AdminRules, HistoryEntry])


Mutation = Callable[[RuleSet | None, Any, str], tuple[list[Rule], str]]


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

    async def write(self, request: Request, mutation: Mutation, *, name: str = "",
                    status: int = 200, body: bool = True) -> Response:
        who = self.authorize(request)
        try:
            if name and RULE_NAME_PATTERN.fullmatch(name) is None:
                raise _Unprocessable(("path", "name"), "must be 1-40 characters of a-z, 0-9, "
                                     "_ and -")
            expected = _expected_version(request)
            document = await _read_json(request) if body else None
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
                        loc = error.loc if mutation == self.replace_all else ()
                        raise _Unprocessable(("body", *loc), error.msg) from None
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
        except _Unprocessable as exc:
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

    # --- the mutations: (rule set in force, body, name) → (new rules, what changed) -------

    def replace_all(self, current: RuleSet | None, document: Any,
                    _: str) -> tuple[list[Rule], str]:
        try:
            rules = msgspec.convert(document, RulesDocument).rules
        except msgspec.ValidationError as exc:
            error = rule_error(exc)
            raise _Unprocessable(("body", *error.loc), error.msg) from None
        old = current.rules if current else []
        for i, rule in enumerate(rules):
            if all(r.name != rule.name for r in old):
                _not_reserved(rule.name, ("body", "rules", i, "name"))
        return rules, f"replace all rules: {describe_changes(old, rules)}"

    def create(self, current: RuleSet | None, document: Any, _: str) -> tuple[list[Rule], str]:
        if not isinstance(document, dict) or "name" not in document:
            raise _Unprocessable(("body", "name"), "a new rule needs a name")
        rule = _convert(document)
        _not_reserved(rule.name, ("body", "name"))
        if current is not None and current.rule(rule.name) is not None:
            raise HTTPException(409, f"a rule named {rule.name!r} exists: PUT or PATCH "
                                f"{PREFIX}/rules/{rule.name} to change it")
        _own_window(current, rule)
        rules = [*(current.rules if current else []), rule]
        return rules, f"create {rule.name!r} ({summarize_rule(rule)})"

    def replace_one(self, current: RuleSet | None, document: Any,
                    name: str) -> tuple[list[Rule], str]:
        old = self._existing(current, name)
        if isinstance(document, dict):
            document = {"name": name, **document}
        rule = _convert(document)
        if rule.name != name:
            raise _Unprocessable(("body", "name"), f"must be {name!r}, the name in the path "
                                 "(to rename, create the new rule and delete the old one)")
        _own_window(current, rule)
        return _swap(current, rule), f"update {name!r}: {diff_rules(old, rule) or 'no change'}"

    def patch_one(self, current: RuleSet | None, document: Any,
                  name: str) -> tuple[list[Rule], str]:
        old = self._existing(current, name)
        if not isinstance(document, dict):
            raise _Unprocessable(("body",), "expected a JSON object of the fields to change")
        if document.get("name", name) != name:
            raise _Unprocessable(("body", "name"), "a rule cannot be renamed")
        rule = _convert({**msgspec.to_builtins(old), **document})
        _own_window(current, rule)
        return _swap(current, rule), f"update {name!r}: {diff_rules(old, rule) or 'no change'}"

    def delete_one(self, current: RuleSet | None, _: Any, name: str) -> tuple[list[Rule], str]:
        self._existing(current, name)
        assert current is not None
        if len(current.rules) == 1:
            raise HTTPException(409, f"{name!r} is the last rule; a detector needs at least "
                                "one (change it instead)")
        return [r for r in current.rules if r.name != name], f"delete {name!r}"

    @staticmethod
    def _existing(current: RuleSet | None, name: str) -> Rule:
        rule = current.rule(name) if current else None
        if rule is None:
            raise HTTPException(404, f"no rule named {name!r} (POST {PREFIX}/rules creates "
                                "one)")
        return rule


def _expected_version(request: Request) -> int | None:
    header = request.headers.get("if-match")
    if header is None:
        return None
    text = header.strip().removeprefix("W/").strip('"')
    if _VERSION.fullmatch(text) is None:  # not isdigit(): "²" is a digit int() refuses
        raise _Unprocessable(("header", "if-match"), "expected the version number of the "
                             'rules to change (the ETag of a GET), e.g. If-Match: "3"')
    return int(text)


async def _read_json(request: Request) -> Any:
    length = request.headers.get("content-length", "")
    if _VERSION.fullmatch(length) and int(length) > MAX_BODY_BYTES:
        raise HTTPException(413, f"body over {MAX_BODY_BYTES} bytes")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise HTTPException(413, f"body over {MAX_BODY_BYTES} bytes")
    except ClientDisconnect:
        # The client left, or the server refused the rest (gateway.limits): nobody reads
        # this answer, but it ends the request without an "exception in ASGI application".
        raise HTTPException(400, "the request body did not arrive") from None
    try:
        return msgspec.json.decode(bytes(body))
    except msgspec.DecodeError as exc:
        raise _Unprocessable(("body",), f"not valid JSON: {exc}") from None
    except RecursionError:  # 64 KiB of "[" is 64 Ki levels; a rule has 4
        raise _Unprocessable(("body",), "nested too deeply") from None


def _convert(document: Any) -> Rule:
    try:
        return convert_rule(document)
    except RuleError as exc:
        raise _Unprocessable(("body", *exc.loc), exc.msg) from None


def _not_reserved(name: str, loc: tuple[str | int, ...]) -> None:
    """A rule named like a fixed route under ``/rules/`` could never be read by name."""
    if name in RESERVED_NAMES:
        raise _Unprocessable(loc, f"{name!r} is reserved: GET {PREFIX}/rules/{name} is "
                             "another route; choose another name")


def _own_window(current: RuleSet | None, rule: Rule) -> None:
    """Windows are unique in a set (the alert id is ``{symbol}:{window_s}:{time}``)."""
    for other in current.rules if current else []:
        if other.name != rule.name and other.window_s == rule.window_s:
            raise _Unprocessable(("body", "window_s"), f"{rule.window_s} is already the window "
                                 f"of rule {other.name!r}; each rule needs its own window (it "
                                 "is part of the alert id)")


def _swap(current: RuleSet | None, rule: Rule) -> list[Rule]:
    assert current is not None
    return [rule if r.name == rule.name else r for r in current.rules]

