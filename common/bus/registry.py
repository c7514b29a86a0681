"""Which backend serves a ``BUS_URL`` scheme, and the one seam that builds a transport.

A backend entry names a function ``(settings) -> Transport`` by dotted path, so that an
optional backend's dependencies (aiokafka) load only when its scheme is chosen. That
function builds the backend's typed, frozen config from the service settings (reading the
backend's own variables, ``KAFKA_*``, there and only there) and the transport from the
config; nothing below it reads the environment. The settings' ``BUS_URL`` check asks
``schemes()``, so a scheme registered here is accepted there.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

from common.bus.contract import Transport, TransportConfigError


class BusSettings(Protocol):
    """What the registry reads of a service's settings (``BaseServiceSettings``; named
    structurally because ``common.settings`` asks this module which schemes exist)."""

    @property
    def bus_url(self) -> str: ...


S = TypeVar("S", bound=BusSettings)


@dataclass(frozen=True, slots=True)
class Backend:
    module: str
    factory: str  # a function of ``module``: (settings: BaseServiceSettings) -> Transport
    extra: str | None = None  # the package extra that installs its dependencies


_BACKENDS: dict[str, Backend] = {
    "redis": Backend("common.bus.redis_streams", "from_settings"),
    "rediss": Backend("common.bus.redis_streams", "from_settings"),
    "unix": Backend("common.bus.redis_streams", "from_settings"),
    "redis+sentinel": Backend("common.bus.redis_sentinel", "from_settings"),
    "kafka": Backend("common.bus.kafka.transport", "from_settings", extra="kafka"),
}


def register_transport(scheme: str, module: str, factory: str, *,
                       extra: str | None = None) -> None:
    """Serve ``scheme://`` with ``module.factory(settings) -> Transport``."""
    _BACKENDS[scheme] = Backend(module, factory, extra)


def schemes() -> frozenset[str]:
    """The ``BUS_URL`` schemes a transport can be created for."""
    return frozenset(_BACKENDS)


def create_transport(settings: S) -> Transport:
    """The transport ``settings.bus_url`` names, built from the settings (not started)."""
    scheme = urlsplit(settings.bus_url).scheme
    try:
        backend = _BACKENDS[scheme]
    except KeyError:
        raise TransportConfigError(
            f"BUS_URL scheme {scheme!r} is not supported (known: {', '.join(sorted(_BACKENDS))})"
        ) from None
    try:
        module = importlib.import_module(backend.module)
    except ImportError as exc:
        hint = (f"; install it with: pip install 'binance-alerter[{backend.extra}]'"
                if backend.extra else "")
        raise TransportConfigError(f"BUS_URL scheme {scheme!r} needs {exc.name}{hint}") from exc
    factory: Callable[[S], Transport] = getattr(module, backend.factory)
    return factory(settings)
