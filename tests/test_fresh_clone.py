"""The README's commands work as the first command on a fresh clone: every Makefile target
that runs the project plans the virtual environment and the install when ``.venv`` is
missing or older than ``pyproject.toml``, and nothing more when it is up to date (checked
with ``make -n``, which plans without running). A missing system package is named with
the command that installs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

import pytest

from tests.support import prerequisites
from tests.support.prerequisites import SYSTEM_PACKAGES

REPO: Final = Path(__file__).resolve().parents[1]
CREATE_VENV: Final = "-m venv .venv"
INSTALL: Final = '-m pip install --quiet -e ".[dev,kafka]"'


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """The files make reads, as a fresh clone has them: no ``.venv``."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def planned(tree: Path, target: str) -> list[str]:
    make = shutil.which("make")
    assert make is not None, "make is needed to run the README's commands"
    result = subprocess.run([make, "-n", target], cwd=tree, capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def index_of(lines: list[str], fragment: str) -> int:
    return next(i for i, line in enumerate(lines) if fragment in line)


def installed(tree: Path, *, stamp_age_s: float) -> None:
    """A ``.venv`` installed ``stamp_age_s`` seconds after pyproject.toml was written
    (negative: before it, i.e. pyproject.toml changed since)."""
    stamp = tree / ".venv" / ".installed"
    stamp.parent.mkdir()
    stamp.touch()
    written = time.time() - 100
    os.utime(tree / "pyproject.toml", (written, written))
    os.utime(stamp, (written + stamp_age_s, written + stamp_age_s))


@pytest.mark.parametrize(("target", "runs"), [
    ("test", ".venv/bin/python -m pytest"),
    ("test-fast", ".venv/bin/python -m pytest -n 2 --dist worksteal -m"),
    ("demo", ".venv/bin/binance-alerter up --demo"),
    ("up", ".venv/bin/binance-alerter up"),
    ("lint", ".venv/bin/lint-imports"),
    ("install", "touch .venv/.installed"),
])
def test_on_a_fresh_clone_a_target_first_creates_the_venv_and_installs(
        clone: Path, target: str, runs: str) -> None:
    lines = planned(clone, target)
    assert index_of(lines, CREATE_VENV) < index_of(lines, INSTALL) <= index_of(lines, runs)


def test_the_python_version_is_checked_before_the_venv_is_made(clone: Path) -> None:
    lines = planned(clone, "test")
    assert index_of(lines, "sys.version_info < (3, 11)") < index_of(lines, CREATE_VENV)
    assert any("needs Python 3.11 or newer" in line for line in lines)


def test_an_up_to_date_venv_is_used_as_it_is(clone: Path) -> None:
    installed(clone, stamp_age_s=10)
    lines = planned(clone, "test")
    assert not any("pip install" in line or CREATE_VENV in line for line in lines)
    assert any(".venv/bin/python -m pytest" in line for line in lines)


def test_a_venv_older_than_pyproject_is_reinstalled(clone: Path) -> None:
    installed(clone, stamp_age_s=-10)
    lines = planned(clone, "demo")
    assert index_of(lines, INSTALL) < index_of(lines, "binance-alerter up --demo")


def test_test_names_the_missing_system_packages_before_running_pytest(clone: Path) -> None:
    lines = planned(clone, "test")
    assert index_of(lines, "-m tests.support.prerequisites") < index_of(lines, "-m pytest")


def run_prerequisites(*args: str, ci: bool) -> subprocess.CompletedProcess[str]:
    """The report as ``make test`` prints it, on a PATH where none of the tools is found."""
    env = {**os.environ, "PATH": "/nonexistent", "CI": "true" if ci else ""}
    return subprocess.run([sys.executable, "-m", "tests.support.prerequisites", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=30,
                          check=True)


@pytest.mark.parametrize("ci", [False, True])
def test_the_report_names_each_missing_package_and_its_install_command(ci: bool) -> None:
    report = run_prerequisites(ci=ci).stderr
    for package in SYSTEM_PACKAGES:
        assert f"install the Debian package {package.package} " in report
        assert f"sudo apt-get install {package.package})" in report
    assert "sudo apt-get install chromium prometheus docker-compose nginx" in report
    assert ("will fail" if ci else "will be skipped") in report


def test_ci_reads_the_package_names_alone() -> None:
    names = run_prerequisites("--names", ci=True).stdout.split()
    assert names == ["chromium", "prometheus", "docker-compose", "nginx"]


@pytest.mark.parametrize(("package", "command"), [
    (prerequisites.CHROMIUM, "chromium"),
    (prerequisites.PROMETHEUS, "promtool"),
    (prerequisites.DOCKER_COMPOSE, "docker-compose"),
    (prerequisites.NGINX, "nginx"),
])
def test_a_test_that_misses_a_package_says_which_and_how_to_install_it(
        monkeypatch: pytest.MonkeyPatch, package: prerequisites.SystemPackage,
        command: str) -> None:
    monkeypatch.setattr(prerequisites, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        prerequisites.require_command(package, command, None)
    assert f"{command} not found" in str(skipped.value)
    assert f"sudo apt-get install {package.package}" in str(skipped.value)
    monkeypatch.setattr(prerequisites, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception) as failed:
        prerequisites.require_command(package, command, None)
    assert f"sudo apt-get install {package.package}" in str(failed.value)
