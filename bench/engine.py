"""Detection engine alone, on one core: ticks/s with no I/O at all.

Two figures on mini-ticker frames: the default single rule (the target is ≥ 1,000,000
ticks/s), and three rules at once with the options a trader would use (escalation, a
volume floor, an override and a deny list), which cost per rule per tick. Then a trade-level
market (mostly trades, a mark price per symbol each second, a few forced orders) with one
rule of each of the four kinds, beside the same stream with the price rule alone; each of
those two is the median of three runs.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Final

from common.rule_model import Rule, SymbolOverride
from common.schemas import FUNDING, LIQUIDATION, PRICE, Tick
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


FOUR_KINDS: Final = [
    Rule(name="default"),
    Rule(name="cascade", kind="liquidation", window_s=60, min_notional_usdt=100_000,
         escalation_step_usdt=100_000),
    Rule(name="funding", kind="funding", min_funding_rate_pct=0.1),
    Rule(name="spike", kind="volume", window_s=60, baseline_s=600, volume_factor=5.0,
         min_window_volume_usdt=10_000, cooldown_s=300),
]
TRADES_PER_SECOND: Final = 10  # per symbol
FORCED_ORDER_CHANCE: Final = 0.02  # per symbol and second


def trade_market(symbols: int, seconds: int, seed: int = 2) -> list[Tick]:
    """A trade-level stream in time order: per symbol and second TRADES_PER_SECOND trades,
    one mark price with its funding rate (a few symbols extreme) and now and then a forced
    order."""
    rng = random.Random(seed)
    names = [f"SYM{i:04d}USDT" for i in range(symbols)]
    prices = [rng.uniform(0.01, 50_000) for _ in range(symbols)]
    rates = [rng.choice((0.0001, 0.0001, 0.0001, -0.0005, 0.0015)) for _ in range(symbols)]
    start = 1_700_000_000_000
    ticks = []
    for second in range(seconds):
        base_ms = start + second * 1000
        for k in range(TRADES_PER_SECOND):
            at = base_ms + k * (1000 // TRADES_PER_SECOND)
            for i, name in enumerate(names):
                prices[i] *= 1 + rng.uniform(-0.0005, 0.0005)
                ticks.append(Tick(name, prices[i], at, "agg_trade", None, PRICE,
                                  rng.expovariate(1.0) * 1_000 / prices[i]))
        for i, name in enumerate(names):
            ticks.append(Tick(name, prices[i], base_ms + 999, "mark_price", None, FUNDING,
                              funding_rate=rates[i], next_funding_ms=start + 8 * 3_600_000))
            if rng.random() < FORCED_ORDER_CHANCE:
                ticks.append(Tick(name, prices[i], base_ms + 500, "force_order", None,
                                  LIQUIDATION, rng.expovariate(1.0) * 50_000 / prices[i],
                                  rng.choice(("BUY", "SELL"))))
    return ticks


def median_rate(rules: list[Rule], ticks: list[Tick], runs: int = 3) -> tuple[float, int]:
    """Median ticks/s of ``runs`` fresh engines over ``ticks``, and the alerts of one."""
    rates = []
    alerts = 0
    for _ in range(runs):
        engine = DetectionEngine(rules)
        started = time.perf_counter()
        alerts = len(engine.process(ticks))
        rates.append(len(ticks) / (time.perf_counter() - started))
    return statistics.median(rates), alerts


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
    symbols, seconds = 100, 900
    market = trade_market(symbols, seconds)
    detail = (f"{len(market):,} ticks: {symbols} symbols, {seconds} s of trades, mark prices "
              "and forced orders")
    for label, rules in (("all four kinds of rule", FOUR_KINDS),
                         ("price rule only, same stream", FOUR_KINDS[:1])):
        rate, alerts = median_rate(rules, market)
        print(f"engine, {label}: {rate:,.0f} ticks/s on one core, median of 3 ({detail}; "
              f"{alerts} alerts)")


if __name__ == "__main__":
    main()
