"""Messages that cross service boundaries.

Ticks travel as compact msgpack arrays (``array_like``) because there are hundreds of
thousands of them per second; alerts are rare and travel as maps so that a field can be
added without breaking an older reader.

What each message means: docs/architecture.md#messages.
"""

from __future__ import annotations

import math
import re
from fnmatch import fnmatchcase
from typing import Final, Literal

import msgspec

Direction = Literal["up", "down"]


class Tick(msgspec.Struct, array_like=True, frozen=True, gc=False):
    symbol: str
    price: float
    event_time_ms: int
    source: str
    # The 24 h quote volume (``q`` of the mini ticker / ticker), when the source carries it.
    # Trailing and defaulted, so four-element ticks written before it existed still decode.
    quote_volume: float | None = None


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    symbol: str
    direction: Direction
    change_pct: float
    price: float
    base_price: float
    window_s: int
    threshold_pct: float
    event_time_ms: int
    detected_at_ms: int
    source: str
    path: list[tuple[int, float]] | None = None
    rule: str | None = None  # name of the rule that fired (None: written before rules had names)
    level: int = 1  # 1 for the first alert of a move, 2, 3… for each escalation in its cooldown


# --- rules ---------------------------------------------------------------------------------
#
# Validation lives in ``__post_init__`` so that it runs both when a rule is built in code and
# when one is decoded (msgspec wraps the ValueError and appends ``- at `$.path```). Every
# message starts with ``<field>: `` so that an API can point at the offending field.

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

    def __post_init__(self) -> None:
        if SYMBOL_PATTERN.fullmatch(self.pattern) is None:
            raise _fail("pattern", f"{self.pattern!r} is not an uppercase symbol or glob "
                        "(letters A-Z, digits, _ . - and the wildcards * ? [ ] !)")
        _check_pct("threshold_up_pct", self.threshold_up_pct)
        _check_pct("threshold_down_pct", self.threshold_down_pct)
        _check_cooldown("cooldown_s", self.cooldown_s)
        _check_pct("escalation_step_pct", self.escalation_step_pct, zero_ok=True)
        _check_volume("min_quote_volume", self.min_quote_volume)

    @property
    def is_exact(self) -> bool:
        return not any(c in self.pattern for c in "*?[")


class Rule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One detection rule; several run at once, each with its own window and cooldowns.

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
    window_s: int = 60
    threshold_up_pct: float = 2.0
    threshold_down_pct: float = 2.0
    cooldown_s: int = 60
    escalation_step_pct: float | None = None
    min_quote_volume: float | None = None
    allow: list[str] = []
    deny: list[str] = []
    overrides: list[SymbolOverride] = []

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
    distinct windows (the alert id is ``{symbol}:{window_s}:{event_time_ms}``, so two rules
    sharing a window could both fire on one tick under the same id)."""
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
        if rule.window_s in windows:
            raise _fail(f"{field}[{i}].window_s", f"{rule.window_s} is already the window of "
                        f"{field}[{windows[rule.window_s]}]; each rule needs its own window "
                        "(it is part of the alert id)")
        names[rule.name] = i
        windows[rule.window_s] = i


class RuleSet(msgspec.Struct, frozen=True, kw_only=True):
    """The rules in force: one entry of the ``rules`` stream.

    ``version`` grows by one with each change, from 1. The stream is the arbiter of which
    entry is in force (the first entry of a version wins; version 0 is refused): every
    reader decides it in ``common.rules_stream``. ``change`` says what changed, for the
    audit trail (the stream keeps the last entries; every change is logged too).
    """

    rules: list[Rule]
    updated_at_ms: int
    updated_by: str
    version: int = 0
    change: str = ""
    change_id: str = ""  # unique per write, so a writer can recognise its own entry

    def __post_init__(self) -> None:
        check_rules(self.rules)

    def rule(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)


class DetectorHeartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """What one detector says about itself on ``detector.heartbeat`` every
    ``DETECTOR_HEARTBEAT_S``: who it is, what it reads, how far it got.

    ``newest_event_ms`` is the newest exchange event time among the live (not replayed)
    ticks it processed, ``None`` before the first; ``behind`` the entries of its streams not
    yet delivered to the group, ``None`` when unknown; ``rebuilding`` while it replays history.
    """

    consumer: str
    partitions: list[int]
    sent_at_ms: int
    newest_event_ms: int | None = None
    behind: int | None = None
    rebuilding: bool = False


def alert_id(symbol: str, window_s: int, event_time_ms: int) -> str:
    """Deterministic, so a redelivered tick reproduces the same id and is recognised."""
    return f"{symbol}:{window_s}:{event_time_ms}"


# What a symbol may be made of: the exchange's names are uppercase letters, digits and "_"
# (dated contracts), and a few recent listings are named in other scripts (``\w`` is Unicode);
# never ":" (the alert id's separator), blanks or markup. The ingestor refuses any other
# symbol, so that every alert's id is one that ``is_alert_id`` takes back as a cursor.
SYMBOL_CHARS: Final = r"[\w.\-]{1,64}"
ALERT_ID_PATTERN: Final = re.compile(rf"{SYMBOL_CHARS}:[0-9]{{1,9}}:[0-9]{{1,16}}")


def is_alert_id(text: str) -> bool:
    """Whether ``text`` has the shape of an id (a cursor from a client is checked first)."""
    return ALERT_ID_PATTERN.fullmatch(text) is not None


# Encoders and decoders are built once: building them per message costs more than the encoding.
tick_batch_encoder: Final = msgspec.msgpack.Encoder()
tick_batch_decoder: Final = msgspec.msgpack.Decoder(list[Tick])
alert_encoder: Final = msgspec.msgpack.Encoder()
alert_decoder: Final = msgspec.msgpack.Decoder(Alert)
alert_json_encoder: Final = msgspec.json.Encoder()
rule_set_encoder: Final = msgspec.msgpack.Encoder()
rule_set_decoder: Final = msgspec.msgpack.Decoder(RuleSet)
heartbeat_encoder: Final = msgspec.msgpack.Encoder()
heartbeat_decoder: Final = msgspec.msgpack.Decoder(DetectorHeartbeat)


def encode_ticks(ticks: list[Tick]) -> bytes:
    return tick_batch_encoder.encode(ticks)


def decode_ticks(payload: bytes) -> list[Tick]:
    return tick_batch_decoder.decode(payload)


def encode_alert(alert: Alert) -> bytes:
    return alert_encoder.encode(alert)


def decode_alert(payload: bytes) -> Alert:
    return alert_decoder.decode(payload)


def encode_rule_set(rule_set: RuleSet) -> bytes:
    return rule_set_encoder.encode(rule_set)


def decode_rule_set(payload: bytes) -> RuleSet:
    return rule_set_decoder.decode(payload)


def encode_heartbeat(heartbeat: DetectorHeartbeat) -> bytes:
    return heartbeat_encoder.encode(heartbeat)


def decode_heartbeat(payload: bytes) -> DetectorHeartbeat:
    return heartbeat_decoder.decode(payload)
