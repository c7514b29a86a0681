"""The bus contract every service codes against: Protocols, the records and deliveries they
pass, and the errors they raise. Which backend implements it is the registry's business
(``common/bus/registry.py``); how a backend is tuned lives in its own config, never here.

The services never see a Redis id or a Kafka offset: they publish records, receive
``Delivery`` objects and hand them back to be acknowledged. Replayed history (state rebuild)
arrives through the same ``fetch`` call, flagged ``replay``, so a consumer does not need to
know whether its backend rebuilds on start (Redis) or on partition assignment (Kafka).

The streams and their semantics: docs/architecture.md#streams.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class BusUnavailable(ConnectionError):
    """The backend cannot be reached now; the caller keeps its data and retries later."""


class TransportConfigError(ValueError):
    """``BUS_URL`` or a backend's settings cannot be used; the message names the variable."""


class OwnershipLost(Exception):
    """This group member no longer owns ``streams`` (its lease lapsed, or the group gave
    them to another member): nothing was written. Drop the work done for those streams'
    entries and do not acknowledge them; their next owner gets them again."""

    def __init__(self, streams: Collection[str]) -> None:
        self.streams = frozenset(streams)
        super().__init__(f"no longer the owner of {', '.join(sorted(self.streams))}")


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


@dataclass(frozen=True, slots=True)
class Sharing:
    """Divide a group consumer's streams among the group's live members, instead of
    reading every one of them: each stream is owned by one member at a time, no member
    owns more than ⌈streams / live members⌉, and the streams move when a member joins,
    leaves or dies. On Redis through leases (``lease_s``: a dead member's streams are free
    again after it, a stalled one stops owning them before that); on Kafka through the
    consumer group, which always divides (its session timeout bounds a takeover)."""

    lease_s: float = 5.0


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

    def owned(self) -> frozenset[str]:
        """The streams whose entries this member may process now. Without ``Sharing``:
        all of its streams. With it: those it holds, judged by its own clock, so a member
        that stalled past its lease stops before another may start. Ownership changes only
        inside ``fetch``: compare after each one; a stream that left means its state must
        go, one that arrived starts with its replay."""
        ...

    async def publish(self, records: Sequence[Record], *, sources: Collection[str]) -> None:
        """Write ``records``, the outcome of entries of the ``sources`` streams, only while
        this member still owns every one of them: on Redis the lease check and the writes
        are one server-side script (the fencing token), on Kafka a check just before.
        Raises ``OwnershipLost`` (nothing written) or, like ``Transport.publish``,
        ``BusUnavailable``."""
        ...

    async def close(self) -> None:
        """Hand back what this member holds (on Kafka: commit what was acknowledged and
        leave the group, so its partitions move now); idempotent. The transport's
        ``close`` closes its consumers too."""
        ...


@runtime_checkable
class BroadcastReader(Protocol):
    """Every reader sees every entry (the gateway), with no shared group state."""

    async def backlog(self, count: int) -> list[Delivery]:
        """The newest ``count`` entries, oldest first; later reads continue after them."""
        ...

    async def read(self, count: int, block_ms: int) -> list[Delivery]: ...

    async def close(self) -> None:
        """Release what the reader holds now (on Kafka, a consumer and its connections);
        idempotent. The reader stays usable: a later read continues where it left off."""
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
        sharing: Sharing | None = None,
    ) -> GroupConsumer:
        """A member of ``group``. ``rebuild_s``: how much acknowledged history to replay
        (flagged ``replay``) before new entries, for every stream it starts owning.
        ``sharing``: divide ``streams`` with the other members (see ``Sharing``); without
        it the member reads all of them. How entries of a vanished member come
        back is the backend's (its config: ``CLAIM_MIN_IDLE_S`` on Redis, the session
        timeout on Kafka)."""
        ...

    def broadcast_reader(self, stream: str) -> BroadcastReader: ...
