"""The soak's scripted market: every move a sustained step on its own symbol, known to the
harness from the start time alone."""

from __future__ import annotations

import itertools

from bench.soak_market import MOVE_PCT, WIGGLE, Script, market, symbol_name

THRESHOLD_PCT = 2.0


def test_each_move_is_one_symbol_stepping_past_the_threshold_and_holding() -> None:
    script = Script(t0=1000.0, every_s=1.0, symbols=5)
    before = script.factors(1002.5)  # moves 0, 1, 2 made: symbols 0-2 up
    after = script.factors(1003.5)  # move 3: symbol 3 up
    assert before == [1.0 + MOVE_PCT / 100] * 3 + [1.0, 1.0]
    assert after == [1.0 + MOVE_PCT / 100] * 4 + [1.0]
    # The second rotation brings each symbol back down, one per move.
    assert script.factors(1005.5) == [1.0] + [1.0 + MOVE_PCT / 100] * 4
    assert script.move(5).direction == "down"
    assert script.move(5).symbol == symbol_name(0)
    assert script.move(10).direction == "up"


def test_a_move_exceeds_the_threshold_whatever_the_wiggle_and_the_wiggle_never_does() -> None:
    worst_wiggle = (1 + 4 * WIGGLE) / 1 - 1
    up = (1 + MOVE_PCT / 100) / (1 + 4 * WIGGLE) - 1
    down = 1 / (1 + MOVE_PCT / 100) * 1 / (1 + 4 * WIGGLE) - 1
    assert worst_wiggle * 100 < THRESHOLD_PCT / 4
    assert up * 100 > THRESHOLD_PCT * 1.3
    assert -down * 100 > THRESHOLD_PCT * 1.3


def test_moves_between_lists_the_moves_that_start_in_the_span() -> None:
    script = Script(t0=1000.0, every_s=0.5, symbols=10)
    moves = script.moves_between(1001.2, 1003.0)
    assert [m.index for m in moves] == [3, 4, 5]
    assert moves[0].start_s == 1001.5
    assert moves[0].until_s == 1006.5
    assert script.moves_between(900.0, 1000.1)[0].index == 0


def test_every_frame_lists_every_symbol() -> None:
    script = Script(t0=0.0, every_s=1.0, symbols=30)
    frames = list(itertools.islice(market(script), 3))
    assert [len(f) for f in frames] == [30, 30, 30]
    assert {q.symbol for q in frames[0]} == {symbol_name(i) for i in range(30)}
