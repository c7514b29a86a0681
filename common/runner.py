"""The one shape of a service, and the process lifecycle every service shares.

A service is one ``async def main(settings, stopping, runtime)``, described by a
``Service`` (its name, settings type, main and metrics address); ``python -m <service>`` is
``run_service(SERVICE)``. The runner owns the rest, identically for every service:

- settings, loaded once: a bad value exits 2 with one line naming the variable;
- logging, set up from ``LOG_LEVEL``/``LOG_FORMAT``;
- the transport: created from the settings (here only), started before ``main`` and closed
  after it, handed to ``main`` in the ``Runtime`` with the registry its metrics go on;
- the health server (``common.health``): ``/metrics`` of that registry and ``/healthz``,
  healthy while ``main`` runs and the predicate it sets in the ``Runtime`` holds;
- signals and the drain deadline, staged as in uvicorn: the first SIGTERM/SIGINT sets
  ``stopping``, which every loop watches between batches so that the batch in hand is
  finished, acknowledged and flushed; if that takes longer than ``SHUTDOWN_TIMEOUT_S``
  ``main`` is cancelled; a second signal cancels it at once;
- exit codes: a configuration error anywhere, also one raised inside a task group (it then
  arrives inside an ``ExceptionGroup``), exits 2 with one line; any other error exits 1 with
  its traceback, so that a supervisor restarts the service: a silently dead writer is worse
  than a restart.

``main`` keeps every task it starts in an ``asyncio.TaskGroup``, so that any task dying
with an error takes the whole service down.

The same, with the exit codes: docs/architecture.md#service-shape.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Generic, NoReturn, TypeVar

from prometheus_client import CollectorRegistry, Counter

from common.backoff import Backoff
from common.bus import BusUnavailable, Transport, TransportConfigError, create_transport
from common.health import HealthServer, new_registry
from common.logs import configure_logging
from common.settings import (
    BaseServiceSettings,
    SettingsError,
    address_in_use,
    load_settings,
    redact_url,
)

log = logging.getLogger(__name__)

S = TypeVar("S", bound=BaseServiceSettings)
T = TypeVar("T")
Main = Callable[[S, asyncio.Event], Coroutine[Any, Any, None]]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
CONFIG_ERRORS = (SettingsError, TransportConfigError)


class Runtime:
    """What the runner hands a service's ``main`` besides its settings and ``stopping``.

    ``healthy`` is what ``/healthz`` asks (beyond "main is running"); ``main`` replaces it
    with what says that the service does its work, e.g. "the writer task is alive".
    ``details`` is the body of ``/readyz`` beside that answer: what an operator needs to see
    of a service that runs but is not all well (the notifier: a channel that fails).
    """

    def __init__(self, transport: Transport, registry: CollectorRegistry) -> None:
        self.transport = transport
        self.registry = registry
        self.healthy: Callable[[], bool] = lambda: True
        self.details: Callable[[], Mapping[str, object]] = dict


ServiceMain = Callable[[S, asyncio.Event, Runtime], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class Service(Generic[S]):
    """A service as the runner sees it.

    ``metrics_port`` names the setting that holds its health server's port (the host is
    ``METRICS_HOST``); ``None`` for a service that serves ``/metrics`` and ``/healthz``
    itself (the gateway, on its HTTP port, from the same registry).
    """

    name: str
    settings_type: type[S]
    main: ServiceMain[S]
    metrics_port: str | None = None


class Hosted(Generic[S]):
    """One service in this process, on a transport that is started and stays the caller's:
    its health server around its ``main``. The tests run services this way, with a
    transport and a registry of their own."""

    def __init__(self, service: Service[S], settings: S, transport: Transport,
                 registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.settings = settings
        self.runtime = Runtime(transport, registry if registry is not None else new_registry())
        self.health = None if service.metrics_port is None else HealthServer(
            settings.metrics_host, getattr(settings, service.metrics_port),
            healthy=self.healthy, registry=self.runtime.registry,
            details=lambda: self.runtime.details())
        self._running = False

    @property
    def registry(self) -> CollectorRegistry:
        return self.runtime.registry

    @property
    def health_port(self) -> int:
        assert self.health is not None, f"{self.service.name} has no health server"
        return self.health.port

    def healthy(self) -> bool:
        return self._running and self.runtime.healthy()

    async def _start_health(self, health: HealthServer) -> None:
        try:
            await health.start()
        except OSError as exc:
            port_setting = str(self.service.metrics_port)
            raise address_in_use(port_setting.upper(), self.settings.metrics_host,
                                 getattr(self.settings, port_setting), exc) from None

    async def run(self, stopping: asyncio.Event) -> None:
        if self.health is not None:
            await self._start_health(self.health)
        self._running = True
        try:
            await self.service.main(self.settings, stopping, self.runtime)
        finally:
            self._running = False
            if self.health is not None:
                await self.health.stop()


async def run_on_bus(service: Service[S], settings: S, stopping: asyncio.Event) -> None:
    """The service on the transport its settings name, from start to close."""
    transport = create_transport(settings)
    await transport.start()
    try:
        await Hosted(service, settings, transport).run(stopping)
    finally:
        await transport.close()


def run_service(service: Service[S], settings: S | None = None) -> NoReturn:
    """The body of ``python -m <service>`` (with ``settings`` when the caller has loaded
    them already); never returns."""
    if settings is None:
        settings = load_or_exit(service)
    configure_logging(settings.log_level, settings.log_format, service=service.name)
    log.info("%s starting (bus %s)", service.name, redact_url(settings.bus_url))

    async def main(settings: S, stopping: asyncio.Event) -> None:
        await run_on_bus(service, settings, stopping)

    sys.exit(run_supervised(service.name, settings, main))


def load_or_exit(service: Service[S]) -> S:
    """The service's settings from the environment, or exit 2 with the one line."""
    try:
        return load_settings(service.settings_type)
    except SettingsError as exc:
        report_config_error(service.name, [exc])
        sys.exit(EXIT_CONFIG)


def run_supervised(name: str, settings: S, main: Main[S]) -> int:
    """``main`` on a fresh event loop under ``supervise``; the process exit code."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(supervise(name, settings, main))


async def supervise(name: str, settings: S, main: Main[S]) -> int:
    """Run ``main`` under the staged shutdown; the process exit code."""
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
    except Exception as exc:
        problems = config_errors(exc)
        if problems:
            report_config_error(name, problems)
            return EXIT_CONFIG
        log.exception("%s: failed", name)
        return EXIT_FAILED
    finally:
        if deadline is not None:
            deadline.cancel()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("%s stopped", name)
    return EXIT_OK


def config_errors(exc: BaseException) -> list[BaseException]:
    """The configuration errors in ``exc``: itself, or those anywhere in its (nested)
    exception groups, which is how an error raised inside a task group arrives."""
    if isinstance(exc, CONFIG_ERRORS):
        return [exc]
    if isinstance(exc, BaseExceptionGroup):
        return [found for inner in exc.exceptions for found in config_errors(inner)]
    return []


def report_config_error(name: str, problems: list[BaseException]) -> None:
    """One line on stderr, ``<service>: <what to fix>``, the same for every service and
    every path (a launcher shows it as it is)."""
    message = "; ".join(dict.fromkeys(" ".join(str(p).split()) for p in problems))
    print(f"{name}: {message}", file=sys.stderr, flush=True)


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


async def while_bus_down(operation: Callable[[], Awaitable[T]], backoff: Backoff, *,
                         stopping: asyncio.Event | None, counter: Counter | None = None,
                         what: str = "retrying") -> T | None:
    """``operation`` again and again while the bus is unavailable, with ``backoff``
    between tries (each failure logged and counted on ``counter``).

    With ``stopping`` given, give up on shutdown and return None (safe before a batch is
    taken); without it, insist until the shutdown deadline cancels the caller, since the
    batch in hand must be published and acknowledged or left pending.
    """
    while True:
        try:
            result = await operation()
        except BusUnavailable as exc:
            if counter is not None:
                counter.inc()
            delay = backoff.next_delay()
            log.warning("bus unavailable (%s); %s in %.1fs", exc, what, delay)
            if stopping is None:
                await asyncio.sleep(delay)
            elif await wait_or_stop(stopping, delay):
                return None
        else:
            backoff.reset()
            return result
