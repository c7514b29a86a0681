"""The live-subscription protocol of a market connection and the exchange's limits on it.

SUBSCRIBE, UNSUBSCRIBE and LIST_SUBSCRIPTIONS are answered as the exchange answers them,
errors included (`{"error":{"code":2,"msg":"Invalid request: …"},"id":…}`). A connection
may send at most 10 messages in any one second and listen to at most 1024 streams: the
11th message within a second closes it, as the exchange does, and is recorded, so a test
can assert that a client never came near the limit.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import msgspec

from fake_exchange.frames import parse_stream

if TYPE_CHECKING:
    from collections.abc import Iterable

    from fake_exchange.frames import StreamSpec

logger = logging.getLogger(__name__)

MAX_MESSAGES_PER_S: Final = 10
MAX_STREAMS: Final = 1024
METHODS: Final = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY",
                  "GET_PROPERTY")
_EVENTS: Final = {"aggtrade": "aggTrade", "trade": "trade", "forceorder": "forceOrder",
                  "markprice": "markPrice", "miniticker": "miniTicker", "ticker": "ticker"}


def canonical(stream: str) -> str:
    """The exchange's spelling of a stream name: the event part is case-insensitive
    (`btcusdt@aggtrade` is `btcusdt@aggTrade`, `!forceorder@arr` is `!forceOrder@arr`); the
    symbol stays as given (the exchange wants it lower-case, and an upper-case one simply
    never carries data)."""
    parts = stream.split("@")
    if parts[0].startswith("!"):
        parts[0] = "!" + _EVENTS.get(parts[0][1:].lower(), parts[0][1:])
    elif len(parts) > 1:
        parts[1] = _EVENTS.get(parts[1].lower(), parts[1])
    return "@".join(parts)


@dataclass(slots=True)
class ConnectionStats:
    """What one connection did, kept after it closes (`stats` of the control API, which
    tests decode back into this type: the fields are the answer's names)."""

    id: int
    path: str
    streams: int = 0
    messages_in: int = 0
    messages_out: int = 0
    max_messages_per_s: int = 0
    violations: int = 0
    subscribe_messages: int = 0
    unsubscribe_messages: int = 0
    errors: int = 0
    open: bool = True
    closed_for: str | None = None
    _times: deque[float] = field(default_factory=deque, repr=False)

    def hit(self, now_s: float) -> bool:
        """Count one incoming message at `now_s`; True when it is one too many."""
        times = self._times
        while times and now_s - times[0] >= 1.0:
            times.popleft()
        times.append(now_s)
        self.messages_in += 1
        self.max_messages_per_s = max(self.max_messages_per_s, len(times))
        if len(times) > MAX_MESSAGES_PER_S:
            self.violations += 1
            return True
        return False

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "streams": self.streams,
                "messages_in": self.messages_in, "messages_out": self.messages_out,
                "max_messages_per_s": self.max_messages_per_s,
                "violations": self.violations, "subscribe_messages": self.subscribe_messages,
                "unsubscribe_messages": self.unsubscribe_messages, "errors": self.errors,
                "open": self.open, "closed_for": self.closed_for}


def connections_summary(stats: Iterable[ConnectionStats]) -> dict[str, Any]:
    """The limits as a test asserts them: the most messages any connection sent in a
    second, the violations, and every connection's own figures."""
    conns = list(stats)
    return {
        "max_messages_per_s": max((c.max_messages_per_s for c in conns), default=0),
        "rate_violations": sum(c.violations for c in conns),
        "subscribe_messages": sum(c.subscribe_messages for c in conns),
        "connections": [c.as_dict() for c in conns],
    }


def _error(code: int, msg: str, rid: object) -> dict[str, Any]:
    return {"error": {"code": code, "msg": msg}, "id": rid}


def subscription_reply(subs: dict[str, StreamSpec | None], stats: ConnectionStats,
                       message: str | bytes, *, combined: bool) -> bytes:
    """Apply one client request to `subs` (stream name → spec) and return the answer."""
    try:
        req = msgspec.json.decode(message)
    except msgspec.DecodeError:
        stats.errors += 1
        return msgspec.json.encode(_error(3, "Invalid JSON: expected value at line 1 column 1",
                                          None))
    reply = _reply(subs, stats, req, combined=combined)
    if "error" in reply:
        stats.errors += 1
    stats.streams = len(subs)
    return msgspec.json.encode(reply)


def _reply(subs: dict[str, StreamSpec | None], stats: ConnectionStats, req: Any, *,
           combined: bool) -> dict[str, Any]:
    if not isinstance(req, dict):
        return _error(2, "Invalid request: expected an object", None)
    rid = req.get("id")
    if "method" not in req:
        return _error(2, "Invalid request: missing field `method`", rid)
    if not (isinstance(rid, int) and not isinstance(rid, bool) and rid >= 0):
        return _error(2, "Invalid request: request ID must be an unsigned integer", rid)
    method, params = req["method"], req.get("params")
    if method not in METHODS:
        return _error(2, f"Invalid request: unknown variant `{method}`, expected one of "
                         "`SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, "
                         "`GET_PROPERTY`", rid)
    if method == "LIST_SUBSCRIPTIONS":
        return {"result": list(subs), "id": rid}
    if method == "GET_PROPERTY":
        if params != ["combined"]:
            return _error(0, "Unknown property", rid)
        return {"result": combined, "id": rid}
    if method == "SET_PROPERTY":
        return _error(2, "Invalid request: SET_PROPERTY is not supported here", rid)
    if not isinstance(params, list) or not all(isinstance(s, str) for s in params):
        return _error(2, "Invalid request: params must be a list of stream names", rid)
    names = [canonical(s) for s in params]
    if method == "SUBSCRIBE":
        stats.subscribe_messages += 1
        if len(set(subs) | set(names)) > MAX_STREAMS:
            return _error(2, f"Invalid request: a connection listens to at most "
                             f"{MAX_STREAMS} streams", rid)
        subs.update({s: parse_stream(s) for s in names})
    else:
        stats.unsubscribe_messages += 1
        for s in names:
            subs.pop(s, None)
    return {"result": None, "id": rid}
