"""The gateway's OpenAPI document (``/openapi.json``), admin API included.

The admin routes read their bodies themselves (``gateway.admin``: a size cap, then the same
msgspec structs as the bus), so FastAPI sees no body, no header and no answer of theirs.
They are described here instead: each route's ``openapi_extra`` (``admin_operation``), and
the components the descriptions point at (``install``), generated from the very structs
the routes decode and encode, with the bounds their ``__post_init__`` checks written into
the schema. The description is what clients and schema-driven tests read; the structs
stay the judges (a rule set's own limits, unique windows and names, are beyond a schema).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import msgspec
from fastapi import FastAPI

from common.rule_documents import RulesDocument
from common.rule_model import (
    KIND_FIELDS,
    MAX_COOLDOWN_S,
    MAX_OVERRIDES,
    MAX_PATTERNS,
    MAX_PCT,
    MAX_USDT,
    MAX_VOLUME_FACTOR,
    MAX_WINDOW_S,
    REQUIRED_FIELDS,
    RULE_KINDS,
    RULE_NAME_PATTERN,
    SYMBOL_PATTERN,
    Rule,
)

BEARER: Final = "bearer"
_REF: Final = "#/components/schemas/{name}"
_PCT: Final = {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_PCT}
_STEP_PCT: Final = {"type": "number", "minimum": 0, "maximum": MAX_PCT}
_COOLDOWN: Final = {"type": "integer", "minimum": 0, "maximum": MAX_COOLDOWN_S}
_VOLUME: Final = {"type": "number", "minimum": 0}
_GLOB: Final = {"type": "string", "pattern": f"^{SYMBOL_PATTERN.pattern}$"}
_RULE_NAME: Final = {"type": "string", "pattern": f"^{RULE_NAME_PATTERN.pattern}$"}
_USDT: Final = {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_USDT}
_STEP_USDT: Final = {"type": "number", "minimum": 0, "maximum": MAX_USDT}
# The thresholds of the other kinds, in a rule and in an override alike.
_KIND_BOUNDS: Final[dict[str, dict[str, Any]]] = {
    "min_notional_usdt": _USDT, "escalation_step_usdt": _STEP_USDT,
    "min_funding_rate_pct": _PCT,
    "volume_factor": {"type": "number", "minimum": 1, "maximum": MAX_VOLUME_FACTOR},
    "min_window_volume_usdt": _USDT,
}
# Bounds of Rule and SymbolOverride (their __post_init__), by field. ``baseline_s`` must
# also be longer than ``window_s``, which a schema cannot say.
_BOUNDS: Final[dict[str, dict[str, Any]]] = {
    "Rule": {"name": _RULE_NAME,
             "window_s": {"type": "integer", "minimum": 1, "maximum": MAX_WINDOW_S},
             "threshold_up_pct": _PCT, "threshold_down_pct": _PCT, "cooldown_s": _COOLDOWN,
             "escalation_step_pct": _STEP_PCT, "min_quote_volume": _VOLUME,
             "allow": {"type": "array", "items": _GLOB, "maxItems": MAX_PATTERNS},
             "deny": {"type": "array", "items": _GLOB, "maxItems": MAX_PATTERNS},
             "overrides": {"maxItems": MAX_OVERRIDES}, **_KIND_BOUNDS,
             "baseline_s": {"type": "integer", "minimum": 2, "maximum": MAX_WINDOW_S}},
    "SymbolOverride": {"pattern": _GLOB, "threshold_up_pct": _PCT, "threshold_down_pct": _PCT,
                       "cooldown_s": _COOLDOWN, "escalation_step_pct": _STEP_PCT,
                       "min_quote_volume": _VOLUME, **_KIND_BOUNDS},
}
_DETAIL: Final = {"type": "object", "required": ["detail"],
                  "properties": {"detail": {"type": "string", "minLength": 1}}}


def error_answer(description: str) -> dict[str, Any]:
    """A refusal whose ``detail`` says why (FastAPI's ``HTTPException``)."""
    return {"description": description, "content": {"application/json": {"schema": _DETAIL}}}


def _json(name: str, description: str, headers: bool = False) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": {
        "application/json": {"schema": {"$ref": _REF.format(name=name)}}}}
    if headers:
        answer["headers"] = {"ETag": {"description": "the version, for If-Match",
                                      "schema": {"type": "string"}}}
    return answer


_UNPROCESSABLE: Final = {
    "description": "a value is invalid: ``loc`` names it",
    "content": {"application/json": {"schema": {"$ref": _REF.format(name="HTTPValidationError")}}},
}
_AUTH_ERRORS: Final = {"401": error_answer("no bearer token"),
                       "403": error_answer("wrong token")}
_WRITE_ERRORS: Final = {
    **_AUTH_ERRORS,
    "404": error_answer("no rule of that name"),
    "409": error_answer("a concurrent or conflicting change"),
    "413": error_answer("body too large"), "422": _UNPROCESSABLE,
    "503": error_answer("the bus is unavailable"),
    "504": error_answer("written, not confirmed in time"),
}
_READ_ERRORS: Final = {**_AUTH_ERRORS, "404": error_answer("no rule of that name"),
                       "503": error_answer("the bus is unavailable")}
_IF_MATCH: Final = {"name": "If-Match", "in": "header", "required": False,
                    "description": 'the version the change is based on (an ETag: "3")',
                    "schema": {"type": "string", "pattern": r'^\s*(W/)?"*[0-9]{1,18}"*\s*$'}}
_USER: Final = {"name": "X-Admin-User", "in": "header", "required": False,
                "description": "who makes the change, for the audit trail",
                "schema": {"type": "string", "maxLength": 64}}


def admin_operation(*, answer: str, status: int = 200, body: str | None = None,
                    write: bool = False) -> dict[str, Any]:
    """The ``openapi_extra`` of one admin route: its bearer token, headers, body and
    answers (``answer`` names the component of its success)."""
    operation: dict[str, Any] = {
        "security": [{BEARER: []}],
        "responses": {str(status): _json(answer, "the rules in force after it", headers=(
            answer == "AdminRules")), **(_WRITE_ERRORS if write else _READ_ERRORS)},
    }
    if write:
        operation["parameters"] = [_IF_MATCH, _USER]
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": {"$ref": _REF.format(name=body)}}}}
    return operation


def components(answers: list[type[Any]]) -> dict[str, Any]:
    """The admin API's schemas: the structs of its bodies and ``answers``, with bounds."""
    (*_, entry), schemas = msgspec.json.schema_components([RulesDocument, Rule, *answers],
                                                          ref_template=_REF)
    for name, bounds in _BOUNDS.items():
        properties = schemas[name]["properties"]
        for field, bound in bounds.items():
            properties[field] = _bounded(properties[field], bound)
    schemas["Rule"]["allOf"] = kind_conditions()
    schemas["Rule"]["description"] = _KIND_DESCRIPTION
    # The body of PUT and PATCH /rules/{name}: the path gives the name (the body may repeat
    # it, never change it), and each field is as bounded as in a whole rule.
    fields = {k: v for k, v in schemas["Rule"]["properties"].items() if k != "name"}
    schemas["RuleFields"] = {"type": "object", "additionalProperties": False,
                             "properties": fields}
    schemas["NewRule"] = {"allOf": [{"$ref": _REF.format(name="Rule")}],
                          "required": ["name"]}
    schemas["History"] = {"type": "array", "items": entry}  # the last answer: an entry
    return schemas


_KIND_DESCRIPTION: Final = (
    "One detection rule. `kind` (default price) says what it watches, and which fields it "
    "needs: " + "; ".join(f"{kind}: {', '.join(REQUIRED_FIELDS[kind]) or 'none'} required"
                          for kind in RULE_KINDS)
    + ". A field of another kind is refused (422 naming it); baseline_s must be longer "
    "than window_s.")


def kind_conditions() -> list[dict[str, Any]]:
    """Per kind: the fields a rule of it must set, and the other kinds' fields it must
    leave unset (null or out). A rule without ``kind`` is a price rule, which the ``if``
    says too: ``properties`` holds of an object that lacks the property."""
    conditions = []
    for kind in RULE_KINDS:
        test: dict[str, Any] = {"properties": {"kind": {"const": kind}}}
        if kind != "price":
            test["required"] = ["kind"]
        others = {field: {"type": "null"} for other, fields in KIND_FIELDS.items()
                  if other != kind for field in fields}
        required = REQUIRED_FIELDS[kind]
        then: dict[str, Any] = {
            "properties": {**others, **{f: {"not": {"type": "null"}} for f in required}}}
        if required:
            then["required"] = list(required)
        conditions.append({"if": test, "then": then})
    return conditions


def _bounded(schema: dict[str, Any], bound: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (maybe ``anyOf`` a type and null) with ``bound`` on its non-null part."""
    if "anyOf" in schema:
        return {**schema, "anyOf": [_bounded(s, bound) if s.get("type") != "null" else s
                                    for s in schema["anyOf"]]}
    return {**schema, **bound}


def install(app: FastAPI, admin_answers: list[type[Any]] | None) -> None:
    """Serve the admin components (and its bearer scheme) in ``/openapi.json``; None: the
    admin API is off, and absent from the document."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            if admin_answers is not None:
                parts = document.setdefault("components", {})
                parts.setdefault("schemas", {}).update(components(admin_answers))
                parts["securitySchemes"] = {BEARER: {"type": "http", "scheme": "bearer"}}
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
