"""What the detectors of every rule kind share: a rule's settings resolved per symbol
(allow/deny lists, overrides), cooldowns with escalation, and the path of an alert.

One module so that "an exact symbol beats a glob, the first glob wins, deny wins over
allow" and "every alert restarts the cooldown" are written once for all kinds
(docs/architecture.md#rule-kinds).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from itertools import islice
from typing import Final, TypeVar

from common.rule_model import Rule, SymbolOverride

# A move of exactly the threshold must fire even when float division lands a hair below it
# (102.1 / 100.1 style inputs), so comparisons of percentages allow this much slack.
THRESHOLD_SLACK_PCT: Final = 1e-9
MAX_PATH_POINTS: Final = 60

T = TypeVar("T")
P = TypeVar("P")


def pick(value: T | None, default: T) -> T:
    return default if value is None else value


def setting(rule: Rule, override: SymbolOverride | None, field: str) -> float | None:
    """Numeric ``field`` of the override when it sets it, else the rule's; 0 and None
    both mean "not set" to the callers that treat it as optional."""
    value = None if override is None else getattr(override, field)
    value = getattr(rule, field) if value is None else value
    return None if value is None else float(value)


def required(rule: Rule, override: SymbolOverride | None, field: str) -> float:
    """A ``setting`` the rule's kind requires (``common.rule_model`` checked it is set)."""
    value = setting(rule, override, field)
    if value is None:
        raise ValueError(f"{field}: a rule of kind {rule.kind!r} needs it")
    return value


def cooldown_ms(rule: Rule, override: SymbolOverride | None) -> int:
    return int(required(rule, override, "cooldown_s")) * 1000


def is_plain(rules: Sequence[Rule]) -> bool:
    """Whether no rule differs per symbol (no allow/deny list, no override)."""
    return all(not (r.allow or r.deny or r.overrides) for r in rules)


def resolve(rules: Sequence[Rule], defaults: list[P | None], plain: bool, symbol: str,
            make: Callable[[Rule, SymbolOverride], P]) -> list[P | None]:
    """Each rule's settings for ``symbol`` (``None``: the rule does not watch it).
    ``defaults`` are the rules' own settings, shared when nothing differs per symbol."""
    if plain:
        return defaults  # shared: nothing differs per symbol
    resolved: list[P | None] = []
    for rule, default in zip(rules, defaults, strict=True):
        if not rule.watches(symbol):
            resolved.append(None)
            continue
        override = rule.override_for(symbol)
        resolved.append(default if override is None else make(rule, override))
    return resolved


class Cooldown:
    """After an alert of one rule for one symbol: quiet until ``until_ms``, except for an
    escalation. ``figure`` is signed by direction (positive: up), NaN when unknown."""

    __slots__ = ("figure", "level", "until_ms")

    def __init__(self, until_ms: int, figure: float, level: int) -> None:
        self.until_ms = until_ms
        self.figure = figure  # NaN when unknown: no escalation can follow
        self.level = level


def next_level(state: Cooldown | None, time_ms: int, figure: float, step: float | None,
               slack: float = 0.0) -> int:
    """The level an alert of ``figure`` at ``time_ms`` fires at, 0 when it stays quiet.

    Outside a cooldown: 1. Inside: only an escalation, in the direction (sign) of the last
    alert, with |figure| ≥ |last figure| + step; anything else, a reversal included, is
    quiet.
    """
    if state is None or time_ms >= state.until_ms:
        return 1
    last = state.figure
    # NaN (an unknown last figure) fails every comparison: no escalation.
    if (step is None or (figure > 0) != (last > 0)
            or abs(figure) < abs(last) + step - slack):
        return 0
    return state.level + 1


def note_cooldown(cooldowns: dict[str, Cooldown], symbol: str, until_ms: int,
                  figure: float | None, level: int) -> None:
    """Restore the cooldown of an alert of an earlier run; one running longer is kept."""
    state = cooldowns.get(symbol)
    if state is None or until_ms >= state.until_ms:
        cooldowns[symbol] = Cooldown(until_ms, math.nan if figure is None else figure, level)


def has_floor(rules: Sequence[Rule]) -> bool:
    """Whether a rule (or one of its overrides) sets a 24 h quote volume floor."""
    return any(r.min_quote_volume or any(o.min_quote_volume for o in r.overrides)
               for r in rules)


def forget_symbols(by_rule: dict[str, dict[str, T]], predicate: Callable[[str], bool]) -> None:
    """Drop the per-symbol state of every rule for the symbols ``predicate`` picks."""
    for states in by_rule.values():
        for symbol in [s for s in states if predicate(s)]:
            del states[symbol]


def sample_path(times: deque[int] | list[int], prices: deque[float] | list[float],
                start: int) -> list[tuple[int, float]]:
    """At most MAX_PATH_POINTS points from ``start`` on, always keeping the first and the
    last."""
    count = len(times) - start
    if count <= MAX_PATH_POINTS:
        return list(zip(islice(times, start, None), islice(prices, start, None), strict=True))
    step = (count - 1) / (MAX_PATH_POINTS - 1)
    picks = [start + round(i * step) for i in range(MAX_PATH_POINTS)]
    return [(times[i], prices[i]) for i in picks]
