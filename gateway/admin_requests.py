"""The admin API's requests, read and judged: the ``If-Match`` version, the JSON body
under its size cap, and a rule from it validated by the rule model itself
(``common.rule_model``: each kind's required fields, the fields of another kind refused,
the bounds), so that what the API accepts is exactly what a detector accepts. A value the
rule model refuses is an ``Unprocessable`` whose ``loc`` names the field (a 422).
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec
from fastapi import HTTPException, Request
from starlette.requests import ClientDisconnect

from common.rule_documents import RuleError, convert_rule
from common.rule_model import KIND_FIELDS, Rule
from common.schemas import RuleSet

PREFIX: Final = "/api/admin"
MAX_BODY_BYTES: Final = 64 * 1024
RESERVED_NAMES: Final = frozenset({"history"})  # the routes under /rules/ that are not a rule
_VERSION: Final = re.compile(r"[0-9]{1,18}")  # a version (or a length) that an int64 holds

Location = tuple[str | int, ...]


class Unprocessable(Exception):
    """A 422: ``loc`` is where the bad value is (``("body", "window_s")``), ``msg`` why."""

    def __init__(self, loc: Location, msg: str) -> None:
        super().__init__(msg)
        self.loc = loc
        self.msg = msg


def expected_version(request: Request) -> int | None:
    """The version of ``If-Match`` (the ETag of a GET), or None without the header."""
    header = request.headers.get("if-match")
    if header is None:
        return None
    text = header.strip().removeprefix("W/").strip('"')
    if _VERSION.fullmatch(text) is None:  # not isdigit(): "²" is a digit int() refuses
        raise Unprocessable(("header", "if-match"), "expected the version number of the "
                            'rules to change (the ETag of a GET), e.g. If-Match: "3"')
    return int(text)


async def read_json(request: Request) -> Any:
    """The body as JSON, refused past ``MAX_BODY_BYTES`` before more of it is held."""
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
        raise Unprocessable(("body",), f"not valid JSON: {exc}") from None
    except RecursionError:  # 64 KiB of "[" is 64 Ki levels; a rule has 4
        raise Unprocessable(("body",), "nested too deeply") from None


def convert(document: Any) -> Rule:
    """A rule of any kind from a decoded body; a document without ``kind`` is a price
    rule, as every rule was before kinds."""
    try:
        return convert_rule(document)
    except RuleError as exc:
        raise Unprocessable(("body", *exc.loc), exc.msg) from None


def patched(old: Rule, document: dict[str, Any]) -> dict[str, Any]:
    """What a PATCH makes of ``old``: its fields, then the body's. A patch that changes the
    kind drops the old kind's own fields it does not restate (they would be refused as
    another kind's); a field of another kind the body itself sets is still refused."""
    fields = msgspec.to_builtins(old)
    kind = document.get("kind", old.kind)
    if kind != old.kind:
        for field in KIND_FIELDS[old.kind]:
            fields.pop(field, None)
    return {**fields, **document}


def not_reserved(name: str, loc: Location) -> None:
    """A rule named like a fixed route under ``/rules/`` could never be read by name."""
    if name in RESERVED_NAMES:
        raise Unprocessable(loc, f"{name!r} is reserved: GET {PREFIX}/rules/{name} is "
                            "another route; choose another name")


def own_window(current: RuleSet | None, rule: Rule) -> None:
    """Windows are unique among price rules (a price alert's id is
    ``{symbol}:{window_s}:{time}``); the other kinds' ids name the rule."""
    if rule.kind != "price":
        return
    for other in current.rules if current else []:
        if other.name != rule.name and other.kind == "price" and other.window_s == rule.window_s:
            raise Unprocessable(("body", "window_s"), f"{rule.window_s} is already the window "
                                f"of rule {other.name!r}; each price rule needs its own window "
                                "(it is part of the alert id)")
