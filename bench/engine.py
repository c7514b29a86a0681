"""Detection engine alone, on one core: ticks/s with no I/O at all.

Two figures: the default single rule (the target is ≥ 1,000,000 ticks/s), and three rules
at once with the options a trader would use (escalation, a volume floor, an override and a
deny list), which cost per rule per tick.
"""

from __future__ import annotations

import random
import time

from common.rule_model import Rule, SymbolOverride
from common.schemas import Tick
from detector.engine import DetectionEngine

MULTI_RULES = [
    Rule(name="default"),
    Rule(name="fast", window_s=10, threshold_up_pct=1.0, threshold_down_pct=1.0, cooldown_s=30,
         escalation_step_pct=1.0, deny=["SYM00*"]),
    Rule(name="slow", window_s=300, threshold_up_pct=5.0, threshold_down_pct=5.0,
         cooldown_s=300, min_quote_volume=1_000_000,
         overrides=[SymbolOverride(pattern="SYM01*", threshold_up_pct=8.0)]),
]


def synthetic_ticks(symbols: int, frames: int, seed: int = 1) -> list[Tick]:
    rng = random.Random(seed)
    prices = [rng.uniform(0.01, 50_000) for _ in range(symbols)]
    volumes = [rng.uniform(1e5, 1e9) for _ in range(symbols)]
    names = [f"SYM{i:04d}USDT" for i in range(symbols)]
    ticks = []
    for frame in range(frames):
        for i, name in enumerate(names):
            prices[i] *= 1 + rng.uniform(-0.001, 0.001)
            ticks.append(Tick(name, prices[i], 1_700_000_000_000 + frame * 1000, "mini_ticker",
                              volumes[i]))
    return ticks


def measure(label: str, rules: list[Rule], ticks: list[Tick]) -> None:
    engine = DetectionEngine(rules)
    started = time.perf_counter()
    alerts = engine.process(ticks)
    elapsed = time.perf_counter() - started
    print(f"engine, {label}: {len(ticks) / elapsed:,.0f} ticks/s on one core "
          f"({len(ticks):,} ticks, 1,000 symbols, {len(alerts)} alerts, {elapsed:.2f} s)")


def main() -> None:
    ticks = synthetic_ticks(1000, 1000)
    measure("1 rule", [Rule()], ticks)
    measure(f"{len(MULTI_RULES)} rules", MULTI_RULES, ticks)


if __name__ == "__main__":
    main()
