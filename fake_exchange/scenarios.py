"""Synthetic markets for the fake exchange.

A scenario is a plain iterable of frames, one frame per exchange push, so tests can build
exact markets by hand (a list of lists) and the server never has to know where they came
from. The generators here are lazy and deterministic for a given seed, which is what lets a
test assert "the jump is in frame 25" or "nothing ever drifted past 0.5 %".
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from fake_exchange.demo_board import DEMO_BOARD

logger = logging.getLogger(__name__)

USDM = 1
COINM = 2

@dataclass(frozen=True, slots=True)
class Quote:
    """One symbol's price at one moment, as the exchange would report it."""

    symbol: str
    price: float
    event_time_ms: int
    contract_type: int = USDM  # "st": 1 = USDⓈ-M, 2 = COIN-M


Scenario = Iterable[list[Quote]]


def symbol_names(n: int) -> list[str]:
    """Stable synthetic names, so a test can name its jump symbol before the market exists."""
    return [f"SYM{i:03d}USDT" for i in range(n)]


def _start_prices(n: int, rng: random.Random) -> list[float]:
    # Log-uniform over 0.001..60000, like a real futures board from memecoins to BTC.
    lo, hi = math.log(0.001), math.log(60000.0)
    return [math.exp(rng.uniform(lo, hi)) for _ in range(n)]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _drift(
    names: list[str],
    *,
    seed: int,
    start_ms: int | None,
    step_ms: int,
    frames: int | None,
    max_drift_pct: float,
    change_ratio: float,
    coin_m_symbols: int,
    start_prices: list[float] | None = None,
) -> Iterator[list[Quote]]:
    if max_drift_pct < 0 or not 0.0 <= change_ratio <= 1.0 or step_ms < 0:
        raise ValueError("max_drift_pct >= 0, 0 <= change_ratio <= 1 and step_ms >= 0 required")
    rng = random.Random(seed)
    n = len(names)
    start = _start_prices(n, rng) if start_prices is None else start_prices
    offsets = [0.0] * n  # percent away from the start price
    # Clamp a little inside the bound: the rendered decimal string rounds the float.
    bound = max_drift_pct * 0.99
    sigma = max_drift_pct / 4.0
    per_frame = round(change_ratio * n)
    coin_names = [f"SYM{i:03d}USD_PERP" for i in range(coin_m_symbols)]
    coin_start = _start_prices(coin_m_symbols, rng)
    t0 = _now_ms() if start_ms is None else start_ms
    k = 0
    while frames is None or k < frames:
        t = t0 + k * step_ms
        if k == 0:
            idx: Iterable[int] = range(n)
        else:
            idx = sorted(rng.sample(range(n), per_frame))
        frame = []
        for i in idx:
            if k:
                # Mean reversion keeps a long run near the start; the clamp makes the bound
                # absolute, so a threshold detector can never fire on drift alone.
                # Reflecting (not clamping) at the bound keeps every listed symbol changing.
                x = offsets[i] * 0.9 + rng.gauss(0.0, sigma)
                if abs(x) > bound:
                    x = math.copysign(2 * bound - abs(x), x)
                offsets[i] = min(bound, max(-bound, x))
            frame.append(Quote(names[i], start[i] * (1.0 + offsets[i] / 100.0), t))
        # COIN-M entries swing 5 % every 5 frames on purpose: a consumer that forgets to
        # filter st=2 fires alerts on them, which a test can see.
        for name, price in zip(coin_names, coin_start, strict=True):
            swing = 1.05 if (k // 5) % 2 else 1.0
            frame.append(Quote(name, price * swing, t, COINM))
        yield frame
        k += 1


def drifting_market(
    n_symbols: int = 700,
    *,
    seed: int = 0,
    start_ms: int | None = None,
    step_ms: int = 1000,
    frames: int | None = None,
    max_drift_pct: float = 0.5,
    change_ratio: float = 0.6,
    coin_m_symbols: int = 0,
) -> Iterator[list[Quote]]:
    """A quiet board: everything wiggles, nothing moves enough to alert.

    Frames after the first carry only the symbols that changed, like `!miniTicker@arr`.
    """
    return _drift(
        symbol_names(n_symbols),
        seed=seed,
        start_ms=start_ms,
        step_ms=step_ms,
        frames=frames,
        max_drift_pct=max_drift_pct,
        change_ratio=change_ratio,
        coin_m_symbols=coin_m_symbols,
    )


def with_jump(
    base: Iterable[list[Quote]],
    *,
    symbol: str,
    at_frame: int,
    pct: float = 3.0,
    over_frames: int = 20,
) -> Iterator[list[Quote]]:
    """Overlay one exact, known move so a test can assert the alert it must cause.

    The price is overridden (not multiplied onto the drift) so the end price is exactly
    (1 + pct/100) × the price at `at_frame`.
    """
    if over_frames < 1 or at_frame < 0:
        raise ValueError("over_frames >= 1 and at_frame >= 0 required")
    last: float | None = None
    p0: float | None = None
    last_t = 0
    for k, frame in enumerate(base):
        if frame:
            last_t = frame[0].event_time_ms
        if k < at_frame:
            for q in frame:
                if q.symbol == symbol:
                    last = q.price
            yield frame
            continue
        if p0 is None:
            p0 = next((q.price for q in frame if q.symbol == symbol), last)
            if p0 is None:
                raise ValueError(f"{symbol} has no price at or before frame {at_frame}")
        j = k - at_frame
        if j >= over_frames:
            price = p0 * (1.0 + pct / 100.0)
        else:
            price = p0 * (1.0 + pct / 100.0 * j / over_frames)
        out = [replace(q, price=price) if q.symbol == symbol else q for q in frame]
        if 0 < j <= over_frames and not any(q.symbol == symbol for q in frame):
            out.append(Quote(symbol, price, last_t))
        yield out


def jump_scenario(
    n_symbols: int = 700,
    *,
    jump_symbol: str = "SYM007USDT",
    at_frame: int = 5,
    pct: float = 3.0,
    over_frames: int = 20,
    seed: int = 0,
    step_ms: int = 1000,
    start_ms: int | None = None,
    frames: int | None = None,
) -> Iterator[list[Quote]]:
    """A quiet board with exactly one move: the canonical end-to-end alert test."""
    base = drifting_market(n_symbols, seed=seed, step_ms=step_ms, start_ms=start_ms, frames=frames)
    return with_jump(base, symbol=jump_symbol, at_frame=at_frame, pct=pct, over_frames=over_frames)


def demo_scenario(
    n_symbols: int = len(DEMO_BOARD), *, seed: int = 0, every_frames: int = 8, pct: float = 3.0
) -> Iterator[list[Quote]]:
    """A board lively enough to watch: a pct % move every `every_frames` frames, over the
    first ``n_symbols`` real perpetuals of ``DEMO_BOARD`` at their usual price levels.

    Each move ramps within 2-4 frames (fires a 2 % / 60 s detector), holds, then unwinds
    slowly enough (at most 1.2 % per 60 frames) that the unwinding itself fires nothing, so
    prices stay near where they started however long the demo runs.
    """
    if not 1 <= n_symbols <= len(DEMO_BOARD) or every_frames < 1:
        raise ValueError(f"1 <= n_symbols <= {len(DEMO_BOARD)} (the demo board) and "
                         "every_frames >= 1 required")
    names = [name for name, _ in DEMO_BOARD[:n_symbols]]
    base = _drift(
        names,
        seed=seed,
        start_ms=None,
        step_ms=1000,
        frames=None,
        max_drift_pct=0.25,
        change_ratio=0.5,
        coin_m_symbols=0,
        start_prices=[price for _, price in DEMO_BOARD[:n_symbols]],
    )
    rng = random.Random(seed + 1)
    hold = 70
    unwind = max(60, math.ceil(50 * abs(pct)))
    moves: dict[str, tuple[int, int, float]] = {}  # symbol -> (start frame, ramp, signed pct)
    last: dict[str, float] = {}
    events = 0
    for k, frame in enumerate(base):
        for q in frame:
            last[q.symbol] = q.price
        if k and k % every_frames == 0:
            for step in range(n_symbols):
                sym = names[(events + step) % n_symbols]
                if sym not in moves:
                    # Alternate, and flip each rotation so a symbol's next move goes against
                    # its previous one (never measured from a base its own unwind depressed).
                    sign = 1.0 if (events + events // n_symbols) % 2 == 0 else -1.0
                    moves[sym] = (k, rng.randint(2, 4), sign * pct)
                    events += 1
                    break
        factors: dict[str, tuple[float, bool]] = {}  # symbol -> (factor, changed this frame)
        for sym, (k0, ramp, signed) in list(moves.items()):
            j = k - k0
            if j <= ramp:
                f, moving = j / ramp, True
            elif j <= ramp + hold:
                f, moving = 1.0, False
            elif j <= ramp + hold + unwind:
                f, moving = 1.0 - (j - ramp - hold) / unwind, True
            else:
                del moves[sym]
                continue
            factors[sym] = (1.0 + signed / 100.0 * f, moving)
        if not factors:
            yield frame
            continue
        t = frame[0].event_time_ms
        out = [replace(q, price=q.price * factors[q.symbol][0]) if q.symbol in factors else q
               for q in frame]  # fmt: skip
        present = {q.symbol for q in frame}
        for sym, (factor, moving) in factors.items():
            if moving and sym not in present:
                out.append(Quote(sym, last[sym] * factor, t))
        yield out


def firehose(
    n_symbols: int = 1000,
    *,
    frames: int,
    seed: int = 0,
    start_ms: int = 1_700_000_000_000,
    step_ms: int = 1000,
) -> Iterator[list[Quote]]:
    """Every symbol in every frame, for throughput runs; prices cycle through a few levels
    (under 0.5 % apart) so generation stays cheap and no detector fires."""
    rng = random.Random(seed)
    names = symbol_names(n_symbols)
    levels = [[p * (1.0 + 0.001 * m) for m in range(5)] for p in _start_prices(n_symbols, rng)]
    for k in range(frames):
        t = start_ms + k * step_ms
        m = k % 5
        yield [Quote(name, lv[m], t) for name, lv in zip(names, levels, strict=True)]


def looped(scenario: Iterable[list[Quote]]) -> Iterator[list[Quote]]:
    """The scenario replayed forever, with event times shifted forward each pass so consumers
    (which ignore old ticks) keep seeing a live market. A one-shot iterator is cached on its
    first pass; an empty scenario ends at once."""
    reiterable = iter(scenario) is not scenario
    cache: list[list[Quote]] = []
    shift, first = 0, True
    while True:
        t_first = t_last = None
        count = 0
        for frame in scenario if first or reiterable else cache:
            if first and not reiterable:
                cache.append(frame)
            if frame:
                t_last = frame[0].event_time_ms
                t_first = t_last if t_first is None else t_first
            count += 1
            if shift:
                frame = [replace(q, event_time_ms=q.event_time_ms + shift) for q in frame]
            yield frame
        if count == 0:
            return
        first = False
        if t_first is not None and t_last is not None:
            step = (t_last - t_first) // max(1, count - 1) or 1000
            shift += t_last - t_first + step
