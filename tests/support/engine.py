"""Ticks and runs for the engine tests: a tick in seconds, one engine over a list of ticks."""

from __future__ import annotations

from common.rule_model import Rule
from common.schemas import Alert, Tick
from detector.engine import DetectionEngine

RULE = Rule(window_s=60, threshold_up_pct=2.0, threshold_down_pct=2.0, cooldown_s=60)


def tick(symbol: str, seconds: float, price: float, volume: float | None = None) -> Tick:
    return Tick(symbol, price, int(seconds * 1000), "mini_ticker", volume)


def run(ticks: list[Tick], rule: Rule | list[Rule] = RULE) -> list[Alert]:
    return DetectionEngine(rule).process(ticks)
