"""Scripted markets the end-to-end tests share: a quiet board with known moves."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from fake_exchange import Quote, drifting_market, with_jump

FIRST_MOVE_FRAME = 12


def board_with_moves(moves: Sequence[tuple[str, float]], *, frames_between: int,
                     quiet_after: int) -> Iterator[list[Quote]]:
    """120 symbols drifting quietly, every one quoting in every frame (so a frame lost in a
    restart cannot hide a move), and ``moves`` as (symbol, %) jumps over 3 frames, one
    every ``frames_between`` frames from frame 12; then ``quiet_after`` × ``frames_between``
    quiet frames, for the last alerts to arrive before the exchange stops."""
    frames = FIRST_MOVE_FRAME + frames_between * (len(moves) + quiet_after)
    scenario: Iterator[list[Quote]] = drifting_market(120, frames=frames, change_ratio=1.0,
                                                       seed=7)
    for index, (symbol, pct) in enumerate(moves):
        scenario = with_jump(scenario, symbol=symbol,
                             at_frame=FIRST_MOVE_FRAME + index * frames_between,
                             pct=pct, over_frames=3)
    return scenario
