"""When a channel may send its next message: the API's documented limits as sliding
windows, and the pauses the API asked for (429 ``retry_after``, Discord's
``X-RateLimit-Reset-After``). Pure: the dispatcher passes the clock in.

A request counts in a window from the moment it is *answered*, not sent. The server counts
it when it arrives, which lies between the two; requests of one channel go one at a time,
so measuring from the answer keeps every pair of requests the server sees at least a
window apart, whatever the network did to the first one. A window shared by several
channels (a Telegram bot's 30/s across its chats) may have requests of two channels in
flight at once: each takes its place in the window when it starts (``reserve``) and moves
it to its answer time when answered (``Slot.done``), and ``SAFETY_S`` covers the rest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from notifier.channels.base import Budget, Limit

# Added to every period: timers fire late, never early, but two clocks' reading of
# "one second" can differ by a few ms.
SAFETY_S: Final = 0.02


class Slot:
    """One request's place in the windows: its start time until it is answered."""

    __slots__ = ("at",)

    def __init__(self, at: float) -> None:
        self.at = at

    def done(self, answered_at: float) -> None:
        self.at = max(self.at, answered_at)


@dataclass
class Window:
    """At most ``limit.count`` requests in any ``limit.period_s``."""

    limit: Limit
    slots: list[Slot] = field(default_factory=list)

    def free_at(self) -> float:
        """The earliest time one more request fits (0: now)."""
        count = self.limit.count
        if len(self.slots) < count:
            return 0.0
        times = sorted(slot.at for slot in self.slots)
        return times[-count] + self.limit.period_s + SAFETY_S

    def add(self, slot: Slot) -> None:
        self.slots.append(slot)
        if len(self.slots) > 2 * self.limit.count:  # only the newest `count` ever matter
            self.slots.sort(key=lambda s: s.at)
            del self.slots[: -self.limit.count]


class SharedWindows:
    """Windows shared by every channel of one ``Budget.shared_key``."""

    def __init__(self) -> None:
        self._windows: dict[str, list[Window]] = {}

    def get(self, key: str, limits: Iterable[Limit]) -> list[Window]:
        if key not in self._windows:
            self._windows[key] = [Window(limit) for limit in limits]
        return self._windows[key]


class Pacer:
    """The pacing of one channel: its windows, the shared ones, and a pause."""

    def __init__(self, budget: Budget, shared: SharedWindows | None = None) -> None:
        self._windows = [Window(limit) for limit in budget.limits]
        if budget.shared_key is not None:
            self._windows += (shared or SharedWindows()).get(budget.shared_key,
                                                             budget.shared_limits)
        self.paused_until = 0.0

    def free_at(self) -> float:
        """The earliest time the next request may start."""
        return max([self.paused_until, *(w.free_at() for w in self._windows)])

    def reserve(self, now: float) -> Slot:
        """Take a place in every window for a request starting ``now``; call
        ``Slot.done`` with the time it was answered."""
        slot = Slot(now)
        for window in self._windows:
            window.add(slot)
        return slot

    def pause(self, until: float) -> None:
        """No request before ``until`` (what the API asked for)."""
        self.paused_until = max(self.paused_until, until)
