"""Messages that cross service boundaries.

Ticks travel as compact msgpack arrays (``array_like``) because there are hundreds of
thousands of them per second; alerts are rare and travel as maps so that a field can be
added without breaking an older reader.

What each message means: docs/architecture.md#messages.
"""

from __future__ import annotations

import re
from typing import Final, Literal

import msgspec

from common.rule_model import Rule, RuleKind, check_rules

Direction = Literal["up", "down"]


# What a tick is an observation of (``Tick.kind``). Ints, not strings: a tick is the unit of
# the hot path and of the bus.
PRICE: Final = 0  # a trade or a ticker's last price: what price and volume rules read
LIQUIDATION: Final = 1  # a forced order (``forceOrder``): what liquidation rules read
FUNDING: Final = 2  # a mark price with its funding rate (``markPriceUpdate``): funding rules
TICK_KINDS: Final = (PRICE, LIQUIDATION, FUNDING)

Side = Literal["BUY", "SELL"]


class Tick(msgspec.Struct, array_like=True, frozen=True, gc=False, omit_defaults=True):
    """One observation of one symbol at the exchange's event time.

    Every field after ``source`` is trailing and defaulted, so ticks written before it
    existed still decode (as price ticks), and a reader older than a field ignores it.

    - ``kind`` PRICE: ``price`` is the last traded price; ``quote_volume`` the 24 h quote
      volume of a (mini) ticker; ``quantity`` the base quantity of a trade (so its quote
      volume is ``price * quantity``).
    - ``kind`` LIQUIDATION: ``price`` is the forced order's average fill price,
      ``quantity`` its filled quantity and ``side`` the order's side (SELL: a long was
      liquidated; BUY: a short). ``event_time_ms`` is the order's trade time ``T``.
    - ``kind`` FUNDING: ``price`` is the mark price, ``funding_rate`` the current funding
      rate as a fraction (``r``; 0.001 is 0.1 %) and ``next_funding_ms`` the next funding
      time (``T``).
    """

    symbol: str
    price: float
    event_time_ms: int
    source: str
    quote_volume: float | None = None
    kind: int = PRICE
    quantity: float | None = None
    side: Side | None = None
    funding_rate: float | None = None
    next_funding_ms: int | None = None


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """One alert; what its common fields mean depends on ``kind``:

    - ``price``: ``change_pct`` = (price − base_price) / base_price × 100 over ``window_s``.
    - ``liquidation``: ``direction`` "down" when longs were liquidated (SELL orders), "up"
      for shorts (BUY); ``price`` the last forced order's average price and ``base_price``
      the first one's within the window, ``change_pct`` between them; ``threshold_pct`` 0.
    - ``funding``: ``direction`` "up" for a positive rate (longs pay), "down" for a
      negative one; ``price`` = ``base_price`` = the mark price; ``change_pct`` = the rate in
      percent; ``window_s`` 0; ``threshold_pct`` the rule's ``min_funding_rate_pct``.
    - ``volume``: ``direction`` "up" when the price rose over the window (last trade at or
      above the window's first), else "down"; ``price``/``base_price`` those two prices and
      ``change_pct`` between them; ``threshold_pct`` 0.
    """

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
    # What fired, and its figures. An alert written before kinds existed is a price alert.
    kind: RuleKind = "price"
    # The kind's threshold in the kind's own unit: USDT for liquidation, the factor k for
    # volume, percent for funding (also in ``threshold_pct``); None for price alerts, whose
    # threshold is ``threshold_pct``.
    threshold: float | None = None
    # liquidation: the notional (price × quantity, USDT) liquidated on the alert's side
    # within the window, and how many forced orders made it. A lower bound: the exchange's
    # stream carries at most the latest liquidation per symbol per second.
    notional_usdt: float | None = None
    liquidations: int | None = None
    # funding: the rate in percent (0.1 for 0.1 %) and the next funding time.
    funding_rate_pct: float | None = None
    next_funding_ms: int | None = None
    # volume: the quote volume traded within the window, the mean quote volume per window
    # of that length over the baseline before it, and how long that baseline is.
    volume_usdt: float | None = None
    baseline_volume_usdt: float | None = None
    baseline_s: int | None = None


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
    """A price alert's id. Deterministic, so a redelivered tick reproduces the same id and
    is recognised."""
    return f"{symbol}:{window_s}:{event_time_ms}"


def kind_alert_id(symbol: str, kind: RuleKind, rule: str, time_ms: int) -> str:
    """The id of an alert of another kind: ``{symbol}:{kind}.{rule}:{time_ms}``.

    ``time_ms`` is the event time of the tick that fired, except for funding, where it is
    the next funding time: one id per symbol, rule and funding period, so that the period's
    "at most once" holds across restarts and failovers too (the id is recognised).
    """
    return f"{symbol}:{kind}.{rule}:{time_ms}"


# What a symbol may be made of: the exchange's names are uppercase letters, digits and "_"
# (dated contracts), and a few recent listings are named in other scripts (``\w`` is Unicode);
# never ":" (the alert id's separator), blanks or markup. The ingestor refuses any other
# symbol, so that every alert's id is one that ``is_alert_id`` takes back as a cursor.
SYMBOL_CHARS: Final = r"[\w.\-]{1,64}"
ALERT_ID_PATTERN: Final = re.compile(
    rf"{SYMBOL_CHARS}:(?:[0-9]{{1,9}}|(?:liquidation|funding|volume)\.[a-z0-9_-]{{1,40}})"
    r":[0-9]{1,16}")


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
