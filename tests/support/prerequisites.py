"""Outside CI a missing tool skips the tests that need it; under ``CI=true`` it fails them,
so a broken install step can never turn the suite green by skipping."""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(condition: object, what: str) -> None:
    if condition:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing under CI: {what}", pytrace=False)
    pytest.skip(f"prerequisite missing: {what}")


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    require(found, "Debian chromium (apt-get install chromium)")
    assert found is not None
    return found


# Without the background-networking flags Chromium keeps trying hosts a closed network
# refuses; the sandbox needs privileges a root CI container does not grant.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
