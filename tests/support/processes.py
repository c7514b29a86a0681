"""Services run as real processes (``python -m <service>``), as they are deployed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from tools.redis_server import free_port


@dataclass
class Service:
    """One service process; its output goes to a log file shown when a test fails."""

    name: str
    env: dict[str, str]
    log_dir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    # In a session (and process group) of its own, as a terminal's foreground job is.
    own_session: bool = False
    # ``python -m <module>``: the name, unless several processes run one service.
    module: str | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def start(self) -> None:
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"--- start #{self.starts} ---\n".encode())
        log.flush()
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module or self.name], env={**os.environ, **self.env},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=self.own_session)
        log.close()

    def stop(self, signum: int = signal.SIGTERM, timeout_s: float = 20.0) -> int:
        assert self.process is not None
        self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"{self.name} did not stop within {timeout_s}s") from None
        self.exit_codes.append(code)
        self.process = None
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Pipeline:
    """The three services wired to one bus and one exchange URL."""

    bus_url: str
    exchange_url: str
    log_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    gateway_port: int = field(default_factory=free_port)
    ingestor_metrics_port: int = field(default_factory=free_port)
    detector_metrics_port: int = field(default_factory=free_port)
    services: dict[str, Service] = field(default_factory=dict)

    def __post_init__(self) -> None:
        env = {
            "BUS_URL": self.bus_url,
            "BINANCE_WS_URL": self.exchange_url,
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(self.gateway_port),
            "INGESTOR_METRICS_PORT": str(self.ingestor_metrics_port),
            "DETECTOR_METRICS_PORT": str(self.detector_metrics_port),
            "METRICS_HOST": "127.0.0.1",
            "LOG_LEVEL": "INFO",
            "SHUTDOWN_TIMEOUT_S": "10",
            **self.extra_env,
        }
        for name in ("ingestor", "detector", "gateway"):
            self.services[name] = Service(name, env, self.log_dir)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.gateway_port}/ws"

    def http(self, path: str) -> str:
        return f"http://127.0.0.1:{self.gateway_port}{path}"

    def start(self) -> None:
        for service in self.services.values():
            service.start()
        self.wait_ready()

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        urls = [self.http("/readyz"),
                f"http://127.0.0.1:{self.ingestor_metrics_port}/healthz",
                f"http://127.0.0.1:{self.detector_metrics_port}/healthz"]
        deadline = time.monotonic() + timeout_s
        for url in urls:
            while not _ok(url):
                if time.monotonic() > deadline:
                    raise AssertionError(f"{url} not ready\n{self.logs()}")
                time.sleep(0.05)

    def stop(self) -> None:
        for service in self.services.values():
            if service.process is not None:
                with contextlib.suppress(AssertionError):
                    service.stop()
            service.kill()

    def logs(self) -> str:
        return "\n".join(f"===== {s.name}\n{s.output()[-6000:]}" for s in self.services.values())

    def assert_clean_exits(self) -> None:
        codes = {name: s.exit_codes for name, s in self.services.items()}
        assert all(code == 0 for c in codes.values() for code in c), (codes, self.logs())


@contextlib.asynccontextmanager
async def running(pipeline: Pipeline) -> AsyncIterator[Pipeline]:
    """Start the services, show their logs if the test fails, stop them, and insist that
    every stop (the test's own restarts included) was a clean exit 0."""
    await asyncio.to_thread(pipeline.start)
    try:
        yield pipeline
    except BaseException:
        print(pipeline.logs())
        raise
    finally:
        await asyncio.to_thread(pipeline.stop)
    pipeline.assert_clean_exits()


def service_env(**values: str) -> dict[str, str]:
    """This environment without any setting a test could inherit by accident, plus ``values``."""
    prefixes = ("BUS_", "BINANCE_", "KAFKA_", "DETECTOR_", "GATEWAY_", "INGESTOR_", "LOG_",
                "NOTIFY_", "NOTIFIER_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(values)
    return env


async def run_to_exit(service: str, env: dict[str, str], cwd: Path,
                      timeout_s: float = 60.0) -> tuple[int, str]:
    """``python -m <service>`` until it exits by itself: its exit code and its stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", service, cwd=cwd, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stderr.decode(errors="replace")


def assert_config_failure(code: int, stderr: str, service: str, variable: str) -> None:
    """Exit code 2 and one line, ``<service>: <message naming the variable>``, last; no
    traceback."""
    assert code == 2, stderr
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "nothing said"
    assert lines[-1].startswith(f"{service}: "), stderr
    assert variable in lines[-1], stderr
    assert sum(variable in line for line in lines) == 1, stderr


def wait_answering(service: Service, url: str, timeout_s: float = 20.0) -> None:
    """Until ``url`` answers 200; fails at once, with the service's log, if it exited."""
    deadline = time.monotonic() + timeout_s
    while not _ok(url):
        assert service.process is not None
        assert service.process.poll() is None, service.output()
        assert time.monotonic() < deadline, f"{url} not ready\n{service.output()}"
        time.sleep(0.05)


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def metric(url: str, name: str) -> float:
    """Sum of a metric's samples (all label sets) from a /metrics page."""
    with urllib.request.urlopen(url, timeout=2) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total
