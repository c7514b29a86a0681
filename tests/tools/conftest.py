from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests.support.recordings import CliProcess


@pytest.fixture
def processes() -> Iterator[list[CliProcess]]:
    """Processes a test started; any still running at the end are interrupted as by Ctrl-C
    (so that ``up`` stops the services it started), and killed if that does not stop them."""
    started: list[CliProcess] = []
    yield started
    for p in started:
        if p.process.poll() is None:
            with contextlib.suppress(AssertionError):
                p.stop(timeout_s=40)
