"""A real Prometheus (Debian's ``prometheus`` package) started by a test on a free port,
scraping the test's services with the shipped configuration.

The configuration under test is ``infra/prometheus/prometheus.yml`` itself: ``render_config``
copies it with only the four compose targets (the gateway's and the notifier's DNS names)
swapped for static loopback addresses and the intervals shortened, and copies the rules
file beside it unchanged, so that a test never checks a configuration of its own making.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from tests.support.prerequisites import PROMETHEUS, require_command
from tools.redis_server import free_port

ROOT: Final = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR: Final = ROOT / "infra" / "prometheus"
SHIPPED_CONFIG: Final = PROMETHEUS_DIR / "prometheus.yml"
RULES_FILE: Final = PROMETHEUS_DIR / "alerts.yml"
# The compose addresses of the shipped configuration, by job.
SHIPPED_TARGETS: Final = {"ingestor": "ingestor:9101", "detector": "detector:9102",
                          "gateway": "gateway:8080", "notifier": "notifier:9103"}
SHIPPED_INTERVAL: Final = "5s"
INTERVAL_KEYS: Final = ("scrape_interval", "evaluation_interval")


def prometheus_binary() -> str:
    return require_command(PROMETHEUS, "prometheus", shutil.which("prometheus"))


def promtool_binary() -> str:
    return require_command(PROMETHEUS, "promtool", shutil.which("promtool"))


def scrape_targets(config: Mapping[str, Any]) -> dict[str, list[str]]:
    """Each job's targets (host:port): its static ones, and the names it resolves by DNS
    (each one a target per address it resolves to, the gateway's replicas)."""
    targets: dict[str, list[str]] = {}
    for job in config["scrape_configs"]:
        found = [t for static in job.get("static_configs", []) for t in static["targets"]]
        found += [f"{name}:{dns['port']}" for dns in job.get("dns_sd_configs", [])
                  for name in dns["names"]]
        targets[job["job_name"]] = found
    return targets


def render_config(directory: Path, targets: Mapping[str, str], interval: str) -> Path:
    """The shipped configuration with ``targets`` (job → host:port, as a static target in
    place of each job's compose address or DNS name) and ``interval`` in place of the
    shipped intervals; the rules file beside it."""
    config = yaml.safe_load(SHIPPED_CONFIG.read_text())
    # Exactly these: a shipped file that moved on must fail here, not test something else.
    if scrape_targets(config) != {job: [address] for job, address in SHIPPED_TARGETS.items()}:
        raise AssertionError(f"{SHIPPED_CONFIG.name} no longer scrapes {SHIPPED_TARGETS}")
    for job in config["scrape_configs"]:
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    for key in INTERVAL_KEYS:
        if config["global"][key] != SHIPPED_INTERVAL:
            raise AssertionError(f"{key} is not {SHIPPED_INTERVAL} in {SHIPPED_CONFIG.name}")
        config["global"][key] = interval
    directory.mkdir(parents=True, exist_ok=True)
    rendered = directory / SHIPPED_CONFIG.name
    rendered.write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copyfile(RULES_FILE, directory / RULES_FILE.name)
    return rendered


class PrometheusError(RuntimeError):
    """The HTTP API answered with an error (a bad query, for instance)."""


@dataclass
class PrometheusServer:
    config: Path
    data_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / "prometheus.log"

    def start(self) -> None:
        """Start without waiting (see ``wait_ready``), so the caller can start others."""
        binary = prometheus_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [binary, f"--config.file={self.config}",
                 f"--storage.tsdb.path={self.data_dir}",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.process.returncode}\n"
                                     f"{self.output()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus not ready in {timeout_s}s\n{self.output()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def api(self, path: str, **params: str) -> Any:
        """``data`` of a ``/api/v1/<path>`` answer; a PromQL error raises."""
        url = f"{self.url}/api/v1/{path}"
        body = urllib.parse.urlencode(params).encode() if params else None
        try:
            with urllib.request.urlopen(url, data=body, timeout=5) as response:
                document = json.load(response)
        except urllib.error.HTTPError as exc:  # 400/422 carry the PromQL error
            document = json.load(exc)
        if document.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {document.get('error')}")
        return document["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` now, as ``[{"metric": {...}, "value": [t, "v"]}]``."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single value of ``expr`` now; ``None`` when the result is empty."""
        result = self.query(expr)
        if not result:
            return None
        if len(result) > 1:
            raise AssertionError(f"{expr} has {len(result)} series: {result}")
        return float(result[0]["value"][1])
