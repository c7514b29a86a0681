"""Real servers started by tests on free ports."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from common.redis_server import free_port, start_redis_server


@dataclass
class RedisServer:
    """A real Redis-compatible server that a test can stop and restart on the same port."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = start_redis_server(self.port, self.data_dir)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()
