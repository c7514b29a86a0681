"""Which channels an alert goes to: the ``[[route]]`` tables of ``NOTIFY_CONFIG``.

Pure and per alert, so everything a route asks is prepared once: kinds, rule names and
directions as sets, a route's symbol globs as one compiled regex (``fnmatchcase`` semantics, as the
detector's rules), and each symbol's verdict remembered (the exchange has a few hundred).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import translate
from typing import Final

from common.schemas import Alert
from notifier.config import Route

# An alert written before rules had names (``rule=None``) came from the default rule.
DEFAULT_RULE: Final = "default"
# Remembered symbol verdicts; past this many (a feed of unknown names) the memory restarts.
_SYMBOLS_KEPT: Final = 10_000


def _globs(patterns: Sequence[str]) -> re.Pattern[str] | None:
    """One regex matching what any of ``patterns`` matches with ``fnmatchcase``."""
    if not patterns:
        return None
    return re.compile("|".join(translate(p) for p in patterns))


@dataclass(frozen=True, slots=True)
class _Compiled:
    channels: tuple[str, ...]
    kinds: frozenset[str] | None
    rules: frozenset[str] | None
    directions: frozenset[str] | None
    min_change_pct: float | None
    min_level: int
    allow: re.Pattern[str] | None
    deny: re.Pattern[str] | None

    @classmethod
    def of(cls, route: Route) -> _Compiled:
        return cls(
            channels=tuple(dict.fromkeys(route.channels)),
            kinds=frozenset(route.kinds) if route.kinds is not None else None,
            rules=frozenset(route.rules) if route.rules is not None else None,
            directions=frozenset(route.directions) if route.directions is not None else None,
            min_change_pct=route.min_change_pct,
            min_level=route.min_level,
            # An empty ``symbols`` is refused by the loader; here it would match nothing.
            allow=_globs(route.symbols) if route.symbols is not None else None,
            deny=_globs(route.deny),
        )

    def takes_symbol(self, symbol: str) -> bool:
        if self.deny is not None and self.deny.match(symbol):
            return False
        if self.allow is None:
            return True
        return self.allow.match(symbol) is not None

    def takes(self, alert: Alert) -> bool:
        """Everything but the symbol, which ``Router`` checks once per symbol.
        ``min_change_pct`` is on price alerts only (``notifier.config.Route``)."""
        if self.kinds is not None and alert.kind not in self.kinds:
            return False
        if self.rules is not None and (alert.rule or DEFAULT_RULE) not in self.rules:
            return False
        if self.directions is not None and alert.direction not in self.directions:
            return False
        if (self.min_change_pct is not None and alert.kind == "price"
                and not abs(alert.change_pct) >= self.min_change_pct):
            return False
        return alert.level >= self.min_level


class Router:
    """``channels_for(alert)``: the channels of every route the alert matches, each once,
    in the order the channels are first named by the routes (or in ``order``, the
    ``[[channel]]`` order, when given)."""

    def __init__(self, routes: Sequence[Route], *, order: Sequence[str] = ()) -> None:
        self._routes = tuple(_Compiled.of(r) for r in routes)
        named = dict.fromkeys(c for r in self._routes for c in r.channels)
        self._order = tuple(dict.fromkeys([*(c for c in order if c in named), *named]))
        self._by_symbol: dict[str, tuple[_Compiled, ...]] = {}

    def channels_for(self, alert: Alert) -> tuple[str, ...]:
        routes = self._by_symbol.get(alert.symbol)
        if routes is None:
            if len(self._by_symbol) >= _SYMBOLS_KEPT:
                self._by_symbol.clear()
            routes = tuple(r for r in self._routes if r.takes_symbol(alert.symbol))
            self._by_symbol[alert.symbol] = routes
        chosen = {c for r in routes if r.takes(alert) for c in r.channels}
        if not chosen:
            return ()
        return tuple(c for c in self._order if c in chosen)
