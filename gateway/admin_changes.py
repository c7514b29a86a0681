"""The admin API's changes, pure: each turns the rule set in force and a request's body
into the new rules and a description of what changed (the audit trail's ``change``).

``gateway.admin`` runs one under its lock, checks the whole set (``check_rules``) and
writes it; a change that cannot apply raises ``Unprocessable`` (422, the field named) or an
``HTTPException`` (404 no such rule, 409 a conflict).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from fastapi import HTTPException

from common.rule_documents import (
    RulesDocument,
    describe_changes,
    diff_rules,
    rule_error,
    summarize_rule,
)
from common.rule_model import Rule
from common.schemas import RuleSet
from gateway.admin_requests import (
    PREFIX,
    Unprocessable,
    convert,
    not_reserved,
    own_window,
    patched,
)

# (rule set in force, body, name in the path) → (new rules, what changed)
Mutation = Callable[[RuleSet | None, Any, str], tuple[list[Rule], str]]


def replace_all(current: RuleSet | None, document: Any, _: str) -> tuple[list[Rule], str]:
    try:
        rules = msgspec.convert(document, RulesDocument).rules
    except msgspec.ValidationError as exc:
        error = rule_error(exc)
        raise Unprocessable(("body", *error.loc), error.msg) from None
    old = current.rules if current else []
    for i, rule in enumerate(rules):
        if all(r.name != rule.name for r in old):
            not_reserved(rule.name, ("body", "rules", i, "name"))
    return rules, f"replace all rules: {describe_changes(old, rules)}"


def create(current: RuleSet | None, document: Any, _: str) -> tuple[list[Rule], str]:
    if not isinstance(document, dict) or "name" not in document:
        raise Unprocessable(("body", "name"), "a new rule needs a name")
    rule = convert(document)
    not_reserved(rule.name, ("body", "name"))
    if current is not None and current.rule(rule.name) is not None:
        raise HTTPException(409, f"a rule named {rule.name!r} exists: PUT or PATCH "
                            f"{PREFIX}/rules/{rule.name} to change it")
    own_window(current, rule)
    rules = [*(current.rules if current else []), rule]
    return rules, f"create {rule.name!r} ({summarize_rule(rule)})"


def replace_one(current: RuleSet | None, document: Any, name: str) -> tuple[list[Rule], str]:
    old = existing(current, name)
    if isinstance(document, dict):
        document = {"name": name, **document}
    rule = convert(document)
    if rule.name != name:
        raise Unprocessable(("body", "name"), f"must be {name!r}, the name in the path "
                            "(to rename, create the new rule and delete the old one)")
    own_window(current, rule)
    return swap(current, rule), f"update {name!r}: {diff_rules(old, rule) or 'no change'}"


def patch_one(current: RuleSet | None, document: Any, name: str) -> tuple[list[Rule], str]:
    old = existing(current, name)
    if not isinstance(document, dict):
        raise Unprocessable(("body",), "expected a JSON object of the fields to change")
    if document.get("name", name) != name:
        raise Unprocessable(("body", "name"), "a rule cannot be renamed")
    rule = convert(patched(old, document))
    own_window(current, rule)
    return swap(current, rule), f"update {name!r}: {diff_rules(old, rule) or 'no change'}"


def delete_one(current: RuleSet | None, _: Any, name: str) -> tuple[list[Rule], str]:
    existing(current, name)
    assert current is not None
    if len(current.rules) == 1:
        raise HTTPException(409, f"{name!r} is the last rule; a detector needs at least "
                            "one (change it instead)")
    return [r for r in current.rules if r.name != name], f"delete {name!r}"


def existing(current: RuleSet | None, name: str) -> Rule:
    rule = current.rule(name) if current else None
    if rule is None:
        raise HTTPException(404, f"no rule named {name!r} (POST {PREFIX}/rules creates one)")
    return rule


def swap(current: RuleSet | None, rule: Rule) -> list[Rule]:
    assert current is not None
    return [rule if r.name == rule.name else r for r in current.rules]
