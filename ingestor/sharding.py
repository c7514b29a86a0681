"""Which streams go on which exchange connection, and how fast a connection may be told:
pure, so that the planning and the pacing are tested without a socket.

``FEED=agg_trade`` watches every tradable perpetual: ``<symbol>@aggTrade`` for each, plus
``!forceOrder@arr`` and ``!markPrice@arr@1s`` for the whole board, at most
``STREAMS_PER_CONNECTION`` streams per connection (650 symbols and the 2 board streams at
200: 4 connections). ``Plan.update`` keeps the assignment stable across refreshes: a stream
stays on its connection for as long as it is wanted (moving it would cost an unsubscribe, a
subscribe and a gap), a delisted symbol's stream is dropped from its connection, and a new
listing goes to the first connection with room, else to a new one. A connection left with
no stream is closed.

The exchange takes at most 10 incoming messages per second on a connection and cuts it
beyond; pings and pongs count. The client's own ping every ``PING_INTERVAL_S`` and its
pongs to the exchange's pings (every 3 min) are at most 2 in any second, so ``Pacer`` lets
``SUBSCRIPTION_MESSAGES_PER_S`` = 3 (un)subscriptions through per rolling second: no second
ever carries more than 5 messages from us, half the limit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

BOARD_STREAMS: Final = ("!forceOrder@arr", "!markPrice@arr@1s")
SUBSCRIPTION_MESSAGES_PER_S: Final = 3
# Streams named in one SUBSCRIBE or UNSUBSCRIBE message.
MAX_PARAMS_PER_MESSAGE: Final = 200
# The streams a connection's URL names, at most; the rest are subscribed once it is open
# (a request line beyond 8 KiB is refused by common HTTP servers).
MAX_URL_CHARS: Final = 6000


def trade_stream(symbol: str) -> str:
    return f"{symbol.lower()}@aggTrade"


def tradable_perpetuals(info: Any) -> list[str]:
    """The symbols of an ``exchangeInfo`` document with ``contractType`` PERPETUAL and
    ``status`` TRADING, sorted; ``ValueError`` when it is no such document."""
    symbols = info.get("symbols") if isinstance(info, dict) else None
    if not isinstance(symbols, list):
        raise ValueError("no list of symbols in the exchangeInfo response")
    return sorted({entry["symbol"] for entry in symbols
                   if isinstance(entry, dict) and isinstance(entry.get("symbol"), str)
                   and entry["symbol"] and entry.get("contractType") == "PERPETUAL"
                   and entry.get("status") == "TRADING"})


@dataclass(frozen=True)
class Changes:
    """What one ``Plan.update`` changed, per connection id."""

    subscribe: dict[int, tuple[str, ...]] = field(default_factory=dict)
    unsubscribe: dict[int, tuple[str, ...]] = field(default_factory=dict)
    opened: dict[int, tuple[str, ...]] = field(default_factory=dict)  # new connections
    closed: tuple[int, ...] = ()  # connections left with no stream
    listed: tuple[str, ...] = ()  # symbols new to the board
    delisted: tuple[str, ...] = ()


class Plan:
    """The board's streams by connection id, kept stable across updates."""

    def __init__(self, capacity: int) -> None:
        if capacity < len(BOARD_STREAMS):
            raise ValueError(f"a connection must take the {len(BOARD_STREAMS)} board streams")
        self.capacity = capacity
        self.connections: dict[int, set[str]] = {}
        self.symbols: frozenset[str] = frozenset()
        self._next_id = 0

    def streams(self, connection: int) -> frozenset[str]:
        return frozenset(self.connections.get(connection, ()))

    def update(self, symbols: Iterable[str]) -> Changes:
        listed = frozenset(symbols)
        wanted = set(BOARD_STREAMS) | {trade_stream(s) for s in listed}
        unsubscribe: dict[int, tuple[str, ...]] = {}
        placed: set[str] = set()
        for connection, streams in self.connections.items():
            gone = streams - wanted
            if gone:
                streams -= gone
                unsubscribe[connection] = tuple(sorted(gone))
            placed |= streams
        closed = tuple(c for c, streams in self.connections.items() if not streams)
        for connection in closed:
            del self.connections[connection]
            unsubscribe.pop(connection, None)
        subscribe: dict[int, list[str]] = {}
        opened: dict[int, list[str]] = {}
        # The board streams sort first ("!"), so a fresh plan puts them on connection 0.
        pending = deque(sorted(wanted - placed))
        for connection in sorted(self.connections):
            streams = self.connections[connection]
            while pending and len(streams) < self.capacity:
                stream = pending.popleft()
                streams.add(stream)
                subscribe.setdefault(connection, []).append(stream)
        while pending:
            connection, self._next_id = self._next_id, self._next_id + 1
            batch = [pending.popleft() for _ in range(min(self.capacity, len(pending)))]
            self.connections[connection] = set(batch)
            opened[connection] = batch
        changes = Changes(
            subscribe={c: tuple(s) for c, s in subscribe.items()}, unsubscribe=unsubscribe,
            opened={c: tuple(s) for c, s in opened.items()}, closed=closed,
            listed=tuple(sorted(listed - self.symbols)),
            delisted=tuple(sorted(self.symbols - listed)))
        self.symbols = listed
        return changes


def stream_url(base_url: str, streams: Iterable[str]) -> tuple[str, list[str]]:
    """``<base>/stream?streams=a/b/…`` naming as many of ``streams`` (sorted) as fit in
    ``MAX_URL_CHARS``, and the ones left to subscribe once the connection is open."""
    ordered = sorted(streams)
    url = f"{base_url}/stream?streams="
    named: list[str] = []
    for stream in ordered:
        part = quote(stream, safe="@!._-~")
        if named and len(url) + len(part) + 1 > MAX_URL_CHARS:
            break
        url += f"/{part}" if named else part
        named.append(stream)
    return url, ordered[len(named):]


def subscription_messages(method: str, streams: Iterable[str], first_id: int
                          ) -> list[dict[str, Any]]:
    """``{"method": "SUBSCRIBE", "params": […], "id": n}`` messages for ``streams``, at most
    ``MAX_PARAMS_PER_MESSAGE`` each, ids counting from ``first_id``."""
    ordered = sorted(streams)
    return [{"method": method, "params": ordered[at:at + MAX_PARAMS_PER_MESSAGE],
             "id": first_id + n}
            for n, at in enumerate(range(0, len(ordered), MAX_PARAMS_PER_MESSAGE))]


class Pacer:
    """At most ``limit`` sends in any ``window_s`` (a rolling window, not a bucket reset
    each second, so that no two adjacent half-seconds can add up past the limit)."""

    def __init__(self, limit: int = SUBSCRIPTION_MESSAGES_PER_S, window_s: float = 1.0
                 ) -> None:
        self.window_s = window_s
        self._sent: deque[float] = deque(maxlen=limit)

    def delay(self, now: float) -> float:
        """Seconds to wait, from ``now``, before the next send is allowed."""
        sent = self._sent
        if len(sent) < (sent.maxlen or 0):
            return 0.0
        return max(0.0, sent[0] + self.window_s - now)

    def sent(self, now: float) -> None:
        self._sent.append(now)


def describe(changes: Changes, plan: Plan) -> str:
    """One line for the log: the board's size and what a refresh changed."""
    def names(symbols: tuple[str, ...]) -> str:
        return ", ".join(symbols[:10]) + (f" and {len(symbols) - 10} more"
                                          if len(symbols) > 10 else "")
    parts = [f"{len(plan.symbols)} symbols on {len(plan.connections)} connections"]
    if changes.listed:
        parts.append(f"{len(changes.listed)} listed ({names(changes.listed)})")
    if changes.delisted:
        parts.append(f"{len(changes.delisted)} delisted ({names(changes.delisted)})")
    return "; ".join(parts)

