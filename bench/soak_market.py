"""The soak's market: a board of N symbols at F frames/s with a scripted move every few
seconds, served by the fake exchange in a process of its own
(``python -m bench.soak_market``), so that generating the load never competes with the
harness that measures it.

The script is a pure function of the start time, so the harness knows every move without
asking the exchange. Move k starts at ``t0 + k × every`` on symbol ``k mod N``; a symbol's
moves alternate, +3 % then back down (−2.9 %), and each is a step held until the symbol's
next move, N × every seconds later. Being held is what keeps a move visible across an outage:
whenever the ingestor is back, the symbol's price still differs from the last one before the
outage by the whole move, so a detector fires for it then (a restart delay shorter than the
hold loses no move, by design). Between moves every price wiggles by at most 0.2 %, far
below the 2 % threshold the soak runs with, so every move fires exactly one alert and
nothing else fires.

Prices are computed from the wall clock at send time: the fake pauses its scenario while no
client streams (a killed ingestor), and on resume the board shows the moves made meanwhile,
as a real exchange would.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Literal

from fake_exchange import FakeExchange, Quote

MOVE_PCT: Final = 3.0
WIGGLE: Final = 0.0005  # per level, five levels: at most 0.2 % away from the base price
_UP: Final = 1.0 + MOVE_PCT / 100.0


def symbol_name(i: int) -> str:
    return f"SOAK{i:04d}USDT"


@dataclass(frozen=True, slots=True)
class Move:
    index: int
    symbol: str
    direction: Literal["up", "down"]
    start_s: float  # wall clock (epoch seconds)
    until_s: float  # the symbol's next move: an alert for this one fires before that


@dataclass(frozen=True, slots=True)
class Script:
    """When each move happens: ``t0`` (epoch seconds), every ``every_s``, over ``symbols``."""

    t0: float
    every_s: float
    symbols: int

    def move(self, k: int) -> Move:
        i = k % self.symbols
        up = (k // self.symbols) % 2 == 0
        start = self.t0 + k * self.every_s
        return Move(k, symbol_name(i), "up" if up else "down", start,
                    start + self.symbols * self.every_s)

    def moves_between(self, start_s: float, end_s: float) -> list[Move]:
        """The moves that start in [start_s, end_s)."""
        first = max(0, math.ceil((start_s - self.t0) / self.every_s))
        moves = []
        k = first
        while self.t0 + k * self.every_s < end_s:
            moves.append(self.move(k))
            k += 1
        return moves

    def factors(self, now_s: float) -> list[float]:
        """Each symbol's price factor at ``now_s``: 1.03 after an odd number of its moves."""
        last = math.floor((now_s - self.t0) / self.every_s)  # the newest move started
        out = []
        for i in range(self.symbols):
            started = 0 if last < i else (last - i) // self.symbols + 1
            out.append(_UP if started % 2 else 1.0)
        return out


def market(script: Script) -> Iterator[list[Quote]]:
    """Every symbol in every frame (ten times the real load is 10 frames/s × 1,000)."""
    base = [10.0 + 7.0 * i for i in range(script.symbols)]
    names = [symbol_name(i) for i in range(script.symbols)]
    k = 0
    while True:
        now = time.time()
        now_ms = int(now * 1000)
        factors = script.factors(now)
        yield [Quote(name, price * factor * (1.0 + WIGGLE * ((k + i) % 5)), now_ms)
               for i, (name, price, factor) in enumerate(zip(names, base, factors, strict=True))]
        k += 1


async def serve(script: Script, port: int, frames_per_s: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with FakeExchange(market(script), port=port, interval_s=1.0 / frames_per_s,
                            wall_clock=True) as exchange:
        print(f"soak market listening on {exchange.url()}", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--symbols", type=int, required=True)
    parser.add_argument("--frames-per-s", type=float, required=True)
    parser.add_argument("--t0", type=float, required=True, help="the first move (epoch s)")
    parser.add_argument("--move-every", type=float, default=1.0)
    args = parser.parse_args()
    asyncio.run(serve(Script(args.t0, args.move_every, args.symbols), args.port,
                      args.frames_per_s))


if __name__ == "__main__":
    main()
