"""``python -m common.healthcheck [SERVICE]``: the container health probe.

One image runs any of the four services, and a slim image has no ``curl``, so the probe is
Python from the same environment: it reads the service's own settings (the same variables the
service reads, so a changed port is followed) and asks that service's ``/healthz``. Exit 0
when it answers 200 within ``--timeout`` seconds, 1 otherwise, with one line saying why.

``SERVICE`` is ``ingestor``, ``detector``, ``gateway`` or ``notifier``. Without it (the
image's own ``HEALTHCHECK``, which cannot know what command a container was given) the probe
asks all of them: one container runs one service, so whichever answers is the one to judge.

``/healthz`` is liveness (200 while the service's main task runs), not readiness: an
orchestrator that restarts unhealthy containers must not restart a gateway only because
Redis is away; the gateway's ``/readyz`` says that instead.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Final

from common.settings import (
    DetectorSettings,
    GatewaySettings,
    IngestorSettings,
    NotifierSettings,
    SettingsError,
    load_settings,
)

SERVICES: Final = ("ingestor", "detector", "gateway", "notifier")
_WILDCARDS: Final = {"", "0.0.0.0", "::", "[::]"}


def _host(bind: str) -> str:
    """Where to reach a server bound to ``bind`` from inside its own container."""
    if bind in _WILDCARDS:
        return "[::1]" if ":" in bind else "127.0.0.1"
    return f"[{bind}]" if ":" in bind and not bind.startswith("[") else bind


def health_url(service: str) -> str:
    """The ``/healthz`` URL of ``service``, from the settings in the environment."""
    if service == "ingestor":
        ingestor = load_settings(IngestorSettings)
        host, port = ingestor.metrics_host, ingestor.ingestor_metrics_port
    elif service == "detector":
        detector = load_settings(DetectorSettings)
        host, port = detector.metrics_host, detector.detector_metrics_port
    elif service == "gateway":
        gateway = load_settings(GatewaySettings)
        host, port = gateway.gateway_host, gateway.gateway_port
    elif service == "notifier":
        notifier = load_settings(NotifierSettings)
        host, port = notifier.metrics_host, notifier.notifier_metrics_port
    else:
        raise ValueError(f"unknown service {service!r}; expected one of {', '.join(SERVICES)}")
    return f"http://{_host(host)}:{port}/healthz"


def probe(url: str, timeout_s: float) -> str | None:
    """``None`` when ``url`` answers 200, else the reason it is not healthy."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        return f"{url}: {getattr(exc, 'reason', exc)}"
    return None if status == 200 else f"{url}: HTTP {status}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.healthcheck",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("service", nargs="?", choices=SERVICES,
                        help="the service to probe (default: whichever answers)")
    parser.add_argument("--timeout", type=float, default=3.0, metavar="S",
                        help="seconds to wait for an answer (default 3)")
    args = parser.parse_args(argv)
    problems = []
    for service in (args.service,) if args.service else SERVICES:
        try:
            url = health_url(service)
        except SettingsError as exc:
            problems.append(f"{service}: {exc}")
            continue
        problem = probe(url, args.timeout)
        if problem is None:
            return 0
        problems.append(f"{service}: {problem}")
    print("unhealthy: " + "; ".join(problems), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
