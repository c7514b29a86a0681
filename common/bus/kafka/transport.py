"""Kafka implementation of the bus contract (aiokafka), chosen by ``BUS_URL=kafka://host:port``.

Topology. Every stream is a topic of the same name: ``ticks.0`` … ``ticks.{P-1}``,
``alerts``, ``rules``. A topic is created when missing with ``KAFKA_TOPIC_PARTITIONS``
partitions (default 1) and ``KAFKA_REPLICATION_FACTOR``; with one partition a stream is one
ordered log, exactly like a Redis stream, so the partitioning by symbol stays the
ingestor's ``crc32(symbol) % TICK_PARTITIONS``, identical on both transports. With more
partitions a record goes to ``crc32(key) % KAFKA_TOPIC_PARTITIONS`` (order is then kept per
key: per symbol for ``alerts``; a ``ticks`` entry is keyed by its first symbol, so keep ticks
at one partition per topic and scale them with ``TICK_PARTITIONS``). The configured count,
not the topic's actual one, decides where records go: a broker that auto-creates topics
with its own default (``tansu`` makes four) cannot scatter a stream.

Retention. Ticks are kept by age (``retention.ms`` = ``TICKS_RETENTION_S``), set when the
topic is created. A Kafka log cannot be capped by count, so ``alerts`` and ``rules`` get a
generous ``retention.ms`` (a week); the gateway's ``backlog(N)`` still serves the newest N
by offsets, so what a trader sees is the same as on Redis.

Consumption. The detector's group consumer is an aiokafka group member with manual
commits; its replay, acknowledgement and rebalance rules are on ``KafkaGroupConsumer``.
Broadcast readers (the gateway) are plain consumers with no group: each one reads every
partition from its own positions.

Failures. Every broker failure reaches the caller as ``BusUnavailable`` (the services wait
and retry) or is retried inside; a setting or a permission the broker refuses is a
``TransportConfigError``. A broker that lost its state (the in-memory ``tansu`` after a
restart) is recovered from: declared topics are checked at most once a second and created
again when missing, consumers follow logs whose offsets went back, and a producer that
broke is replaced.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import urlsplit
from zlib import crc32

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka import errors as kafka_errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.helpers import create_ssl_context
from aiokafka.structs import TopicPartition

from common.bus.contract import (
    BusUnavailable,
    ConsumerLag,
    Delivery,
    Record,
    Retention,
    TransportConfigError,
)
from common.settings import KafkaSettings, SettingsError, load_settings

log = logging.getLogger(__name__)

DEFAULT_PORT: Final = 9092
# Declared topics are re-checked this often (and created again when a broker lost them).
TOPIC_CHECK_S: Final = 1.0
# Streams capped by count (alerts, rules) are kept this long instead: see the module doc.
COUNT_CAPPED_RETENTION_MS: Final = 7 * 24 * 3600 * 1000
PING_TIMEOUT_S: Final = 2.0
# A commit normally takes a millisecond; one that hangs is retried by the caller instead.
COMMIT_TIMEOUT_S: Final = 5.0
# Consecutive failed publishes after which the producer is replaced even if it looks fine.
PRODUCER_REBUILD_AFTER: Final = 3
# aiokafka logs every failed reconnect at ERROR, dozens a second during an outage.
LIBRARY_LOG_INTERVAL_S: Final = 30.0

_TOPIC_EXISTS: Final = kafka_errors.TopicAlreadyExistsError.errno
_REFUSED: Final = (
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.GroupAuthorizationFailedError,
    kafka_errors.ClusterAuthorizationFailedError,
    kafka_errors.SaslAuthenticationFailed,
    kafka_errors.AuthenticationFailedError,
    kafka_errors.AuthenticationMethodNotSupported,
    kafka_errors.UnsupportedSaslMechanismError,
)
_CREATE_SETTINGS: Final = {
    kafka_errors.InvalidReplicationFactorError.errno: "KAFKA_REPLICATION_FACTOR",
    kafka_errors.InvalidReplicationAssignmentError.errno: "KAFKA_REPLICATION_FACTOR",
    kafka_errors.InvalidPartitionsError.errno: "KAFKA_TOPIC_PARTITIONS",
    kafka_errors.InvalidConfigurationError.errno: "TICKS_RETENTION_S",
    kafka_errors.PolicyViolationError.errno: "KAFKA_TOPIC_PARTITIONS/KAFKA_REPLICATION_FACTOR",
}
# The group moved on: a commit for it is not ours to make any more.
_GROUP_MOVED: Final = (kafka_errors.CommitFailedError, kafka_errors.IllegalStateError)


def bootstrap_servers(url: str) -> list[str]:
    """``kafka://h1:9092,h2:9092`` → ``["h1:9092", "h2:9092"]``; the port defaults to 9092."""
    netloc = urlsplit(url).netloc.rsplit("@", 1)[-1]
    servers = []
    for host in filter(None, (h.strip() for h in netloc.split(","))):
        servers.append(host if host.rsplit("]", 1)[-1].count(":") else f"{host}:{DEFAULT_PORT}")
    if not servers:
        raise TransportConfigError(f"BUS_URL {url!r} names no broker (kafka://host:port)")
    return servers


@asynccontextmanager
async def _translated(what: str, timeout_s: float) -> AsyncIterator[None]:
    """Bound an operation in time and give its failure the contract's meaning."""
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except (BusUnavailable, TransportConfigError):
        raise
    except _REFUSED as exc:
        raise TransportConfigError(
            f"kafka refused {what}: {exc!r} (check KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and "
            "the ACLs of this principal)") from exc
    except TimeoutError as exc:
        raise BusUnavailable(f"kafka: {what} timed out after {timeout_s:g}s") from exc
    except (kafka_errors.KafkaError, OSError) as exc:
        raise BusUnavailable(f"kafka: {what} failed: {exc!r}") from exc


class _QuietLibrary(logging.Filter):
    """Let one record per message template through per interval: aiokafka reports each
    failed reconnect at ERROR, and the services already log an outage once, with backoff."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = time.monotonic()
        if now - self._last.get(key, -math.inf) < LIBRARY_LOG_INTERVAL_S:
            return False
        if len(self._last) > 1000:  # bounded: templates are few, but be sure
            self._last.clear()
        self._last[key] = now
        return True


_library_filter = _QuietLibrary()


def _quiet_library_logs() -> None:
    # A filter on a logger does not see its children's records: put it on each of them.
    names = [name for name in logging.root.manager.loggerDict
             if name == "aiokafka" or name.startswith("aiokafka.")]
    for name in names:
        library_logger = logging.getLogger(name)
        if _library_filter not in library_logger.filters:
            library_logger.addFilter(_library_filter)


class _StablePartitioner:
    """``crc32(key) % KAFKA_TOPIC_PARTITIONS``, whatever count the topic really has."""

    def __init__(self, partitions: int) -> None:
        self._partitions = partitions

    def __call__(self, key: bytes | None, all_partitions: list[int],
                 available: list[int]) -> int:
        ordered = sorted(all_partitions)
        spread = min(self._partitions, len(ordered))
        if spread <= 1 or key is None:
            return ordered[0]
        return ordered[crc32(key) % spread]


class KafkaTransport:
    """The bus on Kafka. Clients are made lazily, so a service starts (and reports itself
    not ready) while the brokers are still down, as on Redis."""

    def __init__(self, url: str, *, timeout_s: float = 10.0,
                 settings: KafkaSettings | None = None) -> None:
        if settings is None:
            try:
                settings = load_settings(KafkaSettings)
            except SettingsError as exc:
                raise TransportConfigError(str(exc)) from None
        self.settings = settings
        self.servers = bootstrap_servers(url)
        self.timeout_s = timeout_s
        try:
            self._security = _security_options(settings)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise TransportConfigError(
                f"KAFKA_SSL_CAFILE/KAFKA_SSL_CERTFILE/KAFKA_SSL_KEYFILE cannot be used: {exc}"
            ) from None
        self._retention: dict[str, Retention] = {}
        self._topics: dict[str, int] = {}  # topics this transport writes → partitions
        self._seen: dict[str, int] = {}  # every topic asked about → partitions (0: missing)
        self._checked_at = -math.inf
        self._check_lock = asyncio.Lock()
        self._admin: AIOKafkaAdminClient | None = None
        self._admin_lock = asyncio.Lock()
        self._producer: AIOKafkaProducer | None = None
        self._producer_lock = asyncio.Lock()
        self._publish_failures = 0
        self._readers: list[KafkaGroupConsumer | KafkaBroadcastReader] = []
        _quiet_library_logs()

    # -- clients ---------------------------------------------------------------------------

    def client_options(self) -> dict[str, Any]:
        """Options every aiokafka client of this transport shares."""
        return {"bootstrap_servers": self.servers, **self._security}

    @property
    def request_timeout_ms(self) -> int:
        return int(self.timeout_s * 1000)

    async def _admin_client(self, timeout_s: float | None = None) -> AIOKafkaAdminClient:
        async with self._admin_lock:
            if self._admin is None:
                admin = AIOKafkaAdminClient(request_timeout_ms=self.request_timeout_ms,
                                            **self.client_options())
                try:
                    async with _translated("connecting", timeout_s or self.timeout_s):
                        await admin.start()
                except BaseException:
                    await _bounded(admin.close(), self.timeout_s, "admin client close")
                    raise
                self._admin = admin
            return self._admin

    async def _producer_client(self) -> AIOKafkaProducer:
        async with self._producer_lock:
            if self._producer is None:
                settings = self.settings
                producer = AIOKafkaProducer(
                    acks="all",
                    enable_idempotence=settings.idempotence,
                    linger_ms=settings.linger_ms,
                    max_batch_size=settings.batch_bytes,
                    max_request_size=max(settings.batch_bytes, 1024 * 1024),
                    partitioner=_StablePartitioner(settings.topic_partitions),
                    request_timeout_ms=self.request_timeout_ms,
                    **self.client_options(),
                )
                try:
                    async with _translated("starting the producer", self.timeout_s):
                        await producer.start()
                except BusUnavailable as exc:
                    await _bounded(producer.stop(), self.timeout_s, "producer stop")
                    refused = exc.__cause__
                    if settings.idempotence and isinstance(
                            refused, kafka_errors.BrokerResponseError):
                        raise TransportConfigError(
                            f"kafka refused an idempotent producer ({refused!r}); set "
                            "KAFKA_IDEMPOTENCE=false for a broker without it") from exc
                    raise
                except BaseException:
                    await _bounded(producer.stop(), self.timeout_s, "producer stop")
                    raise
                self._producer = producer
            return self._producer

    async def _replace_producer(self, producer: AIOKafkaProducer) -> None:
        """Drop a producer that failed; the next publish makes a fresh one."""
        async with self._producer_lock:
            if self._producer is producer:
                self._producer = None
        await _bounded(producer.stop(), self.timeout_s, "producer stop")

    # -- contract --------------------------------------------------------------------------

    async def start(self) -> None:
        """Nothing to do: clients connect on first use, so a service can start (and say it
        is not ready) while the brokers are down, instead of crash-looping."""

    async def close(self) -> None:
        readers, self._readers = list(self._readers), []
        for reader in readers:
            await reader.close()
        producer, self._producer = self._producer, None
        if producer is not None:
            await _bounded(producer.stop(), self.timeout_s, "producer stop")
        admin, self._admin = self._admin, None
        if admin is not None:
            await _bounded(admin.close(), self.timeout_s, "admin client close")

    async def ping(self) -> bool:
        """A metadata request with a short timeout: True when a broker answers now."""
        timeout_s = min(self.timeout_s, PING_TIMEOUT_S)
        try:
            admin = await self._admin_client(timeout_s)
            async with _translated("ping", timeout_s):
                await admin.list_topics()
        except (BusUnavailable, TransportConfigError):
            return False
        return True

    async def declare(self, streams: Sequence[str], retention: Retention) -> None:
        """Create the topics now if the brokers answer, else on first use (a service
        must be able to start while Kafka is down, as it can with Redis)."""
        for stream in streams:
            self._retention[stream] = retention
        try:
            await self.ensure_topics(streams, force=True)
        except BusUnavailable as exc:
            log.warning("topics %s will be created on first use: %s", ", ".join(streams), exc)

    async def ensure_topics(self, streams: Iterable[str], *, force: bool = False,
                            create: bool = True) -> dict[str, int]:
        """Partitions of each stream's topic, creating the topics that are missing.

        Cheap on the hot path: the broker is asked at most every ``TOPIC_CHECK_S`` unless a
        topic is new to this transport or ``force``. A check covers every topic the
        transport ever wrote or declared, so a broker that forgot them all gets them all
        back at once. With ``create=False`` (readers, which do not know how a stream should
        be kept) a missing topic is reported with 0 partitions and left to its writers. The
        listing request names no topic, because naming one makes many brokers create it
        with their own defaults.
        """
        wanted = list(dict.fromkeys(streams))
        async with self._check_lock:
            known = {**self._seen, **self._topics}
            fresh = time.monotonic() - self._checked_at < TOPIC_CHECK_S
            if fresh and not force and all(known.get(name) for name in wanted):
                return {name: known[name] for name in wanted}
            admin = await self._admin_client()
            async with _translated("listing topics", self.timeout_s):
                listing = await admin.describe_topics(None)
            existing = {t["topic"]: len(t["partitions"]) for t in listing
                        if t.get("error_code", 0) == 0 and t.get("partitions")}
            owned = list(dict.fromkeys([*self._topics, *(wanted if create else ())]))
            missing = [name for name in owned if name not in existing]
            if missing:
                await self._create(admin, missing)
                existing.update(dict.fromkeys(missing, self.settings.topic_partitions))
            for name in owned:
                self._topics[name] = existing[name]
            for name in wanted:
                self._seen[name] = existing.get(name, 0)
            self._checked_at = time.monotonic()
            return {name: existing.get(name, 0) for name in wanted}

    def topics_suspect(self) -> None:
        """Something said a topic is unknown: check (and re-create) on the next occasion."""
        self._checked_at = -math.inf

    def new_topic(self, name: str) -> NewTopic:
        """The topic as this transport creates it: partitions, replication, retention."""
        retention = self._retention.get(name)
        configs: dict[str, str] = {}
        if retention is not None and retention.max_age_s is not None:
            configs["retention.ms"] = str(int(retention.max_age_s * 1000))
        elif retention is not None and retention.max_len is not None:
            configs["retention.ms"] = str(COUNT_CAPPED_RETENTION_MS)
        return NewTopic(name, self.settings.topic_partitions,
                        self.settings.replication_factor, topic_configs=configs)

    async def _create(self, admin: AIOKafkaAdminClient, names: list[str]) -> None:
        async with _translated("creating topics", self.timeout_s):
            response = await admin.create_topics([self.new_topic(n) for n in names],
                                                 timeout_ms=self.request_timeout_ms)
        for row in response.topic_errors:
            topic, code, message = row[0], row[1], row[2] if len(row) > 2 else None
            if code == 0:
                log.info("created topic %s (%s)", topic, _describe_topic(self.new_topic(topic)))
            elif code != _TOPIC_EXISTS:
                error = kafka_errors.for_code(code)
                setting = _CREATE_SETTINGS.get(code)
                detail = f"{error.__name__}: {message or error.description}"
                if setting is not None:
                    raise TransportConfigError(
                        f"kafka refused to create topic {topic} ({detail}); check {setting}")
                if issubclass(error, _REFUSED):
                    raise TransportConfigError(
                        f"kafka refused to create topic {topic} ({detail}); create it "
                        "beforehand or grant this principal CREATE")
                raise BusUnavailable(f"kafka could not create topic {topic}: {detail}")

    async def publish(self, records: Sequence[Record]) -> None:
        """Send every record and wait for all of them (``acks=all``).

        All records are handed to the producer before the first one is awaited, so one call
        becomes one batch per partition (``linger_ms`` 0 costs no batching here). On failure
        any subset may have been written, as the contract allows; after a failure the broker
        itself reported, or a few in a row, the producer is replaced, since an idempotent
        producer whose broker lost its state stays broken.
        """
        if not records:
            return
        await self.ensure_topics({record.stream for record in records})
        producer = await self._producer_client()
        futures: list[asyncio.Future[Any]] = []
        try:
            async with _translated("publishing", self.timeout_s):
                for record in records:
                    futures.append(await producer.send(
                        record.stream, record.payload, key=record.key.encode()))
                await asyncio.wait(futures)
                for future in futures:
                    future.result()
        except BusUnavailable as exc:
            self._publish_failures += 1
            answered = isinstance(exc.__cause__, kafka_errors.BrokerResponseError)
            if isinstance(exc.__cause__, kafka_errors.UnknownTopicOrPartitionError):
                self.topics_suspect()
            if answered or self._publish_failures >= PRODUCER_REBUILD_AFTER:
                self._publish_failures = 0
                log.warning("replacing the kafka producer after: %s", exc)
                await self._replace_producer(producer)
            raise
        self._publish_failures = 0

    def group_consumer(self, group: str, consumer: str, streams: Sequence[str], *,
                       rebuild_s: float, claim_min_idle_s: float) -> KafkaGroupConsumer:
        """``claim_min_idle_s`` has no Kafka meaning: a dead member's partitions go to the
        others after ``KAFKA_SESSION_TIMEOUT_MS``, from its last committed offset."""
        reader = KafkaGroupConsumer(self, group, consumer, streams, rebuild_s=rebuild_s)
        self._readers.append(reader)
        return reader

    def broadcast_reader(self, stream: str) -> KafkaBroadcastReader:
        return KafkaBroadcastReader(self, stream)

    def opened(self, reader: KafkaBroadcastReader) -> None:
        """A reader holds a consumer now: the transport closes it if the reader does not."""
        self._readers.append(reader)

    def closed(self, reader: KafkaBroadcastReader) -> None:
        with suppress(ValueError):
            self._readers.remove(reader)


@dataclass(slots=True, eq=False)
class KafkaDelivery(Delivery):
    """A delivery that remembers where it came from, for the commit."""

    partition: int = 0
    offset: int = 0
    epoch: int = 0

    @property
    def topic_partition(self) -> TopicPartition:
        return TopicPartition(self.stream, self.partition)


Phase = Literal["probe", "replay", "live"]


@dataclass(slots=True)
class _Partition:
    """What one assigned partition owes: replay up to the committed offset, then commits."""

    epoch: int
    committed: int | None  # the group's committed offset (None: never committed)
    phase: Phase = "live"
    replay_until: int = 0  # records below this offset were processed by an earlier run
    replay_from_ms: int = 0  # replayed records older than this are not needed
    next_offset: int = 0  # one past the last live record handed out
    unacked: set[int] = field(default_factory=set)

    def commit_target(self) -> int | None:
        """Offset to commit: the oldest delivered-but-unacknowledged one, else one past the
        newest handed out; None when that would not move the committed offset forward."""
        target = min(self.unacked) if self.unacked else self.next_offset
        if target <= (self.committed or 0):
            return None
        return target


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: KafkaGroupConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._owner.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self._owner.assigned(set(assigned))


class KafkaGroupConsumer:
    """Group member with the contract's replay → pending → new order.

    Commit: ``ack`` commits exactly ``offset + 1`` of the newest acknowledged record per
    partition (the oldest unacknowledged offset if the caller acknowledged out of order),
    never moving a committed offset back; replayed deliveries are never committed.

    Assignment: for each partition with a committed offset C the windows are rebuilt. The
    record at C − 1 (the last one processed) gives the time t; the consumer seeks to the
    offset for time ``t − rebuild_s`` and delivers ``[that, C)`` flagged ``replay``, then
    everything from C live (records delivered before but never committed included). t is
    ``now`` for a detector that was just restarted; taking it from the log also rebuilds
    the right window after a long downtime, as the Redis transport does. A broker that
    answers ``offsets_for_times`` with timestamp −1 or no offset (``tansu``) is read from
    the beginning instead, skipping records older than wanted by their own timestamps.
    Partitions without a rebuild are paused meanwhile, so replay comes first.

    Revocation: the batch in hand is waited for (bounded) and what was acknowledged is
    committed before the partitions go; acknowledgements of deliveries from partitions
    this member no longer owns are no-ops (the new owner gets them again).
    """

    def __init__(self, transport: KafkaTransport, group: str, consumer: str,
                 streams: Sequence[str], *, rebuild_s: float) -> None:
        self._transport = transport
        self._group = group
        self._name = consumer
        self._streams = list(dict.fromkeys(streams))
        self._rebuild_ms = int(rebuild_s * 1000)
        self._consumer: AIOKafkaConsumer | None = None
        self._start_lock = asyncio.Lock()
        self._epoch = 0
        self._parts: dict[TopicPartition, _Partition] = {}
        self._rebuilding: set[TopicPartition] = set()
        self._rebuild_progress = 0.0
        self._assigned = asyncio.Event()
        self._acked = asyncio.Condition()
        settings = transport.settings
        self._timeout_s = transport.timeout_s
        # The batch in hand must be finished within the rebalance (= session) timeout.
        self._revoke_wait_s = min(transport.timeout_s, settings.session_timeout_ms / 2000)

    async def _ready(self) -> AIOKafkaConsumer:
        async with self._start_lock:
            if self._consumer is not None:
                return self._consumer
            await self._transport.ensure_topics(self._streams)
            settings = self._transport.settings
            consumer = AIOKafkaConsumer(
                group_id=self._group,
                client_id=self._name,
                enable_auto_commit=False,
                auto_offset_reset="earliest",  # a new group sees what was written before it
                session_timeout_ms=settings.session_timeout_ms,
                heartbeat_interval_ms=settings.heartbeat_interval_ms,
                fetch_max_wait_ms=settings.fetch_max_wait_ms,
                # A JoinGroup may be held by the broker for up to the rebalance timeout.
                request_timeout_ms=max(self._transport.request_timeout_ms,
                                       settings.session_timeout_ms + 5000),
                **self._transport.client_options(),
            )
            try:
                async with _translated("joining the consumer group", self._timeout_s):
                    await consumer.start()
            except BaseException:
                await _stop_consumer(consumer, self._timeout_s)
                raise
            # Before subscribing: the assignment callback works on self._consumer.
            self._consumer = consumer
            consumer.subscribe(self._streams, listener=_Listener(self))
            return consumer

    async def close(self) -> None:
        """Commit what was acknowledged and leave the group (its partitions move now)."""
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        offsets = self._commit_targets(self._parts)
        if offsets:
            with suppress(BusUnavailable, TransportConfigError, *_GROUP_MOVED):
                async with _translated("committing", COMMIT_TIMEOUT_S):
                    await consumer.commit(offsets)
        await _stop_consumer(consumer, self._timeout_s)

    # -- rebalance ---------------------------------------------------------------------------

    async def revoked(self, revoked: set[TopicPartition]) -> None:
        """Finish the batch in hand, commit what was acknowledged, forget the partitions."""
        mine = {tp: self._parts[tp] for tp in revoked if tp in self._parts}
        if any(state.unacked for state in mine.values()):
            log.info("partitions %s revoked: waiting up to %.1fs for the batch in hand",
                     _names(mine), self._revoke_wait_s)
            with suppress(TimeoutError):
                async with self._acked:
                    await asyncio.wait_for(self._acked.wait_for(
                        lambda: not any(state.unacked for state in mine.values())),
                        self._revoke_wait_s)
        offsets = self._commit_targets(mine)
        consumer = self._consumer
        if offsets and consumer is not None:
            try:
                async with _translated("committing on revocation", COMMIT_TIMEOUT_S):
                    await consumer.commit(offsets)
            except (BusUnavailable, TransportConfigError, *_GROUP_MOVED) as exc:
                log.warning("could not commit revoked partitions (they will be delivered "
                            "again to their next owner): %s", exc)
        self._epoch += 1
        for tp in revoked:
            self._parts.pop(tp, None)
            self._rebuilding.discard(tp)

    async def assigned(self, assigned: set[TopicPartition]) -> None:
        """Set up each new partition: replay up to its committed offset, or start live."""
        consumer = self._consumer
        self._epoch += 1
        self._parts.clear()
        self._rebuilding.clear()
        if consumer is None:
            return
        for tp in sorted(assigned):
            try:
                async with _translated("reading the committed offset", self._timeout_s):
                    committed = await consumer.committed(tp)
            except (BusUnavailable, TransportConfigError) as exc:
                log.warning("no committed offset for %s (%s): reading it without a rebuild",
                            _name(tp), exc)
                committed = None
            state = _Partition(self._epoch, committed, next_offset=committed or 0)
            if committed and self._rebuild_ms > 0:
                state.phase = "probe"
                state.replay_until = committed
                with suppress(kafka_errors.KafkaError):
                    # The fetcher positions new partitions itself; let it finish first, or
                    # it could undo the seek.
                    async with asyncio.timeout(self._timeout_s):
                        await consumer.position(tp)
                consumer.seek(tp, committed - 1)
                self._rebuilding.add(tp)
            self._parts[tp] = state
        self._pause_for_rebuild(consumer)
        log.info("assigned %s%s", _names(self._parts) or "no partitions",
                 f"; rebuilding {_names(self._rebuilding)}" if self._rebuilding else "")
        self._assigned.set()

    def _pause_for_rebuild(self, consumer: AIOKafkaConsumer) -> None:
        if self._rebuilding:
            self._rebuild_progress = time.monotonic()
            consumer.pause(*(tp for tp in self._parts if tp not in self._rebuilding))
        else:
            consumer.resume(*self._parts)

    # -- reading -----------------------------------------------------------------------------

    async def fetch(self, count: int, block_ms: int) -> list[Delivery]:
        consumer = await self._ready()
        await self._transport.ensure_topics(self._streams)
        if not self._assigned.is_set():
            # The first join takes a rebalance; waiting for it keeps "replay first" true.
            with suppress(TimeoutError):
                await asyncio.wait_for(self._assigned.wait(),
                                       max(block_ms / 1000, self._timeout_s))
            if not self._assigned.is_set():
                return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block_ms / 1000
        while True:
            wait_s = deadline - loop.time()
            if self._rebuilding:
                # A rebuild in progress is not "nothing arrived": keep reading while it moves.
                stalled_at = self._rebuild_progress + self._timeout_s
                wait_s = max(wait_s, stalled_at - time.monotonic())
                if wait_s <= 0:
                    self._give_up_rebuild(consumer)
                    wait_s = 0
            async with _translated("fetching", wait_s + self._timeout_s):
                batches = await consumer.getmany(timeout_ms=max(0, int(wait_s * 1000)),
                                                 max_records=count)
            deliveries = await self._deliveries(consumer, batches)
            if deliveries or wait_s <= 0:
                if not deliveries:
                    async with _translated("checking positions", self._timeout_s):
                        gone = await _past_the_end(consumer, list(self._parts))
                    for tp in gone:
                        self._parts[tp] = _Partition(self._epoch, None)
                        if tp in self._rebuilding:
                            self._rebuild_done(consumer, tp, self._parts[tp])
                return deliveries

    async def _deliveries(self, consumer: AIOKafkaConsumer,
                          batches: dict[TopicPartition, list[Any]]) -> list[Delivery]:
        replayed: list[Delivery] = []
        live: list[Delivery] = []
        for tp, records in batches.items():
            state = self._parts.get(tp)
            if state is None:
                state = self._parts[tp] = _Partition(self._epoch, None)
            if state.phase == "probe":
                records = await self._probe(consumer, tp, state, records)
            for record in records:
                if state.phase == "replay" and record.offset < state.replay_until:
                    self._rebuild_progress = time.monotonic()
                    if record.timestamp >= state.replay_from_ms:
                        replayed.append(self._delivery(tp, record, replay=True))
                    continue
                if state.phase != "live":
                    self._rebuild_done(consumer, tp, state)
                if record.offset < state.next_offset:
                    # The log went back (a broker that lost its data): follow it.
                    log.warning("%s went back from offset %d to %d (the broker lost its log?); "
                                "following it", _name(tp), state.next_offset, record.offset)
                    state.committed = None
                    state.unacked.clear()
                state.next_offset = record.offset + 1
                state.unacked.add(record.offset)
                live.append(self._delivery(tp, record))
        for tp in list(self._rebuilding):
            state = self._parts[tp]
            if state.phase == "replay" and await consumer.position(tp) >= state.replay_until:
                self._rebuild_done(consumer, tp, state)
        return replayed + live

    async def _probe(self, consumer: AIOKafkaConsumer, tp: TopicPartition, state: _Partition,
                     records: list[Any]) -> list[Any]:
        """The record before the committed offset dates the rebuild; seek to its start.

        Returns the records that are still to be handed out from this batch."""
        first = records[0]
        if first.offset >= state.replay_until:
            # The last processed record is gone (retention): nothing left to replay.
            self._rebuild_done(consumer, tp, state)
            return records
        self._rebuild_progress = time.monotonic()
        cutoff = first.timestamp - self._rebuild_ms
        try:
            async with _translated("looking up offsets by time", self._timeout_s):
                found = (await consumer.offsets_for_times({tp: cutoff})).get(tp)
                if found is None:
                    start = first.offset
                elif found.offset is None or found.offset < 0 or found.timestamp < 0:
                    start = (await consumer.beginning_offsets([tp]))[tp]
                else:
                    start = min(found.offset, first.offset)
        except BusUnavailable:
            consumer.seek(tp, state.replay_until - 1)  # probe again on the next fetch
            raise
        state.phase = "replay"
        state.replay_from_ms = cutoff
        consumer.seek(tp, start)
        return []

    def _rebuild_done(self, consumer: AIOKafkaConsumer, tp: TopicPartition,
                      state: _Partition) -> None:
        state.phase = "live"
        self._rebuilding.discard(tp)
        if not self._rebuilding:
            consumer.resume(*self._parts)

    def _give_up_rebuild(self, consumer: AIOKafkaConsumer) -> None:
        log.warning("rebuild of %s made no progress for %.0fs; continuing without it",
                    _names(self._rebuilding), self._timeout_s)
        for tp in list(self._rebuilding):
            state = self._parts[tp]
            consumer.seek(tp, state.replay_until)
            self._rebuild_done(consumer, tp, state)

    def _delivery(self, tp: TopicPartition, record: Any, *, replay: bool = False
                  ) -> KafkaDelivery:
        return KafkaDelivery(tp.topic, f"{tp.partition}:{record.offset}", record.value or b"",
                             int(record.timestamp), replay=replay, partition=tp.partition,
                             offset=record.offset, epoch=self._epoch)

    # -- acknowledgement ---------------------------------------------------------------------

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        touched: dict[TopicPartition, _Partition] = {}
        mine: list[Delivery] = []
        for delivery in deliveries:
            if delivery.replay or delivery.acked or not isinstance(delivery, KafkaDelivery):
                continue
            tp = delivery.topic_partition
            state = self._parts.get(tp)
            if state is None or state.epoch != delivery.epoch:
                delivery.acked = True  # not ours any more: the new owner gets it again
                continue
            state.unacked.discard(delivery.offset)
            touched[tp] = state
            mine.append(delivery)
        if not touched:
            return
        async with self._acked:
            self._acked.notify_all()
        offsets = self._commit_targets(touched)
        consumer = self._consumer
        if offsets and consumer is not None:
            try:
                async with _translated("committing", min(self._timeout_s, COMMIT_TIMEOUT_S)):
                    await consumer.commit(offsets)
            except BusUnavailable as exc:
                if isinstance(exc.__cause__, _GROUP_MOVED):
                    # A rebalance is under way: the revocation commits what was acked.
                    log.info("commit deferred to the rebalance: %s", exc.__cause__)
                else:
                    # tansu after a restart answers "unknown topic" until it is re-created.
                    self._transport.topics_suspect()
                    raise
            else:
                for tp, offset in offsets.items():
                    state = self._parts.get(tp)
                    if state is not None:
                        state.committed = max(offset, state.committed or 0)
        for delivery in mine:
            delivery.acked = True

    def _commit_targets(self, parts: dict[TopicPartition, _Partition]
                        ) -> dict[TopicPartition, int]:
        targets = {}
        for tp, state in parts.items():
            target = state.commit_target()
            if target is not None:
                targets[tp] = target
        return targets

    async def lag(self) -> dict[str, ConsumerLag]:
        """Per stream: end offsets minus what the group has taken (behind), and what was
        handed out but not acknowledged (pending; known for this member's partitions)."""
        consumer = await self._ready()
        lags = {stream: ConsumerLag(0, 0) for stream in self._streams}
        async with _translated("reading consumer lag", self._timeout_s):
            tps = [TopicPartition(stream, p) for stream in self._streams
                   for p in sorted(consumer.partitions_for_topic(stream) or ())]
            if not tps:
                return lags
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                state = self._parts.get(tp)
                if state is not None:
                    # The last fetch's high watermark: exact, and fresher than ListOffsets
                    # on tansu (see _log_bounds).
                    ends[tp] = max(ends[tp], consumer.highwater(tp) or 0)
                    done = max(state.next_offset, state.committed or 0, state.replay_until)
                    pending = len(state.unacked)
                else:  # another member's partition: what the group committed
                    done, pending = await consumer.committed(tp) or 0, 0
                previous = lags[tp.topic]
                lags[tp.topic] = ConsumerLag(previous.behind + max(0, ends[tp] - done),
                                             previous.pending + pending)
        return lags


class KafkaBroadcastReader:
    """Every partition of one topic from this reader's own positions (no group).

    ``backlog(N)`` seeks each partition to ``end − N`` and reads up to the end offsets taken
    at that moment, so it returns exactly the newest N (oldest first, merged by timestamp
    across partitions); ``read`` continues after them. A reader holds a consumer only while
    it reads: ``backlog`` keeps just the positions, so a reader used for its backlog alone
    (the detector's start, an admin request) holds no connection afterwards. A topic that
    does not exist yet is waited for, not created (its writers know how it is kept), and
    read from its beginning once it appears. Offsets out of range (a log that was trimmed,
    or a broker that lost it) restart from the beginning of what is there.
    """

    def __init__(self, transport: KafkaTransport, stream: str) -> None:
        self._transport = transport
        self._stream = stream
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self._partitions: list[TopicPartition] = []
        # Where reading continues while no consumer is open; None: at the end of the log.
        self._positions: dict[TopicPartition, int] | None = None
        self._carry: list[Delivery] = []
        self._timeout_s = transport.timeout_s

    async def _partition_count(self) -> int:
        counts = await self._transport.ensure_topics([self._stream], create=False)
        return counts[self._stream]

    async def _open(self, partitions: int) -> AIOKafkaConsumer:
        """The consumer, on every partition, positioned where this reader left off."""
        consumer = self._consumer
        if consumer is None:
            settings = self._transport.settings
            consumer = AIOKafkaConsumer(
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=settings.fetch_max_wait_ms,
                request_timeout_ms=self._transport.request_timeout_ms,
                **self._transport.client_options(),
            )
            try:
                async with _translated("starting a reader", self._timeout_s):
                    await consumer.start()
            except BaseException:
                await _stop_consumer(consumer, self._timeout_s)
                raise
            self._consumer = consumer
            self._transport.opened(self)
            self._partitions = []
        if len(self._partitions) != partitions:
            await self._assign(consumer, partitions)
        return consumer

    async def _assign(self, consumer: AIOKafkaConsumer, partitions: int) -> None:
        """(Re)assign every partition, keeping the positions of those already read; a
        partition that appeared later is all new, so it is read from its beginning."""
        positions = dict(self._positions or {})
        for tp in self._partitions:
            with suppress(kafka_errors.KafkaError, AssertionError):
                positions[tp] = await consumer.position(tp)
        self._partitions = [TopicPartition(self._stream, p) for p in range(partitions)]
        consumer.assign(self._partitions)
        async with _translated("positioning a reader", self._timeout_s * 2):
            for tp in self._partitions:
                # Let the reset that assign() started finish, or it could undo a seek.
                await consumer.position(tp)
            if self._positions is None and not positions:  # never read: from the end
                _, end = await _log_bounds(consumer, self._partitions, self._timeout_s)
                positions = end
            for tp in self._partitions:
                if tp in positions:
                    consumer.seek(tp, positions[tp])
                else:
                    await consumer.seek_to_beginning(tp)
        self._positions = None

    async def _release(self) -> None:
        """Close the consumer, keeping where reading continues."""
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        self._transport.closed(self)
        positions: dict[TopicPartition, int] = {}
        for tp in self._partitions:
            with suppress(kafka_errors.KafkaError, AssertionError):
                positions[tp] = await consumer.position(tp)
        self._positions = positions
        await _stop_consumer(consumer, self._timeout_s)

    async def close(self) -> None:
        async with self._lock:
            await self._release()

    async def backlog(self, count: int) -> list[Delivery]:
        async with self._lock:
            partitions = await self._partition_count()
            if not partitions:  # no topic yet: whatever it will hold is new
                self._positions = {}
                return []
            consumer = await self._open(partitions)
            tps = self._partitions
            newest: list[Delivery] = []
            carry: list[Delivery] = []
            async with _translated("reading the backlog", self._timeout_s * 3):
                begin, end = await _log_bounds(consumer, tps, self._timeout_s)
                start = {tp: max(begin[tp], end[tp] - max(count, 0)) for tp in tps}
                for tp in tps:
                    consumer.seek(tp, start[tp])
                waiting = {tp for tp in tps if end[tp] > start[tp]}
                while waiting:
                    batches = await consumer.getmany(*waiting,
                                                     timeout_ms=int(self._timeout_s * 1000))
                    if not batches:
                        raise BusUnavailable(f"kafka: no backlog of {self._stream} arrived")
                    for tp, records in batches.items():
                        for record in records:
                            target = newest if record.offset < end[tp] else carry
                            target.append(_broadcast_delivery(tp, record))
                        if await consumer.position(tp) >= end[tp]:
                            waiting.discard(tp)
                for tp in tps:
                    consumer.seek(tp, end[tp])
            await self._release()
        newest.sort(key=_arrival_order)
        self._carry = sorted(carry, key=_arrival_order)
        return newest[-count:] if count > 0 else []

    async def read(self, count: int, block_ms: int) -> list[Delivery]:
        if self._carry:
            taken, self._carry = self._carry[:count], self._carry[count:]
            return taken
        async with self._lock:
            partitions = await self._partition_count()
            if not partitions:
                if self._positions is None:
                    self._positions = {}  # the topic will be new: read all of it
                await asyncio.sleep(block_ms / 1000)
                return []
            consumer = await self._open(partitions)
            async with _translated("reading", block_ms / 1000 + self._timeout_s):
                batches = await consumer.getmany(timeout_ms=block_ms, max_records=count)
                if not batches:
                    await _past_the_end(consumer, self._partitions)
        deliveries = [_broadcast_delivery(tp, record)
                      for tp, records in batches.items() for record in records]
        deliveries.sort(key=_arrival_order)
        return deliveries


async def _log_bounds(consumer: AIOKafkaConsumer, tps: list[TopicPartition], timeout_s: float
                      ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """First and next offset of each partition's log.

    The end offset is confirmed by fetching the last record: the high watermark of a fetch
    is exact, while ``tansu`` answers ListOffsets with the last *batch*'s base offset + 1
    (real Kafka agrees with itself; the extra fetch is one round trip). Leaves the consumer
    positioned anywhere: callers seek afterwards."""
    begin = await consumer.beginning_offsets(tps)
    end = await consumer.end_offsets(tps)
    for tp in tps:
        if end[tp] > begin[tp]:
            consumer.seek(tp, end[tp] - 1)
            await consumer.getmany(tp, timeout_ms=int(timeout_s * 1000), max_records=1)
            end[tp] = max(end[tp], consumer.highwater(tp) or 0)
    return begin, end


async def _past_the_end(consumer: AIOKafkaConsumer, tps: list[TopicPartition]
                       ) -> list[TopicPartition]:
    """Partitions whose position is past the end of their log, moved to its beginning.

    That happens when the broker lost the log (an in-memory broker restarted). Kafka
    answers such a fetch with OffsetOutOfRange, which the consumer's reset policy
    handles; tansu answers with nothing, for ever, so the high watermark of the last
    fetch is compared with the position instead."""
    gone = []
    for tp in tps:
        end = consumer.highwater(tp)
        if end is not None and await consumer.position(tp) > end:
            gone.append(tp)
    if gone:
        log.warning("%s: the broker's log ends before our position (it lost its data?); "
                    "reading it from its beginning", _names(gone))
        await consumer.seek_to_beginning(*gone)
    return gone


def _broadcast_delivery(tp: TopicPartition, record: Any) -> Delivery:
    return Delivery(tp.topic, f"{tp.partition}:{record.offset}", record.value or b"",
                    int(record.timestamp))


def _arrival_order(delivery: Delivery) -> tuple[int, int, int]:
    partition, offset = delivery.position.split(":")
    return delivery.timestamp_ms, int(partition), int(offset)


def _security_options(settings: KafkaSettings) -> dict[str, Any]:
    options: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if settings.security_protocol.startswith("SASL_"):
        password = settings.sasl_password.get_secret_value() if settings.sasl_password else None
        options.update(sasl_mechanism=settings.sasl_mechanism,
                       sasl_plain_username=settings.sasl_username,
                       sasl_plain_password=password)
    if settings.security_protocol.endswith("SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=settings.ssl_cafile, certfile=settings.ssl_certfile,
            keyfile=settings.ssl_keyfile)
    return options


async def _bounded(closing: Any, timeout_s: float, what: str) -> None:
    """Await a client's stop/close, but never for ever, and never let it raise."""
    try:
        async with asyncio.timeout(timeout_s):
            await closing
    except (TimeoutError, kafka_errors.KafkaError, OSError) as exc:
        log.warning("kafka %s did not finish cleanly: %r", what, exc)


async def _stop_consumer(consumer: AIOKafkaConsumer, timeout_s: float) -> None:
    """``consumer.stop()``, working around aiokafka 0.14: its fetcher cancels a fetch that
    is waiting to retry and then re-raises that task's CancelledError out of ``stop()``,
    leaving the connections open (seen when the broker is down)."""
    try:
        await _bounded(consumer.stop(), timeout_s, "consumer stop")
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # we are being cancelled ourselves
        await _bounded(consumer._client.close(), timeout_s, "consumer connections close")


def _describe_topic(topic: NewTopic) -> str:
    configs = ", ".join(f"{k}={v}" for k, v in topic.topic_configs.items())
    return (f"{topic.num_partitions} partition(s), replication {topic.replication_factor}"
            + (f", {configs}" if configs else ""))


def _name(tp: TopicPartition) -> str:
    return f"{tp.topic}[{tp.partition}]"


def _names(tps: Iterable[TopicPartition]) -> str:
    return ", ".join(_name(tp) for tp in sorted(tps))
