from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.recordings import CliProcess


@pytest.fixture
def processes() -> Iterator[list[CliProcess]]:
    """Processes a test started; any still running at the end are killed."""
    started: list[CliProcess] = []
    yield started
    for p in started:
        if p.process.poll() is None:
            p.process.kill()
            p.process.wait()
