"""A real nginx (Debian's ``nginx`` package) started by a test on a free port, in front of
the test's gateways, with the shipped configuration.

The configuration under test is ``infra/nginx`` itself: ``render`` copies the main file
with only its paths (pid, include) swapped for a temporary directory (and the temporary
paths that Debian's build puts under ``/var/lib/nginx`` moved there too), and renders the
proxy's template as the nginx image does, substituting ``GATEWAY_UPSTREAM`` and
``PROXY_PORT`` and nothing else. In compose the upstream is a service name that resolves
to one address per replica, which nginx expands into one server each; here the one
``server`` line is expanded the same way, one per gateway address.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Final

from tests.support.prerequisites import NGINX, require_command
from tools.redis_server import free_port, wait_for_port

ROOT: Final = Path(__file__).resolve().parents[2]
NGINX_DIR: Final = ROOT / "infra" / "nginx"
MAIN_CONFIG: Final = NGINX_DIR / "nginx.conf"
TEMPLATE: Final = NGINX_DIR / "templates" / "gateway.conf.template"
_UPSTREAM_SERVER: Final = re.compile(r"^(\s*)server \$\{GATEWAY_UPSTREAM\}(.*)$", re.MULTILINE)


def nginx_binary() -> str:
    return require_command(NGINX, "nginx", shutil.which("nginx"))


def render(directory: Path, upstreams: Sequence[str], port: int) -> Path:
    """The shipped configuration, for gateways at ``upstreams`` (host:port) and a proxy
    on 127.0.0.1:``port``; the path of the main file."""
    conf_d = directory / "conf.d"
    conf_d.mkdir(parents=True, exist_ok=True)
    template = TEMPLATE.read_text()
    servers = _UPSTREAM_SERVER.findall(template)
    assert len(servers) == 1, f"{TEMPLATE.name} must name its upstream in one server line"
    indent, parameters = servers[0]
    template = _UPSTREAM_SERVER.sub(
        "\n".join(f"{indent}server {address}{parameters}" for address in upstreams), template)
    proxy = Template(template).safe_substitute(PROXY_PORT=f"127.0.0.1:{port}")
    assert "${" not in proxy, "the template uses a variable the proxy service does not set"
    (conf_d / "gateway.conf").write_text(proxy)

    main = MAIN_CONFIG.read_text()
    temp_paths = " ".join(f"{kind}_temp_path {directory / kind};"
                          for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    replacements = {
        "pid /tmp/nginx.pid;": f"pid {directory / 'nginx.pid'};",
        "include /etc/nginx/conf.d/*.conf;": f"{temp_paths} include {conf_d}/*.conf;",
        # Two cores shared by the whole suite: one nginx worker is plenty.
        "worker_processes auto;": "worker_processes 1;",
    }
    for old, new in replacements.items():
        # Exactly once: a shipped file that moved on must fail here, not test something else.
        if main.count(old) != 1:
            raise AssertionError(f"{old!r} is not in {MAIN_CONFIG.name} exactly once")
        main = main.replace(old, new)
    config = directory / "nginx.conf"
    config.write_text(main)
    return config


@dataclass
class NginxProxy:
    """nginx in the foreground, its log in ``directory``; ``stop`` ends it."""

    directory: Path
    upstreams: Sequence[str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def log_path(self) -> Path:
        return self.directory / "nginx.log"

    def start(self) -> None:
        binary = nginx_binary()
        config = render(self.directory, self.upstreams, self.port)
        with self.log_path.open("ab") as log:
            checked = subprocess.run([binary, "-t", "-p", str(self.directory), "-c", str(config)],
                                     stdout=log, stderr=subprocess.STDOUT, check=False)
            assert checked.returncode == 0, self.output()
            self.process = subprocess.Popen(
                [binary, "-p", str(self.directory), "-c", str(config), "-g", "daemon off;"],
                stdout=log, stderr=subprocess.STDOUT)
        wait_for_port("127.0.0.1", self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)  # nginx's fast shutdown
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
