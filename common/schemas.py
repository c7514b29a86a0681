"""Messages that cross service boundaries.

Ticks travel as compact msgpack arrays (``array_like``) because there are hundreds of
thousands of them per second; alerts are rare and travel as maps so that a field can be
added without breaking an older reader.
"""

from __future__ import annotations

import re
from typing import Final, Literal

import msgspec

Direction = Literal["up", "down"]


class Tick(msgspec.Struct, array_like=True, frozen=True, gc=False):
    symbol: str
    price: float
    event_time_ms: int
    source: str


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


class Rule(msgspec.Struct, frozen=True, kw_only=True):
    """One detection rule; several may run at once, each with its own windows and cooldowns."""

    window_s: int = 60
    threshold_up_pct: float = 2.0
    threshold_down_pct: float = 2.0
    cooldown_s: int = 60

    def __post_init__(self) -> None:
        if self.window_s <= 0:
            raise ValueError("window_s must be positive")
        if self.threshold_up_pct <= 0 or self.threshold_down_pct <= 0:
            raise ValueError("thresholds must be positive")
        if self.cooldown_s < 0:
            raise ValueError("cooldown_s must not be negative")


class RuleSet(msgspec.Struct, frozen=True, kw_only=True):
    """The rules in force, as announced on the ``rules`` stream (newest entry wins)."""

    rules: list[Rule]
    updated_at_ms: int
    updated_by: str


def alert_id(symbol: str, window_s: int, event_time_ms: int) -> str:
    """Deterministic, so a redelivered tick reproduces the same id and is recognised."""
    return f"{symbol}:{window_s}:{event_time_ms}"


ALERT_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}:[0-9]{1,9}:[0-9]{1,16}")


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
