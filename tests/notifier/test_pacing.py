"""Pacing: the API's limits as sliding windows counted from each answer, shared windows,
and pauses the API asked for."""

from __future__ import annotations

import pytest

from notifier.channels.base import Budget, Limit
from notifier.pacing import SAFETY_S, Pacer, SharedWindows


def send(pacer: Pacer, start: float, took_s: float = 0.0) -> None:
    pacer.reserve(start).done(start + took_s)


def test_one_per_second_counts_from_the_answer_not_the_start() -> None:
    pacer = Pacer(Budget((Limit(1, 1.0),)))
    assert pacer.free_at() == 0.0
    send(pacer, 10.0, took_s=0.3)
    # The server may have seen the request as late as its answer (10.3).
    assert pacer.free_at() == pytest.approx(11.3 + SAFETY_S)


def test_a_window_of_twenty_a_minute_allows_twenty_then_waits_for_the_oldest() -> None:
    pacer = Pacer(Budget((Limit(1, 1.0), Limit(20, 60.0))))
    for i in range(20):
        send(pacer, 100.0 + 1.1 * i)
    # The 21st may start a minute after the first, not a second after the 20th.
    assert pacer.free_at() == pytest.approx(160.0 + SAFETY_S)


def test_a_request_in_flight_holds_its_place_in_a_shared_window() -> None:
    shared = SharedWindows()
    budget = Budget((Limit(1, 1.0),), shared_key="bot", shared_limits=(Limit(2, 1.0),))
    chat_a, chat_b, chat_c = (Pacer(budget, shared) for _ in range(3))
    chat_a.reserve(5.0)  # not answered yet
    chat_b.reserve(5.1).done(5.2)
    # Two requests of the bot in the last second: a third chat waits for the bot.
    assert chat_c.free_at() == pytest.approx(6.0 + SAFETY_S)
    assert Pacer(Budget((Limit(1, 1.0),), shared_key="other",
                        shared_limits=(Limit(2, 1.0),)), shared).free_at() == 0.0


def test_a_pause_the_api_asked_for_wins_over_the_windows() -> None:
    pacer = Pacer(Budget((Limit(1, 1.0),)))
    send(pacer, 1.0)
    pacer.pause(30.0)
    pacer.pause(5.0)  # an earlier pause never shortens a longer one
    assert pacer.free_at() == 30.0


def test_no_limits_means_never_wait() -> None:
    pacer = Pacer(Budget(()))
    for i in range(1000):
        send(pacer, float(i) / 1000)
    assert pacer.free_at() == 0.0


def test_windows_keep_only_what_matters() -> None:
    pacer = Pacer(Budget((Limit(3, 1.0),)))
    for i in range(10_000):
        send(pacer, float(i))
    assert pacer.free_at() == pytest.approx(9997.0 + 1.0 + SAFETY_S)  # the third newest
    assert max(len(w.slots) for w in pacer._windows) <= 6
