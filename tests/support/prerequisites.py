"""Outside CI a missing tool skips the tests that need it; under ``CI=true`` it fails them,
so a broken install step can never turn the suite green by skipping. Either way the message
names what is missing and the command that installs it.

The system packages the suite drives for real are listed once, in ``SYSTEM_PACKAGES``:
``python -m tests.support.prerequisites`` (run by ``make test``, and by ``.ci/run`` before
anything is installed, hence no import of pytest at module level) says which are missing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Final

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# Other names a command goes by (Ubuntu's chromium-browser).
ALIASES: Final = {"chromium": ("chromium", "chromium-browser")}


def which(command: str) -> str | None:
    return next(filter(None, map(shutil.which, ALIASES.get(command, (command,)))), None)


@dataclass(frozen=True, slots=True)
class SystemPackage:
    """A Debian package some tests need, the commands they run from it, and which tests."""

    package: str
    commands: tuple[str, ...]
    needed_by: str

    @property
    def install(self) -> str:
        return f"sudo apt-get install {self.package}"

    def missing(self, command: str | None = None) -> str:
        what = command or self.commands[0]
        return (f"{what} not found: install the Debian package {self.package} "
                f"({self.install}); needed by {self.needed_by}")

    def present(self) -> bool:
        return all(which(c) for c in self.commands)


CHROMIUM: Final = SystemPackage(
    "chromium", ("chromium",), "the browser tests (tests/frontend, tests/gateway/test_page.py)")
PROMETHEUS: Final = SystemPackage(
    "prometheus", ("prometheus", "promtool"), "the observability tests (tests/observability)")
DOCKER_COMPOSE: Final = SystemPackage(
    "docker-compose", ("docker-compose",), "the deploy tests (tests/deploy)")
NGINX: Final = SystemPackage(
    "nginx", ("nginx",), "the reverse proxy tests (tests/deploy/test_proxy.py)")
SYSTEM_PACKAGES: Final = (CHROMIUM, PROMETHEUS, DOCKER_COMPOSE, NGINX)


def require(condition: object, what: str) -> None:
    if condition:
        return
    import pytest  # here, so that the command line below runs before pytest is installed

    if IN_CI:
        pytest.fail(f"prerequisite missing under CI: {what}", pytrace=False)
    pytest.skip(f"prerequisite missing: {what}")


def require_command(package: SystemPackage, command: str, found: str | None) -> str:
    """``found`` (the path of ``command``), or the skip/failure naming its package."""
    require(found, package.missing(command))
    assert found is not None
    return found


def chromium_path() -> str:
    return require_command(CHROMIUM, "chromium", which("chromium"))


# Without the background-networking flags Chromium keeps trying hosts a closed network
# refuses; the sandbox needs privileges a root CI container does not grant.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def missing_packages() -> list[SystemPackage]:
    return [p for p in SYSTEM_PACKAGES if not p.present()]


def report(missing: list[SystemPackage]) -> str:
    """What ``make test`` prints before the tests: nothing when every package is there."""
    if not missing:
        return ""
    consequence = ("their tests will fail (CI=true)" if IN_CI
                   else "their tests will be skipped (they fail under CI=true)")
    lines = [f"missing system packages, {consequence}:"]
    lines += [f"  {p.missing()}" for p in missing]
    lines.append(f"install them all with: sudo apt-get install "
                 f"{' '.join(p.package for p in missing)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.prerequisites",
                                     description="Say which system packages the tests miss.")
    parser.add_argument("--names", action="store_true",
                        help="print only the missing Debian package names, one per line")
    args = parser.parse_args(argv)
    missing = missing_packages()
    if args.names:
        for package in missing:
            print(package.package)
    elif missing:
        print(report(missing), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
