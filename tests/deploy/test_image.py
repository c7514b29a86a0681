"""The Dockerfile and the workflows: clean for hadolint and actionlint, and shaped as the
deploy issue asks (one multi-stage image, non-root, with a health check; lint and tests on
pull requests; multi-arch images pushed to GHCR on main and tags only). Nothing is built
here (no Docker engine): the build context is checked by building the wheel from exactly
the files .dockerignore lets through, as the image's first stage does."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.deploy import DOCKERFILE, REPO, WORKFLOWS, dockerfile_instructions, tool
from tests.support.prerequisites import require


def run_linter(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    found = tool(name)
    require(found, f"{name} (pip install 'binance-alerter[test]')")
    assert found is not None
    return subprocess.run([found, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)


def test_hadolint_finds_nothing() -> None:
    result = run_linter("hadolint", "--no-color", "--failure-threshold", "style",
                        str(DOCKERFILE.relative_to(REPO)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (REPO / ".hadolint.yaml").exists()  # no rule switched off


def test_actionlint_finds_nothing() -> None:
    result = run_linter("actionlint", "-color=false")
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(WORKFLOWS.glob("*.yml"))


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, arguments in dockerfile_instructions():
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, arguments))
    return found


def test_dockerfile_is_one_multi_stage_non_root_image() -> None:
    builder, final = stages()
    base = re.fullmatch(r"ARG PYTHON_IMAGE=(python:3\.11-slim(?:-\w+)?)",
                        "ARG " + dict(dockerfile_instructions())["ARG"])
    assert base, "the base image is one pinned python:3.11-slim tag"
    assert builder[0] == ("FROM", "${PYTHON_IMAGE} AS builder")
    assert final[0] == ("FROM", "${PYTHON_IMAGE}")  # the venv's interpreter path holds
    final_text = " ".join(arguments for _, arguments in final)
    # No package manager run and no compiler in the final stage: only the venv is copied.
    assert not re.search(r"apt-get|apk |gcc|build-essential|pip install", final_text)
    copies = [arguments for keyword, arguments in final if keyword in {"COPY", "ADD"}]
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    (user,) = [arguments for keyword, arguments in final if keyword == "USER"]
    assert user.split(":")[0] not in {"0", "root"}
    assert "useradd --system" in final_text
    (healthcheck,) = [arguments for keyword, arguments in final if keyword == "HEALTHCHECK"]
    assert json.loads(healthcheck.split(" CMD ", 1)[1]) == [
        "python", "-m", "common.healthcheck"]
    assert ("CMD", '["python", "-m", "gateway"]') in final
    assert not [keyword for keyword, _ in final if keyword == "ENTRYPOINT"]
    assert "PYTHONUNBUFFERED=1" in final_text
    labels = " ".join(arguments for keyword, arguments in final if keyword == "LABEL")
    for label in ("title", "description", "licenses"):
        assert f"org.opencontainers.image.{label}=" in labels
    builder_text = " ".join(arguments for _, arguments in builder)
    assert 'pip install --no-cache-dir ".[kafka,notify]"' in builder_text


def context_files() -> list[Path]:
    """The files a build context from the repository root gets, by .dockerignore's rules
    (the part of Docker's pattern syntax it uses: *, **, ! and the last match wins)."""
    rules: list[tuple[bool, str, re.Pattern[str]]] = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            pattern = line.lstrip("!").rstrip("/")
            source = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(
                r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
            rules.append((negated, pattern, re.compile(source + "(?:/.*)?")))

    def excluded(name: str) -> bool:
        result = False
        for negated, _, regex in rules:
            if regex.fullmatch(name):
                result = not negated
        return result

    def may_reinclude(directory: str) -> bool:
        return any(negated and (pattern + "/").startswith(directory + "/")
                   for negated, pattern, _ in rules)

    files = []
    for root, dirs, names in os.walk(REPO):
        base = Path(root).relative_to(REPO).as_posix()
        prefix = "" if base == "." else base + "/"
        dirs[:] = [d for d in dirs
                   if not excluded(prefix + d) or may_reinclude(prefix + d)]
        files += [Path(prefix + n) for n in names if not excluded(prefix + n)]
    return sorted(files)


def test_build_context_holds_the_sources_and_nothing_else() -> None:
    files = context_files()
    tops = {path.parts[0] for path in files}
    assert tops == {"pyproject.toml", "README.md", "common", "ingestor", "detector", "gateway",
                    "notifier", "fake_exchange", "fake_notify", "tools", "frontend"}
    assert not [path for path in files if "__pycache__" in path.parts or path.name == ".env"]
    # What the builder stage copies is exactly that.
    copied = {source for keyword, arguments in stages()[0] if keyword == "COPY"
              for source in arguments.split()[:-1]}
    assert copied == {"pyproject.toml", "README.md", "common", "ingestor", "detector",
                      "gateway", "notifier", "fake_exchange", "fake_notify", "tools",
                      "frontend"}


@pytest.mark.timeout(300)
def test_the_wheel_builds_from_the_build_context(tmp_path: Path) -> None:
    """The image's `pip install .[kafka,notify]` builds this wheel: from the context alone it must
    hold every service package, the page and the health probe."""
    context = tmp_path / "context"
    for path in context_files():
        (context / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / path, context / path)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path / "dist"), str(context)],
        capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "dist").glob("binance_alerter-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("ingestor/__main__.py", "detector/__main__.py", "gateway/__main__.py",
                   "notifier/__main__.py", "notifier/channels/registry.py",
                   "common/healthcheck.py", "common/bus/kafka/transport.py", "tools/cli.py",
                   "frontend/index.html"):
        assert module in names, module


def workflow(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((WORKFLOWS / name).read_text())
    assert isinstance(loaded, dict)
    # YAML 1.1 reads the key `on` as True.
    loaded["on"] = loaded.pop(True, loaded.get("on"))
    return loaded


def steps(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in document["jobs"].values() for step in job.get("steps", [])]


def test_pull_requests_get_lint_and_tests_and_never_push() -> None:
    ci = workflow("ci.yml")
    assert "pull_request" in ci["on"]
    assert ci["on"]["push"]["branches"] == ["main"]
    assert any(step.get("run") == "bash .ci/run" for step in steps(ci))
    for step in steps(ci):
        if str(step.get("uses", "")).startswith("docker/build-push-action"):
            assert step["with"]["push"] is False
        assert not str(step.get("uses", "")).startswith("docker/login-action")
    assert ci.get("permissions") == {"contents": "read"}


def test_images_are_pushed_to_ghcr_for_main_and_tags_only() -> None:
    release = workflow("release.yml")
    assert set(release["on"]) == {"push"}
    assert release["on"]["push"] == {"branches": ["main"], "tags": ["v*"]}
    (job,) = release["jobs"].values()
    assert job["permissions"] == {"contents": "read", "packages": "write"}
    uses = {str(step.get("uses", "")).split("@")[0]: step for step in job["steps"]}
    assert {"docker/setup-qemu-action", "docker/setup-buildx-action", "docker/login-action",
            "docker/metadata-action", "docker/build-push-action"} <= set(uses)
    assert uses["docker/login-action"]["with"]["registry"] == "ghcr.io"
    assert uses["docker/login-action"]["with"]["password"] == "${{ secrets.GITHUB_TOKEN }}"
    build = uses["docker/build-push-action"]["with"]
    assert build["push"] is True
    assert build["file"] == "infra/Dockerfile"
    assert set(build["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    for document in (release, workflow("ci.yml")):
        for step in steps(document):
            if "uses" in step:  # every action pinned to a major version
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), step["uses"]
