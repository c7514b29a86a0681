"""The compose files as Compose itself reads them: Debian's ``docker-compose`` (v1) renders
each file combination with an env file made from ``infra/.env.example``, and the tests judge
the rendered configuration, so that anchors, merges, overrides and ``${…}`` substitution are
what Compose makes of them, not what a YAML parser guesses. No Docker engine is needed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import yaml

from tests.support.prerequisites import DOCKER_COMPOSE, require_command

REPO: Final = Path(__file__).resolve().parents[2]
INFRA: Final = REPO / "infra"
ENV_EXAMPLE: Final = INFRA / ".env.example"
DOCKERFILE: Final = INFRA / "Dockerfile"
WORKFLOWS: Final = REPO / ".github" / "workflows"

# Every file combination a user may run (README, "Deploy"): the Kafka override goes on top
# of either stack.
COMBOS: Final = {
    "dev": ("docker-compose.yml",),
    "prod": ("docker-compose.prod.yml",),
    "dev+kafka": ("docker-compose.yml", "docker-compose.kafka.yml"),
    "prod+kafka": ("docker-compose.prod.yml", "docker-compose.kafka.yml"),
}
# The Sentinel override goes on top of either stack too; judged by its own tests (the ones
# above run on COMBOS) to keep the suite's time.
SENTINEL_COMBOS: Final = {
    "dev+sentinel": ("docker-compose.yml", "docker-compose.sentinel.yml"),
    "prod+sentinel": ("docker-compose.prod.yml", "docker-compose.sentinel.yml"),
}
APP_SERVICES: Final = ("ingestor", "detector", "gateway", "notifier")
# The notifier's channels and routes: a host file mounted read-only (README, "Notifications").
NOTIFY_MOUNT: Final = "/etc/binance-alerter/notify.toml"
# The variables the notifier's file may name as ${VAR}, passed through from .env.
NOTIFY_SECRETS: Final = ("TELEGRAM_BOT_TOKEN", "DISCORD_WEBHOOK_URL", "SLACK_WEBHOOK_URL",
                         "NTFY_TOKEN", "SMTP_PASSWORD", "WEBHOOK_SECRET", "APPRISE_URL")
# The page reaches the host through the proxy in front of the gateway replicas.
PUBLISHED: Final = {"proxy": 8080, "prometheus": 9090, "grafana": 3000}

# What a test env file fills in: the values .env.example leaves for the operator to choose.
REQUIRED: Final = {
    "GRAFANA_ADMIN_PASSWORD": "a-test-password",
    "IMAGE_REPOSITORY": "ghcr.io/example/binance-alerter",
    "IMAGE_TAG": "1.2.3",
}
_COMMENTED_SETTING: Final = re.compile(r"^# ?([A-Z][A-Z0-9_]*=.*)$")


def tool(name: str) -> str | None:
    """A command from this Python's environment (the wheels' binaries) or from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def docker_compose() -> str:
    return require_command(DOCKER_COMPOSE, "docker-compose", tool("docker-compose"))


def write_env_file(path: Path, *, all_settings: bool = False, **values: str) -> Path:
    """``.env.example`` as an operator would fill it in: the required values set (``values``
    override them, or anything else), and with ``all_settings`` every commented-out
    setting switched on with its example value."""
    wanted = {**REQUIRED, **values}
    lines = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = _COMMENTED_SETTING.match(line)
        if all_settings and match:
            line = match.group(1)
        name = line.split("=", 1)[0]
        if "=" in line and not line.startswith("#") and name in wanted:
            line = f"{name}={wanted.pop(name)}"
        lines.append(line)
    lines += [f"{name}={value}" for name, value in wanted.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def compose(combo: str, env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``docker-compose --env-file ENV -f … ARGS`` from the repository root, in a clean
    environment so that nothing of the caller's shell leaks into the substitution."""
    names = COMBOS[combo] if combo in COMBOS else SENTINEL_COMBOS[combo]
    files = [arg for name in names for arg in ("-f", str(INFRA / name))]
    return subprocess.run(
        [docker_compose(), "--env-file", str(env_file), *files, *args],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(env_file.parent)},
        check=False)


def render(combo: str, env_file: Path) -> dict[str, Any]:
    """The configuration Compose would run, fully merged and substituted."""
    result = compose(combo, env_file, "config")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert isinstance(config, dict)
    return config


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment; ``None`` for a name passed through but not set."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {str(k): None if v is None else str(v) for k, v in env.items()}


def seconds(duration: str | int | float) -> float:
    """A Compose duration (``1m30s``, ``20s``, ``500ms``) in seconds."""
    if isinstance(duration, int | float):
        return float(duration)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts, duration
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def dockerfile_instructions(text: str | None = None) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs of the Dockerfile, continuation lines joined."""
    source = DOCKERFILE.read_text() if text is None else text
    joined = re.sub(r"\\\n", " ", source)
    instructions = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), " ".join(rest.split())))
    return instructions
