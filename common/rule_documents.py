"""Rules as JSON documents (the admin API's bodies, rules files): decode, validate, and say
precisely which field is wrong.

A rules document is ``{"rules": [<rule>, ...]}``; the metadata of a ``GET
/api/admin/rules`` answer (``version``, ``updated_at_ms``, ``updated_by``, ``change``) may
ride along and is ignored, so a saved answer is a valid rules file. Any other key is an
error. Errors carry ``loc``, the path to the offending value (``("rules", 1, "window_s")``),
in the shape FastAPI uses for its 422 answers.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

from common.rule_model import Rule, check_rules

Location = tuple[str | int, ...]

_AT: Final = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_STEP: Final = re.compile(r"\.([A-Za-z_]\w*)|\[(\d+)\]")
# Our own validation messages start with the field: "window_s: must be ..." or
# "rules[1].window_s: ..." (see common.schemas).
_FIELD_PREFIX: Final = re.compile(r"^(?P<field>[a-z_]+(?:\[\d+\])*(?:\.[a-z_]+(?:\[\d+\])*)*): "
                                  r"(?P<msg>.*)$", re.DOTALL)
_NAMED_FIELD: Final = re.compile(r"^Object (?:contains unknown|missing required) field "
                                 r"`(?P<field>[^`]+)`")


class RuleError(ValueError):
    """A rule or rules document is invalid; ``loc`` points at the field, ``msg`` says why."""

    def __init__(self, loc: Location, msg: str) -> None:
        super().__init__(f"{format_location(loc)}: {msg}" if loc else msg)
        self.loc = loc
        self.msg = msg


class RulesDocument(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    rules: list[Rule]
    # Metadata of an admin API answer, accepted so that a saved answer loads; ignored.
    version: int | None = None
    updated_at_ms: int | None = None
    updated_by: str | None = None
    change: str | None = None
    change_id: str | None = None


def format_location(loc: Location) -> str:
    """``("rules", 1, "window_s")`` → ``rules[1].window_s``."""
    text = ""
    for step in loc:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else step)
    return text


def _parse_path(path: str) -> list[str | int]:
    return [name if name else int(index) for name, index in _STEP.findall(path)]


def rule_error(exc: msgspec.ValidationError | ValueError, prefix: Location = ()) -> RuleError:
    """Turn a msgspec validation error (or one of ours) into a ``RuleError`` whose ``loc``
    goes down to the field."""
    match = _AT.match(str(exc))
    assert match is not None  # the pattern matches any text
    msg = match["msg"]
    loc: list[str | int] = [*prefix, *_parse_path(match["path"] or "")]
    named = _NAMED_FIELD.match(msg)
    own = _FIELD_PREFIX.match(msg)
    if named:
        loc.append(named["field"])
    elif own:
        loc.extend(_parse_path("." + own["field"]))
        msg = own["msg"]
    return RuleError(tuple(loc), msg)


def decode_rule(data: bytes | str) -> Rule:
    """One rule from JSON; raises ``RuleError``."""
    try:
        return msgspec.json.decode(data, type=Rule)
    except msgspec.ValidationError as exc:
        raise rule_error(exc) from None
    except msgspec.DecodeError as exc:
        raise RuleError((), f"not valid JSON: {exc}") from None


def convert_rule(data: object) -> Rule:
    """One rule from already decoded JSON (a dict); raises ``RuleError``."""
    try:
        return msgspec.convert(data, Rule)
    except msgspec.ValidationError as exc:
        raise rule_error(exc) from None


def decode_rules_document(data: bytes | str) -> list[Rule]:
    """A whole rule set from a JSON rules document; raises ``RuleError``."""
    try:
        document = msgspec.json.decode(data, type=RulesDocument)
    except msgspec.ValidationError as exc:
        raise rule_error(exc) from None
    except msgspec.DecodeError as exc:
        raise RuleError((), f"not valid JSON: {exc}") from None
    try:
        check_rules(document.rules)
    except ValueError as exc:
        raise rule_error(exc) from None
    return document.rules


def encode_rules_document(rules: list[Rule]) -> bytes:
    """The JSON document ``decode_rules_document`` reads, indented for people."""
    return msgspec.json.format(msgspec.json.encode(RulesDocument(rules=rules)), indent=2)


def summarize_rule(rule: Rule) -> str:
    """Every field but the name, ``key=value``, for the audit trail of a new rule."""
    fields = msgspec.to_builtins(rule)
    return ", ".join(f"{k}={v}" for k, v in fields.items() if k != "name")


def diff_rules(old: Rule, new: Rule) -> str:
    """The fields that differ, ``key old → new``, for the audit trail of a change."""
    before, after = msgspec.to_builtins(old), msgspec.to_builtins(new)
    return ", ".join(f"{k} {before.get(k)} → {v}" for k, v in after.items()
                     if before.get(k) != v)


def describe_changes(old: list[Rule], new: list[Rule]) -> str:
    """What replacing the rules ``old`` by ``new`` does, rule by rule, for the audit trail."""
    before = {r.name: r for r in old}
    after = {r.name for r in new}
    parts = [f"delete {name!r}" for name in before if name not in after]
    for rule in new:
        if rule.name not in before:
            parts.append(f"create {rule.name!r} ({summarize_rule(rule)})")
        elif diff := diff_rules(before[rule.name], rule):
            parts.append(f"update {rule.name!r}: {diff}")
    return "; ".join(parts) or "no change"
