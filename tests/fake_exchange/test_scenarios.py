"""The synthetic markets: the bounds and the exact moves other tests rely on."""

from __future__ import annotations

import itertools
import re
import time

import pytest

from fake_exchange import (
    Quote,
    demo_scenario,
    drifting_market,
    firehose,
    jump_scenario,
    with_jump,
)
from fake_exchange.demo_board import DEMO_BOARD
from tests.support.recordings import CRYPTOFEED, HFT_3K, reference_ticks


def _prices(frames: list[list[Quote]]) -> list[dict[str, float]]:
    """Price of every symbol after each frame, carried forward like the exchange does."""
    state: dict[str, float] = {}
    out = []
    for frame in frames:
        state.update({q.symbol: q.price for q in frame})
        out.append(dict(state))
    return out


def test_drift_stays_within_bound_and_lists_only_changes() -> None:
    frames = list(drifting_market(60, seed=3, start_ms=1_000, frames=400, max_drift_pct=0.5))
    first = {q.symbol: q.price for q in frames[0]}
    assert sorted(first) == [f"SYM{i:03d}USDT" for i in range(60)]
    assert min(first.values()) >= 0.001
    assert max(first.values()) <= 60000
    worst = 0.0
    prev = dict(first)
    for k, frame in enumerate(frames[1:], start=1):
        assert len(frame) == round(0.6 * 60)
        assert len({q.symbol for q in frame}) == len(frame)
        for q in frame:
            assert q.event_time_ms == 1_000 + k * 1000
            assert q.price != prev[q.symbol], "a listed symbol must have changed"
            prev[q.symbol] = q.price
            worst = max(worst, abs(q.price / first[q.symbol] - 1) * 100)
    assert worst <= 0.5
    assert worst > 0.3  # it does drift, the bound is not trivially met


def test_drift_is_deterministic_per_seed() -> None:
    a = list(drifting_market(20, seed=1, start_ms=0, frames=5))
    b = list(drifting_market(20, seed=1, start_ms=0, frames=5))
    c = list(drifting_market(20, seed=2, start_ms=0, frames=5))
    assert a == b
    assert a != c


def test_drift_defaults_to_wall_clock_and_infinite() -> None:
    it = drifting_market(5)
    frames = list(itertools.islice(it, 50))
    assert len(frames) == 50
    now = time.time() * 1000
    assert abs(frames[0][0].event_time_ms - now) < 5_000


def test_coin_m_entries_are_flagged() -> None:
    frames = list(drifting_market(10, start_ms=0, frames=12, coin_m_symbols=3))
    for frame in frames:
        coin = [q for q in frame if q.contract_type == 2]
        assert [q.symbol for q in coin] == ["SYM000USD_PERP", "SYM001USD_PERP", "SYM002USD_PERP"]
        assert all(q.contract_type == 1 for q in frame if q.symbol.endswith("USDT"))
    # They swing 5 %, so a consumer that forgets to filter them would alert.
    p = [next(q.price for q in f if q.symbol == "SYM000USD_PERP") for f in frames]
    assert max(p) / min(p) == pytest.approx(1.05)


@pytest.mark.parametrize("pct", [3.0, -4.0])
def test_jump_reaches_exactly_pct_within_over_frames(pct: float) -> None:
    base = list(drifting_market(30, seed=5, start_ms=0, frames=40))
    frames = list(with_jump(iter(base), symbol="SYM007USDT", at_frame=5, pct=pct, over_frames=10))
    assert len(frames) == 40
    p0 = _prices(base)[5]["SYM007USDT"]
    ramp = []
    for k in range(6, 16):
        mine = [q for q in frames[k] if q.symbol == "SYM007USDT"]
        assert len(mine) == 1, f"the moving symbol is in every ramp frame (frame {k})"
        assert mine[0].event_time_ms == k * 1000
        ramp.append(mine[0].price)
    assert ramp[-1] == pytest.approx(p0 * (1 + pct / 100), rel=1e-12)
    assert ramp[4] == pytest.approx(p0 * (1 + pct / 100 * 0.5), rel=1e-12)
    steps = [b - a for a, b in itertools.pairwise([p0, *ramp])]
    assert all(s * pct > 0 for s in steps), "monotonic toward the target"
    # Holds afterwards, and every other symbol is untouched.
    held = [q.price for f in frames[16:] for q in f if q.symbol == "SYM007USDT"]
    assert held
    assert set(held) == {ramp[-1]}
    for got, want in zip(frames, base, strict=True):
        assert [q for q in got if q.symbol != "SYM007USDT"] == [
            q for q in want if q.symbol != "SYM007USDT"
        ]


def test_jump_scenario_convenience_and_unknown_symbol() -> None:
    frames = list(jump_scenario(20, at_frame=2, pct=3.0, over_frames=4, start_ms=0, frames=10))
    p = _prices(frames)
    assert p[6]["SYM007USDT"] == pytest.approx(p[2]["SYM007USDT"] * 1.03, rel=1e-12)
    with pytest.raises(ValueError, match="NOPEUSDT"):
        list(with_jump(drifting_market(5, frames=3), symbol="NOPEUSDT", at_frame=1))


def _alerts(
    frames: list[list[Quote]], window: int = 60, threshold: float = 2.0
) -> list[tuple[int, str, bool]]:
    """A minimal reference detector on frame indices (1 frame = 1 s)."""
    hist: dict[str, list[tuple[int, float]]] = {}
    cooldown: dict[str, int] = {}
    out = []
    for k, frame in enumerate(frames):
        for q in frame:
            h = hist.setdefault(q.symbol, [])
            h.append((k, q.price))
            older = [p for t, p in h if t <= k - window]
            base = older[-1] if older else next(p for t, p in h if t > k - window)
            change = (q.price - base) / base * 100
            if abs(change) >= threshold and k >= cooldown.get(q.symbol, -1):
                out.append((k, q.symbol, change > 0))
                cooldown[q.symbol] = k + window
    return out


def test_demo_fires_regularly_and_only_on_its_moves() -> None:
    frames = list(itertools.islice(demo_scenario(30, seed=0, every_frames=8, pct=3.0), 400))
    assert frames[1][0].event_time_ms - frames[0][0].event_time_ms == 1000
    assert frames[0][0].symbol == "BTCUSDT"
    alerts = _alerts(frames)
    moves = (400 - 8) // 8  # started moves whose ramp completes inside the run
    assert len(alerts) >= moves - 1
    assert len(alerts) <= moves + 1, "unwinding a move must not fire a second alert"
    # Every few seconds, alternating direction.
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(alerts)]
    assert max(gaps) <= 12
    ups = [up for _, _, up in alerts]
    assert sum(ups) == pytest.approx(len(ups) / 2, abs=1)


def test_firehose_carries_every_symbol_every_frame() -> None:
    frames = list(firehose(50, frames=7, start_ms=10, step_ms=5))
    assert len(frames) == 7
    for k, frame in enumerate(frames):
        assert len({q.symbol for q in frame}) == 50
        assert {q.event_time_ms for q in frame} == {10 + 5 * k}
    a, b = frames[0][0].price, frames[1][0].price
    assert a != b
    assert abs(b / a - 1) < 0.005


def test_the_demo_board_is_real_perpetuals_at_the_recorded_levels() -> None:
    """Real names (chart links work, no SYM024USDT), and where a recording holds the
    symbol, a price level within its recorded range."""
    frames = list(itertools.islice(demo_scenario(seed=0), 3))
    names = [q.symbol for q in frames[0]]
    assert names == [name for name, _ in DEMO_BOARD]
    assert len(set(names)) == len(names) >= 30
    assert all(re.fullmatch(r"(1000)?[A-Z0-9]{2,12}USDT", n) and not n.startswith("SYM")
               for n in names)
    recorded: dict[str, list[float]] = {}
    for tick in reference_ticks([HFT_3K, CRYPTOFEED]):
        recorded.setdefault(tick.symbol, []).append(tick.price)
    level = dict(DEMO_BOARD)
    on_board = sorted(set(recorded) & set(level))
    assert on_board == ["BTCUSDT", "SUSHIUSDT"]
    for symbol in on_board:
        assert min(recorded[symbol]) * 0.99 <= level[symbol] <= max(recorded[symbol]) * 1.01
    start = {q.symbol: q.price for q in frames[0]}
    assert all(start[s] == pytest.approx(level[s], rel=0.01) for s in names)


def test_the_demo_board_bounds_its_size() -> None:
    with pytest.raises(ValueError, match="demo board"):
        next(demo_scenario(len(DEMO_BOARD) + 1))
