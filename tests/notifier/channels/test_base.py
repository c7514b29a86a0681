"""What every channel shares: the HTTP backend loaded at start, not on the first alert."""

from __future__ import annotations

import subprocess
import sys


def test_the_http_clients_backend_is_loaded_when_the_channels_are_imported() -> None:
    # httpcore would load it on the first request: 40-65 ms added to the first alert
    # after every start (measured by bench.notify).
    probe = ("import sys, notifier.channels.base; "
             "print('anyio._backends._asyncio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "True"
