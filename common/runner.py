"""Process lifecycle shared by the three services.

Shutdown is staged, as in uvicorn: the first SIGTERM/SIGINT sets ``stopping``, which every
loop watches between batches so that the batch in hand is finished, acknowledged and
flushed; if that takes longer than ``SHUTDOWN_TIMEOUT_S`` the service task is cancelled; a
second signal cancels at once. Any task that dies with an exception takes the whole
service down (non-zero exit) so that a supervisor restarts it: a silently dead writer is
worse than a restart.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from common.bus import TransportConfigError
from common.logs import configure_logging
from common.settings import BaseServiceSettings, SettingsError, load_settings, redact_url

log = logging.getLogger(__name__)

S = TypeVar("S", bound=BaseServiceSettings)
ServiceMain = Callable[[S, asyncio.Event], Coroutine[Any, Any, None]]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


def run_service(name: str, settings_type: type[S], main: ServiceMain[S]) -> None:
    """Entry point body of ``python -m <service>``; never returns."""
    try:
        settings = load_settings(settings_type)
    except SettingsError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    configure_logging(settings.log_level, settings.log_format, service=name)
    log.info("%s starting (bus %s)", name, redact_url(settings.bus_url))
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        code = runner.run(supervise(name, settings, main))
    sys.exit(code)


async def supervise(name: str, settings: S, main: ServiceMain[S]) -> int:
    stopping = asyncio.Event()
    task = asyncio.create_task(main(settings, stopping), name=name)
    loop = asyncio.get_running_loop()
    signals_seen = 0
    deadline: asyncio.TimerHandle | None = None

    def on_signal(signum: int) -> None:
        nonlocal signals_seen, deadline
        signals_seen += 1
        if signals_seen == 1:
            log.info("%s: %s received, draining (deadline %.0fs)", name,
                     signal.Signals(signum).name, settings.shutdown_timeout_s)
            stopping.set()
            deadline = loop.call_later(settings.shutdown_timeout_s, _expire, task, name)
        else:
            log.warning("%s: second signal, stopping now", name)
            task.cancel("forced")

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await task
    except asyncio.CancelledError:
        if signals_seen == 0:
            raise
        log.warning("%s: stopped before draining finished", name)
        return EXIT_FAILED
    except TransportConfigError as exc:
        log.error("%s: %s", name, exc)
        return EXIT_CONFIG
    except Exception:
        log.exception("%s: failed", name)
        return EXIT_FAILED
    finally:
        if deadline is not None:
            deadline.cancel()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("%s stopped", name)
    return EXIT_OK


def _expire(task: asyncio.Task[None], name: str) -> None:
    log.warning("%s: shutdown deadline passed, cancelling", name)
    task.cancel("shutdown deadline")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def wait_or_stop(stopping: asyncio.Event, seconds: float) -> bool:
    """Sleep that ends early on shutdown; True when shutdown was requested."""
    try:
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True
