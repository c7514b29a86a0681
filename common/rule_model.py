"""The rule model: what a detection rule is, of each kind, and what makes a set of them valid.

Validation lives in ``__post_init__`` so that it runs both when a rule is built in code and
when one is decoded (msgspec wraps the ValueError and appends ``- at `$.path```). Every
message starts with ``<field>: `` so that an API can point at the offending field
(``common.rule_documents``). What each kind detects: docs/architecture.md#rule-kinds.
"""

from __future__ import annotations

import math
import re
from fnmatch import fnmatchcase
from typing import Final, Literal

import msgspec

RuleKind = Literal["price", "liquidation", "funding", "volume"]
RULE_KINDS: Final[tuple[RuleKind, ...]] = ("price", "liquidation", "funding", "volume")

RULE_NAME_PATTERN: Final = re.compile(r"[a-z0-9_-]{1,40}")
# Symbols are the exchange's uppercase names; patterns are fnmatch globs over them
# (``*``, ``?``, ``[...]``), matched case-sensitively.
SYMBOL_PATTERN: Final = re.compile(r"[A-Z0-9_.*?!\[\]-]{1,40}")
MAX_WINDOW_S: Final = 86_400
MAX_COOLDOWN_S: Final = 7 * 86_400
MAX_PCT: Final = 1_000.0
MAX_PATTERNS: Final = 500
MAX_OVERRIDES: Final = 200
MAX_RULES: Final = 20


def _fail(field: str, reason: str) -> ValueError:
    return ValueError(f"{field}: {reason}")


def _check_pct(field: str, value: float | None, *, zero_ok: bool = False) -> None:
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok) or value > MAX_PCT:
        low = "0" if zero_ok else "above 0"
        raise _fail(field, f"must be {low} and at most {MAX_PCT:g} (percent), got {value!r}")


def _check_cooldown(field: str, value: int | None) -> None:
    if value is not None and not 0 <= value <= MAX_COOLDOWN_S:
        raise _fail(field, f"must be between 0 and {MAX_COOLDOWN_S} seconds, got {value!r}")


def _check_volume(field: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise _fail(field, f"must be a number >= 0 (quote asset, e.g. USDT), got {value!r}")


def _check_patterns(field: str, patterns: list[str]) -> None:
    if len(patterns) > MAX_PATTERNS:
        raise _fail(field, f"at most {MAX_PATTERNS} patterns")
    for i, pattern in enumerate(patterns):
        if SYMBOL_PATTERN.fullmatch(pattern) is None:
            raise _fail(f"{field}[{i}]", f"{pattern!r} is not an uppercase symbol or glob "
                        "(letters A-Z, digits, _ . - and the wildcards * ? [ ] !)")


class SymbolOverride(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Settings of one rule for the symbols matching ``pattern`` (an exact symbol or a glob).

    A field left ``None`` keeps the rule's value. ``escalation_step_pct: 0`` turns
    escalation off and ``min_quote_volume: 0`` drops the volume floor for these symbols.
    The window cannot be overridden: it is part of the alert id, and a different window is
    a different rule (give it an ``allow`` list).
    """

    pattern: str
    threshold_up_pct: float | None = None
    threshold_down_pct: float | None = None
    cooldown_s: int | None = None
    escalation_step_pct: float | None = None
    min_quote_volume: float | None = None
    # The thresholds of the other kinds (each only in a rule of its kind).
    min_notional_usdt: float | None = None
    escalation_step_usdt: float | None = None
    min_funding_rate_pct: float | None = None
    volume_factor: float | None = None
    min_window_volume_usdt: float | None = None

    def __post_init__(self) -> None:
        if SYMBOL_PATTERN.fullmatch(self.pattern) is None:
            raise _fail("pattern", f"{self.pattern!r} is not an uppercase symbol or glob "
                        "(letters A-Z, digits, _ . - and the wildcards * ? [ ] !)")
        _check_pct("threshold_up_pct", self.threshold_up_pct)
        _check_pct("threshold_down_pct", self.threshold_down_pct)
        _check_cooldown("cooldown_s", self.cooldown_s)
        _check_pct("escalation_step_pct", self.escalation_step_pct, zero_ok=True)
        _check_volume("min_quote_volume", self.min_quote_volume)
        _check_kind_figures(self)

    @property
    def is_exact(self) -> bool:
        return not any(c in self.pattern for c in "*?[")


# Fields that only a rule (or override) of one kind may set; every one defaults to None.
KIND_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "price": ("escalation_step_pct",),
    "liquidation": ("min_notional_usdt", "escalation_step_usdt"),
    "funding": ("min_funding_rate_pct",),
    "volume": ("volume_factor", "baseline_s", "min_window_volume_usdt"),
}
# Of those, the ones a rule of the kind must set.
REQUIRED_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "price": (),
    "liquidation": ("min_notional_usdt",),
    "funding": ("min_funding_rate_pct",),
    "volume": ("volume_factor", "baseline_s", "min_window_volume_usdt"),
}
# Override fields that only price rules read (the others read their own thresholds).
_PRICE_OVERRIDES: Final = ("threshold_up_pct", "threshold_down_pct")
MAX_USDT: Final = 1e15
MAX_VOLUME_FACTOR: Final = 1_000.0


def _check_usdt(field: str, value: float | None, *, zero_ok: bool = False) -> None:
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok) or value > MAX_USDT:
        low = "0" if zero_ok else "above 0"
        raise _fail(field, f"must be {low} and at most {MAX_USDT:g} (USDT), got {value!r}")


def _check_kind_figures(item: SymbolOverride | Rule) -> None:
    """Bounds of the other kinds' thresholds, shared by rules and overrides."""
    _check_usdt("min_notional_usdt", item.min_notional_usdt)
    _check_usdt("escalation_step_usdt", item.escalation_step_usdt, zero_ok=True)
    _check_pct("min_funding_rate_pct", item.min_funding_rate_pct)
    _check_usdt("min_window_volume_usdt", item.min_window_volume_usdt)
    factor = item.volume_factor
    if factor is not None and not (math.isfinite(factor) and 1 <= factor <= MAX_VOLUME_FACTOR):
        raise _fail("volume_factor", f"must be between 1 and {MAX_VOLUME_FACTOR:g} (times the "
                    f"baseline), got {factor!r}")


def _kind_of_field(field: str) -> str:
    return next(kind for kind, fields in KIND_FIELDS.items() if field in fields)


class Rule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One detection rule; several run at once, each with its own window and cooldowns.

    ``kind`` says what it watches (docs/architecture.md#rule-kinds); a document without
    one is a price rule, as every rule was before kinds:

    - ``price``: the price moves by ``threshold_up_pct``/``threshold_down_pct`` within
      ``window_s``.
    - ``liquidation``: the notional liquidated on one side of a symbol within ``window_s``
      reaches ``min_notional_usdt`` (a lower bound: the exchange sends at most one forced
      order per symbol per second); escalation by ``escalation_step_usdt``.
    - ``funding``: |funding rate| reaches ``min_funding_rate_pct``, at most once per symbol
      per funding period (``window_s`` and ``cooldown_s`` are not used).
    - ``volume``: the quote volume within ``window_s`` reaches ``volume_factor`` × its mean
      per window of that length over the ``baseline_s`` before it, and at least
      ``min_window_volume_usdt``.

    Fields of another kind are refused (``KIND_FIELDS``); the price thresholds, which have
    defaults, are ignored by the other kinds.

    - ``escalation_step_pct``: inside a cooldown the rule fires again, one level up and in
      the same direction, when |change| reaches |last alerted change| + step; each
      escalation restarts the cooldown. ``None`` (or 0): no escalation, as before.
    - ``min_quote_volume``: the symbol's last known 24 h quote volume must be at least this
      for the rule to fire; a symbol whose volume is not known yet does not fire it.
    - ``allow``/``deny``: fnmatch globs over symbols; empty ``allow`` watches every symbol,
      ``deny`` wins over ``allow``.
    - ``overrides``: per-symbol settings; an exact symbol beats a glob, and among globs the
      first listed wins.

    Unknown fields are refused (a typo must not be silently ignored), on the bus too: a
    detector that cannot read a newer rule set keeps the rules it has.
    """

    name: str = "default"
    kind: RuleKind = "price"
    window_s: int = 60
    threshold_up_pct: float = 2.0
    threshold_down_pct: float = 2.0
    cooldown_s: int = 60
    escalation_step_pct: float | None = None
    min_quote_volume: float | None = None
    allow: list[str] = []
    deny: list[str] = []
    overrides: list[SymbolOverride] = []
    min_notional_usdt: float | None = None
    escalation_step_usdt: float | None = None
    min_funding_rate_pct: float | None = None
    volume_factor: float | None = None
    baseline_s: int | None = None
    min_window_volume_usdt: float | None = None

    def __post_init__(self) -> None:
        if RULE_NAME_PATTERN.fullmatch(self.name) is None:
            raise _fail("name", f"{self.name!r} must be 1-40 characters of a-z, 0-9, _ and -")
        if not 1 <= self.window_s <= MAX_WINDOW_S:
            raise _fail("window_s", f"must be between 1 and {MAX_WINDOW_S} seconds, "
                        f"got {self.window_s!r}")
        _check_pct("threshold_up_pct", self.threshold_up_pct)
        _check_pct("threshold_down_pct", self.threshold_down_pct)
        _check_cooldown("cooldown_s", self.cooldown_s)
        _check_pct("escalation_step_pct", self.escalation_step_pct, zero_ok=True)
        _check_volume("min_quote_volume", self.min_quote_volume)
        _check_patterns("allow", self.allow)
        _check_patterns("deny", self.deny)
        if len(self.overrides) > MAX_OVERRIDES:
            raise _fail("overrides", f"at most {MAX_OVERRIDES} overrides")
        seen: dict[str, int] = {}
        for i, override in enumerate(self.overrides):
            if override.pattern in seen:
                raise _fail(f"overrides[{i}].pattern", f"{override.pattern!r} already "
                            f"appears in overrides[{seen[override.pattern]}]")
            seen[override.pattern] = i
        _check_kind_figures(self)
        self._check_kind()

    def _check_kind(self) -> None:
        kind = self.kind
        for field in REQUIRED_FIELDS[kind]:
            if getattr(self, field) is None:
                raise _fail(field, f"a rule of kind {kind!r} needs it")
        for other, fields in KIND_FIELDS.items():
            for field in fields:
                if other != kind and getattr(self, field) is not None:
                    raise _fail(field, f"only for rules of kind {other!r}, this one is "
                                f"{kind!r}")
        if self.baseline_s is not None and not self.window_s < self.baseline_s <= MAX_WINDOW_S:
            raise _fail("baseline_s", f"must be longer than window_s ({self.window_s}) and at "
                        f"most {MAX_WINDOW_S} seconds, got {self.baseline_s!r}")
        for i, override in enumerate(self.overrides):
            for field in (*_PRICE_OVERRIDES, *(f for fs in KIND_FIELDS.values() for f in fs)):
                if field == "baseline_s" or getattr(override, field) is None:
                    continue
                owner = "price" if field in _PRICE_OVERRIDES else _kind_of_field(field)
                if owner != kind:
                    raise _fail(f"overrides[{i}].{field}", f"only for rules of kind "
                                f"{owner!r}, this one is {kind!r}")

    def watches(self, symbol: str) -> bool:
        """Whether the allow/deny lists let this rule fire for ``symbol``."""
        if any(fnmatchcase(symbol, p) for p in self.deny):
            return False
        return not self.allow or any(fnmatchcase(symbol, p) for p in self.allow)

    def override_for(self, symbol: str) -> SymbolOverride | None:
        """The override that applies to ``symbol``: an exact match first, else the first
        glob that matches, else none."""
        for override in self.overrides:
            if override.pattern == symbol:
                return override
        for override in self.overrides:
            if not override.is_exact and fnmatchcase(symbol, override.pattern):
                return override
        return None


def check_rules(rules: list[Rule], field: str = "rules") -> None:
    """What makes a list of rules a valid set: 1 to MAX_RULES rules, unique names, and
    distinct windows among price rules (a price alert's id is
    ``{symbol}:{window_s}:{event_time_ms}``, so two price rules sharing a window could both
    fire on one tick under the same id; the other kinds' ids name the rule)."""
    if not rules:
        raise _fail(field, "at least one rule is needed")
    if len(rules) > MAX_RULES:
        raise _fail(field, f"at most {MAX_RULES} rules")
    names: dict[str, int] = {}
    windows: dict[int, int] = {}
    for i, rule in enumerate(rules):
        if rule.name in names:
            raise _fail(f"{field}[{i}].name", f"{rule.name!r} is already the name of "
                        f"{field}[{names[rule.name]}]")
        if rule.kind != "price":
            names[rule.name] = i
            continue
        if rule.window_s in windows:
            raise _fail(f"{field}[{i}].window_s", f"{rule.window_s} is already the window of "
                        f"{field}[{windows[rule.window_s]}]; each rule needs its own window "
                        "(it is part of the alert id)")
        names[rule.name] = i
        windows[rule.window_s] = i
