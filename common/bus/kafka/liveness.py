"""Noticing that this process stood still: the SIGSTOP case of a Kafka group member.

A member whose event loop did not run for a session timeout sent no heartbeat: the group
coordinator has given its partitions to another member, which processes them now. aiokafka
finds out only at its next heartbeat, after the caller may already have published the
outcome of a batch it held. So the member keeps its own clock: a timer on the event loop
that ticks every ``every_s``; a gap between two ticks longer than ``bound_s`` (the session
timeout minus a margin) means the member must consider itself out of the group.
"""

from __future__ import annotations

import asyncio
import time


class StallWatch:
    def __init__(self, bound_s: float, every_s: float = 0.1) -> None:
        self._bound_s = bound_s
        self._every_s = min(every_s, bound_s / 4)
        self._last: float | None = None
        self._stalled = False
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Start ticking on the running loop (idempotent)."""
        if self._timer is None:
            self._last = time.monotonic()
            self._timer = asyncio.get_running_loop().call_later(self._every_s, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._last = None

    def stalled(self) -> bool:
        """A stall longer than the bound happened since the last ``reset``, or is just
        ending (the caller runs before the timer had its turn)."""
        if self._last is None:
            return False
        return self._stalled or time.monotonic() - self._last > self._bound_s

    def reset(self) -> None:
        self._stalled = False
        if self._last is not None:
            self._last = time.monotonic()

    def _tick(self) -> None:
        now = time.monotonic()
        if self._last is not None and now - self._last > self._bound_s:
            self._stalled = True
        self._last = now
        self._timer = asyncio.get_running_loop().call_later(self._every_s, self._tick)
