"""The budgets of the fuzz tests: short by default (the test suite, CI), a hundred times
longer under ``HYPOTHESIS_PROFILE=fuzz`` (``FUZZ_FACTOR=10`` for ten times).

``HYPOTHESIS_PROFILE`` names the hypothesis profile these tests start from: unset, the one
hypothesis chose (its ``ci`` profile under ``CI=true``: derandomized, no example database);
``fuzz`` is registered here (no deadline, the failing example printed as a blob to replay).
Only the fuzz tests read it; every other property test keeps its own fixed budget.
"""

from __future__ import annotations

import os
from typing import Final

import pytest
from hypothesis import HealthCheck, settings

PROFILE_VARIABLE: Final = "HYPOTHESIS_PROFILE"
FUZZ_PROFILE: Final = "fuzz"
FACTOR_VARIABLE: Final = "FUZZ_FACTOR"
DEFAULT_FACTOR: Final = 100

settings.register_profile(FUZZ_PROFILE, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])


def factor() -> int:
    """How many times the short budget: 1, unless fuzzing."""
    if os.environ.get(PROFILE_VARIABLE) != FUZZ_PROFILE:
        return 1
    return max(1, int(os.environ.get(FACTOR_VARIABLE, DEFAULT_FACTOR)))


def budget(examples: int) -> settings:
    """``examples`` examples per test (``factor()`` times as many), on the profile
    ``HYPOTHESIS_PROFILE`` names; no deadline, as the machine may be loaded."""
    name = os.environ.get(PROFILE_VARIABLE)
    parent = settings.get_profile(name) if name else settings.default
    return settings(parent, max_examples=examples * factor(),
                    deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def timeout(short_s: float = 120.0) -> pytest.MarkDecorator:
    """A pytest-timeout for a fuzz test (the suite's is 120 s), ``factor()`` times as long."""
    return pytest.mark.timeout(short_s * factor())
