"""Jittered exponential backoff shared by every reconnect loop.

Jitter matters because all services lose Redis or the exchange at the same instant; without it
they would all come back at the same instant too.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, minimum_s: float = 0.5, maximum_s: float = 30.0,
                 factor: float = 2.0) -> None:
        self._minimum = minimum_s
        self._maximum = maximum_s
        self._factor = factor
        self.attempts = 0

    def next_delay(self) -> float:
        """Half of the ceiling fixed, half random: never zero, never above the maximum."""
        ceiling = min(self._maximum, self._minimum * self._factor**self.attempts)
        self.attempts += 1
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.attempts = 0
