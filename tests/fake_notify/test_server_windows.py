"""What ``Windows`` tells about a key besides ``allow``: how many more requests fit and when
the window is empty again (the fake Discord's ``X-RateLimit-*`` headers)."""

from __future__ import annotations

import pytest

from fake_notify.server import Windows


def test_remaining_counts_down_and_back_up_as_requests_leave_the_window() -> None:
    windows = Windows([(5, 2.0), (30, 60.0)])
    assert windows.remaining("w", 0.0) == 5
    for t in (0.0, 0.5, 1.0):
        assert windows.allow("w", t)
    assert windows.remaining("w", 1.0) == 2
    assert windows.remaining("w", 2.1) == 3  # the request at 0.0 has left the 2 s window
    assert windows.remaining("other", 1.0) == 5


def test_remaining_is_the_tightest_limit() -> None:
    windows = Windows([(5, 1.0), (3, 60.0)])
    for t in (0.0, 2.0, 4.0):
        assert windows.allow("w", t)
    assert windows.remaining("w", 6.0) == 0
    assert not windows.allow("w", 6.0)


def test_reset_after_is_when_no_request_counts_any_more() -> None:
    windows = Windows([(5, 2.0)])
    assert windows.reset_after("w", 0.0) == 0.0
    windows.allow("w", 0.0)
    windows.allow("w", 0.5)
    assert windows.reset_after("w", 1.0) == pytest.approx(1.5)
    assert windows.reset_after("w", 3.0) == 0.0
