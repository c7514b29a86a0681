"""Where a detector's rules come from: a rules file (backtests), the environment (the
default rule that seeds an empty ``rules`` stream), or the stream itself (live changes).

A rules file is the JSON document of the admin API (``{"rules": [...]}``; see
``common.rule_documents``), so ``curl -H 'Authorization: Bearer …' …/api/admin/rules >
rules.json`` saves the rules in force for a backtest.
"""

from __future__ import annotations

import os

from common.rule_documents import RuleError, decode_rules_document
from common.rule_model import Rule
from common.settings import DetectorSettings


class RulesFileError(ValueError):
    """The rules file cannot be used; the message names the file and the field."""


def load_rules_file(path: str | os.PathLike[str]) -> list[Rule]:
    """The validated rules of a JSON rules file (unique names, distinct windows, at least
    one rule). Raises ``RulesFileError`` naming the file and the offending field."""
    name = os.fspath(path)
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise RulesFileError(f"{name}: cannot read: {exc.strerror or exc}") from None
    try:
        return decode_rules_document(data)
    except RuleError as exc:
        raise RulesFileError(f"{name}: {exc}") from None


def rule_from_settings(settings: DetectorSettings) -> Rule:
    """The one rule of ``WINDOW_S``, ``THRESHOLD_UP_PCT``, ``THRESHOLD_DOWN_PCT`` and
    ``COOLDOWN_S``, named ``default``."""
    return Rule(
        window_s=settings.window_s,
        threshold_up_pct=settings.threshold_up_pct,
        threshold_down_pct=settings.threshold_down_pct,
        cooldown_s=settings.effective_cooldown_s,
    )


def describe_rule(rule: Rule) -> str:
    """One line for a log: the settings that decide what fires."""
    if rule.kind == "liquidation":
        parts = [f"{rule.name}: liquidation {rule.window_s}s >= {rule.min_notional_usdt:,.0f} USDT "
                 f"cooldown {rule.cooldown_s}s"]
        if rule.escalation_step_usdt:
            parts.append(f"escalation +{rule.escalation_step_usdt:,.0f} USDT")
    elif rule.kind == "funding":
        parts = [f"{rule.name}: funding |rate| >= {rule.min_funding_rate_pct:g}%"]
    elif rule.kind == "volume":
        parts = [f"{rule.name}: volume {rule.window_s}s >= {rule.volume_factor:g}x the mean "
                 f"over {rule.baseline_s}s and {rule.min_window_volume_usdt:,.0f} USDT "
                 f"cooldown {rule.cooldown_s}s"]
    else:
        parts = [f"{rule.name}: {rule.window_s}s +{rule.threshold_up_pct:g}%/-"
                 f"{rule.threshold_down_pct:g}% cooldown {rule.cooldown_s}s"]
    if rule.escalation_step_pct:
        parts.append(f"escalation +{rule.escalation_step_pct:g}%")
    if rule.min_quote_volume:
        parts.append(f"min volume {rule.min_quote_volume:g}")
    if rule.allow:
        parts.append(f"allow {','.join(rule.allow)}")
    if rule.deny:
        parts.append(f"deny {','.join(rule.deny)}")
    if rule.overrides:
        parts.append(f"{len(rule.overrides)} overrides")
    return " ".join(parts)
