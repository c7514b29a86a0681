"""The bus contract every service codes against, and the registry that picks an implementation.

The services never see a Redis id or a Kafka offset: they publish records, receive
``Delivery`` objects and hand them back to be acknowledged. Replayed history (state rebuild)
arrives through the same ``fetch`` call, flagged ``replay``, so a consumer does not need to
know whether its backend rebuilds on start (Redis) or on partition assignment (Kafka).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit


class BusUnavailable(ConnectionError):
    """The backend cannot be reached now; the caller keeps its data and retries later."""


class TransportConfigError(ValueError):
    """``BUS_URL`` names a backend that cannot be used."""


@dataclass(frozen=True, slots=True)
class Record:
    stream: str
    key: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Retention:
    """How much of a stream to keep: by age for ticks (rebuild), by count for alerts (history)."""

    max_age_s: float | None = None
    max_len: int | None = None


@dataclass(slots=True, eq=False)
class Delivery:
    """One bus entry handed to a consumer.

    ``position`` is opaque to services. ``replay`` entries were already processed by an
    earlier run; they rebuild state and must not cause side effects or be acknowledged.
    """

    stream: str
    position: str
    payload: bytes
    timestamp_ms: int
    replay: bool = False
    acked: bool = field(default=False)


@dataclass(frozen=True, slots=True)
class ConsumerLag:
    behind: int  # entries in the stream not yet delivered to the group
    pending: int  # delivered but not acknowledged


@runtime_checkable
class GroupConsumer(Protocol):
    """Competing consumption with at-least-once delivery and explicit acknowledgement."""

    async def fetch(self, count: int, block_ms: int) -> list[Delivery]:
        """Replayed history first, then entries delivered before but never acknowledged,
        then new ones. Returns an empty list when nothing arrived within ``block_ms``."""
        ...

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge; idempotent, and a no-op for replayed or already acked entries."""
        ...

    async def lag(self) -> dict[str, ConsumerLag]:
        """Per stream: how far the group is behind, for metrics and alerting."""
        ...


@runtime_checkable
class BroadcastReader(Protocol):
    """Every reader sees every entry (the gateway), with no shared group state."""

    async def backlog(self, count: int) -> list[Delivery]:
        """The newest ``count`` entries, oldest first; later reads continue after them."""
        ...

    async def read(self, count: int, block_ms: int) -> list[Delivery]: ...

    async def close(self) -> None:
        """Release what the reader holds (a Kafka consumer); idempotent."""
        ...


@runtime_checkable
class Transport(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        """True when the backend answers now (readiness)."""
        ...

    async def declare(self, streams: Sequence[str], retention: Retention) -> None:
        """Make the streams exist and fix how much of them is kept."""
        ...

    async def publish(self, records: Sequence[Record]) -> None:
        """Write all records, in order per stream; raises ``BusUnavailable`` on failure,
        in which case any subset may have been written (consumers dedupe by content)."""
        ...

    def group_consumer(
        self,
        group: str,
        consumer: str,
        streams: Sequence[str],
        *,
        rebuild_s: float,
        claim_min_idle_s: float,
    ) -> GroupConsumer: ...

    def broadcast_reader(self, stream: str) -> BroadcastReader: ...


# Dotted paths so that an optional backend's dependencies load only when it is chosen.
_REGISTRY: dict[str, tuple[str, str]] = {
    "redis": ("common.bus.redis_streams", "RedisTransport"),
    "rediss": ("common.bus.redis_streams", "RedisTransport"),
    "unix": ("common.bus.redis_streams", "RedisTransport"),
    "kafka": ("common.bus.kafka.transport", "KafkaTransport"),
}
_EXTRAS = {"kafka": "kafka"}


def register_transport(scheme: str, module: str, attribute: str) -> None:
    _REGISTRY[scheme] = (module, attribute)


def create_transport(url: str, *, timeout_s: float = 10.0) -> Transport:
    scheme = urlsplit(url).scheme
    try:
        module_name, attribute = _REGISTRY[scheme]
    except KeyError:
        raise TransportConfigError(
            f"BUS_URL scheme {scheme!r} is not supported (known: {', '.join(sorted(_REGISTRY))})"
        ) from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = _EXTRAS.get(scheme)
        hint = f"; install it with: pip install 'binance-alerter[{extra}]'" if extra else ""
        raise TransportConfigError(f"BUS_URL scheme {scheme!r} needs {exc.name}{hint}") from exc
    factory = getattr(module, attribute)
    transport: Transport = factory(url, timeout_s=timeout_s)
    return transport
