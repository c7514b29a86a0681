"""The integration tests run with every WebSocket client (``WS_CLIENT``): a module opts in
with ``pytestmark = pytest.mark.usefixtures("ws_client")``, a test of the clients themselves
takes ``ws_client`` as an argument."""

from __future__ import annotations

import pytest

from ingestor.ws_client import CLIENTS


@pytest.fixture(params=sorted(CLIENTS))
def ws_client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The client's name, set in the environment that the settings and the processes the
    test starts read."""
    name: str = request.param
    monkeypatch.setenv("WS_CLIENT", name)
    return name
