"""The request paths the exchange serves, shared by the fake exchange and ``replay``.

`/market/ws/<stream>` (raw frames) and `/market/stream?streams=…` (combined) carry data; the
retired `/ws` and `/stream` still connect but stay silent, as on the exchange; any other
path is a 404.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass(frozen=True, slots=True)
class Route:
    """What a request path asks for; `market` False is the old, silent `/ws` and `/stream`."""

    market: bool
    combined: bool
    streams: tuple[str, ...]


def route(path: str) -> Route | None:
    """None means 404, like any path the exchange does not serve."""
    url = urlsplit(path)
    p = unquote(url.path).rstrip("/")
    query = parse_qs(url.query).get("streams", [""])[0]
    streams = tuple(s for s in query.split("/") if s)
    if p == "/market/ws":
        return Route(True, False, ())
    if p.startswith("/market/ws/"):
        return Route(True, False, (p.removeprefix("/market/ws/"),))
    if p == "/market/stream":
        return Route(True, True, streams)
    if p == "/ws" or p.startswith("/ws/"):
        return Route(False, False, ())
    if p == "/stream":
        return Route(False, True, streams)
    return None
