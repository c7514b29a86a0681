"""What the compose files hand the four services is what the services accept, and every
command they run starts: each service's rendered command and environment are run here as a
real process, outside Docker, against real servers started by the tests, until the compose
health check passes, then stopped with SIGTERM as ``docker compose stop`` does."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from pydantic_settings import BaseSettings

from common.kafka_settings import KafkaSettings
from common.settings import (
    DetectorSettings,
    GatewaySettings,
    IngestorSettings,
    NotifierSettings,
    load_settings,
)
from tests.support.deploy import (
    APP_SERVICES,
    COMBOS,
    NOTIFY_MOUNT,
    NOTIFY_SECRETS,
    dockerfile_instructions,
    environment,
    render,
    seconds,
    write_env_file,
)
from tests.support.processes import metric
from tests.support.servers import KAFKA_TEST_ENV, KafkaBroker, RedisServer
from tools.redis_server import free_port, wait_for_port

SETTINGS: dict[str, type[BaseSettings]] = {
    "ingestor": IngestorSettings, "detector": DetectorSettings, "gateway": GatewaySettings,
    "notifier": NotifierSettings}
# Variables a service gets that are not its settings: the notifier's file names its
# secrets as ${VAR}, read by its configuration loader.
NOT_SETTINGS: dict[str, tuple[str, ...]] = {"notifier": NOTIFY_SECRETS}
# The port each service listens on inside its container, and the address it binds.
PORT_VARIABLES = {"ingestor": "INGESTOR_METRICS_PORT", "detector": "DETECTOR_METRICS_PORT",
                  "gateway": "GATEWAY_PORT", "notifier": "NOTIFIER_METRICS_PORT"}
# A NOTIFY_CONFIG for the started notifier, in place of the host file compose mounts: one
# signed webhook to a port nothing listens on (the notifier is healthy without a receiver).
NOTIFY_FILE = """\
[[channel]]
name = "hooks"
type = "webhook"
url = "http://127.0.0.1:{port}/hooks/deploy-test"
secret = "${{WEBHOOK_SECRET}}"

[[route]]
channels = ["hooks"]
"""
# Standard Webhooks' form: whsec_ and the base64 of the key.
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BIND_VARIABLES = ("GATEWAY_HOST", "METRICS_HOST")


def accepted(settings: type[BaseSettings]) -> set[str]:
    """The environment variables a settings class reads: its fields, with its prefix."""
    prefix = str(settings.model_config.get("env_prefix") or "")
    return {(prefix + name).upper() for name in settings.model_fields}


@pytest.fixture(scope="module")
def full_configs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Each combination rendered with every setting of .env.example switched on."""
    env_file = write_env_file(tmp_path_factory.mktemp("env") / ".env", all_settings=True)
    return {combo: render(combo, env_file) for combo in COMBOS}


@pytest.mark.parametrize("service", APP_SERVICES)
@pytest.mark.parametrize("combo", COMBOS)
def test_every_variable_passed_is_a_setting_of_the_service(
        combo: str, service: str, full_configs: dict[str, dict[str, Any]],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = environment(full_configs[combo]["services"][service])
    classes = [SETTINGS[service]]
    if urlsplit(env["BUS_URL"] or "").scheme == "kafka":
        classes.append(KafkaSettings)
    names = set().union(*(accepted(cls) for cls in classes), NOT_SETTINGS.get(service, ()))
    assert set(env) <= names, sorted(set(env) - names)
    # Every variable is set in this rendering, and each value is one the service takes.
    assert all(value is not None for value in env.values()), env
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in names:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        if name not in NOT_SETTINGS.get(service, ()):
            monkeypatch.setenv(name, str(value))
    for cls in classes:
        load_settings(cls)


def image_environment() -> dict[str, str]:
    """The ENV of the Dockerfile's final stage (PATH aside: here, this Python's)."""
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    env: dict[str, str] = {}
    for keyword, arguments in instructions[last_from:]:
        if keyword == "ENV":
            for pair in arguments.split():
                name, value = pair.split("=", 1)
                env[name] = value
    env.pop("PATH")
    return env


def runtime_environment(service_env: dict[str, str | None], *, bus_url: str,
                        exchange_port: int, home: Path) -> dict[str, str]:
    """The container's environment, with what Docker's network provides mapped to this
    machine: the bus' service name to the test server, the exchange to the fake one, the
    ports each container has to itself to free loopback ports, and the notifier's mounted
    file to one written here."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           **image_environment(),
           **{name: value for name, value in service_env.items() if value is not None}}
    assert urlsplit(env["BUS_URL"]).hostname in {"redis", "kafka"}, env["BUS_URL"]
    env["BUS_URL"] = bus_url
    if "BINANCE_WS_URL" in env:
        feed = urlsplit(env["BINANCE_WS_URL"])
        env["BINANCE_WS_URL"] = urlunsplit(
            ("ws", f"127.0.0.1:{exchange_port}", feed.path, feed.query, ""))
    for name in PORT_VARIABLES.values():
        if name in env:
            env[name] = str(free_port())
    for name in BIND_VARIABLES:
        if name in env:
            assert env[name] == "0.0.0.0", name
            env[name] = "127.0.0.1"
    if "NOTIFY_CONFIG" in env:
        assert env["NOTIFY_CONFIG"] == NOTIFY_MOUNT
        notify_file = home.parent / "notify.toml"
        notify_file.write_text(NOTIFY_FILE.format(port=free_port()))
        env.update(NOTIFY_CONFIG=str(notify_file), WEBHOOK_SECRET=WEBHOOK_SECRET)
    return env


def argv(command: list[str]) -> list[str]:
    return [sys.executable if command[0] == "python" else command[0], *command[1:]]


@contextlib.contextmanager
def fake_exchange(log_dir: Path) -> Iterator[int]:
    port = free_port()
    with (log_dir / "fake_exchange.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "fake_exchange", "--port", str(port), "--scenario", "demo",
             "--interval", "0.5", "--loop"], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def check(test: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a compose (or Dockerfile) health check as Docker would, in the container's env."""
    assert test[0] == "CMD", test
    return subprocess.run(argv(test[1:]), env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=30, check=False)


@pytest.mark.e2e
@pytest.mark.parametrize("combo", COMBOS)
def test_every_service_command_starts_healthy_and_stops_cleanly(
        combo: str, full_configs: dict[str, dict[str, Any]], tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    services = full_configs[combo]["services"]
    broker: RedisServer | KafkaBroker
    extra_env: dict[str, str] = {}
    if "kafka" in combo:
        # tansu, the broker of the tests, has no idempotent producer (real Kafka has).
        broker, extra_env = request.getfixturevalue("kafka_broker"), KAFKA_TEST_ENV
    else:
        broker = request.getfixturevalue("redis_server")
    workdir = tmp_path / "app"  # the image's empty WORKDIR
    workdir.mkdir()
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        with fake_exchange(tmp_path) as exchange_port:
            envs = {name: {**runtime_environment(
                environment(services[name]), bus_url=broker.url, exchange_port=exchange_port,
                home=tmp_path / "nonexistent"), **extra_env} for name in APP_SERVICES}
            for name in APP_SERVICES:
                assert check(services[name]["healthcheck"]["test"], envs[name],
                             workdir).returncode != 0, f"{name} healthy before it started"
                with (tmp_path / f"{name}.log").open("wb") as log:
                    processes[name] = subprocess.Popen(
                        argv(services[name]["command"]), env=envs[name], cwd=workdir,
                        stdout=log, stderr=subprocess.STDOUT)

            for name in APP_SERVICES:
                deadline = time.monotonic() + 30
                while (result := check(services[name]["healthcheck"]["test"], envs[name],
                                       workdir)).returncode != 0:
                    assert processes[name].poll() is None, (
                        f"{name} exited with {processes[name].returncode}\n" + logs(tmp_path))
                    assert time.monotonic() < deadline, result.stderr + logs(tmp_path)
                    time.sleep(0.2)

            # Wired for real: ticks reach the bus, and the gateway reads it.
            deadline = time.monotonic() + 30
            ingestor_metrics = f"http://127.0.0.1:{envs['ingestor']['INGESTOR_METRICS_PORT']}"
            gateway = f"http://127.0.0.1:{envs['gateway']['GATEWAY_PORT']}"
            while not (metric(ingestor_metrics + "/metrics", "ingestor_ticks_published_total")
                       and ready(gateway + "/readyz")):
                assert time.monotonic() < deadline, "never wired\n" + logs(tmp_path)
                time.sleep(0.2)

            # The image's own HEALTHCHECK (it names no service) judges each container too;
            # the other services' ports are pointed at nothing, as in a container of one.
            image_check = dockerfile_check()
            for name in APP_SERVICES:
                isolated = {**envs[name], **{var: str(free_port()) for other, var in
                                             PORT_VARIABLES.items() if other != name}}
                result = check(image_check, isolated, workdir)
                assert result.returncode == 0, result.stderr

            for name in APP_SERVICES:  # pipeline order, as `docker compose stop` may go
                processes[name].send_signal(signal.SIGTERM)
                grace = seconds(services[name]["stop_grace_period"])
                try:
                    code = processes[name].wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    pytest.fail(f"{name} still running {grace}s after SIGTERM\n" + logs(tmp_path))
                assert code == 0, f"{name} exited with {code}\n" + logs(tmp_path)
                assert check(services[name]["healthcheck"]["test"], envs[name],
                             workdir).returncode != 0, f"{name} healthy after it stopped"
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def dockerfile_check() -> list[str]:
    """The Dockerfile's HEALTHCHECK command, exec form."""
    (arguments,) = [a for keyword, a in dockerfile_instructions() if keyword == "HEALTHCHECK"]
    return ["CMD", *json.loads(arguments.split(" CMD ", 1)[1])]


def test_the_image_default_is_the_gateway_command(
        full_configs: dict[str, dict[str, Any]]) -> None:
    (cmd,) = [a for keyword, a in dockerfile_instructions() if keyword == "CMD"]
    assert json.loads(cmd) == full_configs["dev"]["services"]["gateway"]["command"]
    assert dockerfile_check() == ["CMD", "python", "-m", "common.healthcheck"]


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def logs(directory: Path) -> str:
    return "".join(f"\n===== {path.name}\n{path.read_text(errors='replace')[-4000:]}"
                   for path in sorted(directory.glob("*.log")))
