"""Topics: one per stream, created when missing, kept as the stream's retention says.

Every stream is a topic of the same name: ``ticks.0`` … ``ticks.{P-1}``, ``alerts``,
``rules``, and the dead-letter streams beside them (``ticks.3.dead``, ``alerts.dead``:
``common.dead_letters``; dots are legal in a topic name). A missing topic is created with
``KAFKA_TOPIC_PARTITIONS`` partitions (default 1) and ``KAFKA_REPLICATION_FACTOR``; topics
that exist are left as they are. Ticks are kept by age (``retention.ms`` =
``TICKS_RETENTION_S``). A Kafka log cannot be capped by count, so ``alerts``, ``rules`` and
the dead-letter topics get a generous ``retention.ms`` (a week); the gateway's
``backlog(N)`` still serves the newest N by offsets, so what a trader sees is the same as
on Redis. A broker that lost its state is recovered from: the topics are checked at most
once a second and created again when missing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable, Sequence
from typing import Final

from aiokafka import errors as kafka_errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from common.bus.contract import BusUnavailable, Retention, TransportConfigError
from common.bus.kafka.clients import REFUSED, bounded, translated
from common.bus.kafka.config import KafkaConfig

log = logging.getLogger(__name__)

# Declared topics are re-checked this often (and created again when a broker lost them).
TOPIC_CHECK_S: Final = 1.0
# Streams capped by count (alerts, rules) are kept this long instead: see the module doc.
COUNT_CAPPED_RETENTION_MS: Final = 7 * 24 * 3600 * 1000

_TOPIC_EXISTS: Final = kafka_errors.TopicAlreadyExistsError.errno
_CREATE_SETTINGS: Final = {
    kafka_errors.InvalidReplicationFactorError.errno: "KAFKA_REPLICATION_FACTOR",
    kafka_errors.InvalidReplicationAssignmentError.errno: "KAFKA_REPLICATION_FACTOR",
    kafka_errors.InvalidPartitionsError.errno: "KAFKA_TOPIC_PARTITIONS",
    kafka_errors.InvalidConfigurationError.errno: "TICKS_RETENTION_S",
    kafka_errors.PolicyViolationError.errno: "KAFKA_TOPIC_PARTITIONS/KAFKA_REPLICATION_FACTOR",
}


class Topics:
    """The transport's admin client and what it knows of the topics."""

    def __init__(self, config: KafkaConfig) -> None:
        self._config = config
        self._retention: dict[str, Retention] = {}
        self._written: dict[str, int] = {}  # topics this transport writes → partitions
        self._seen: dict[str, int] = {}  # every topic asked about → partitions (0: missing)
        self._checked_at = -math.inf
        self._check_lock = asyncio.Lock()
        self._admin: AIOKafkaAdminClient | None = None
        self._admin_lock = asyncio.Lock()

    async def admin(self, timeout_s: float | None = None) -> AIOKafkaAdminClient:
        config = self._config
        async with self._admin_lock:
            if self._admin is None:
                admin = AIOKafkaAdminClient(request_timeout_ms=config.request_timeout_ms,
                                            **config.client_options())
                try:
                    async with translated("connecting", timeout_s or config.timeout_s):
                        await admin.start()
                except BaseException:
                    await bounded(admin.close(), config.timeout_s, "admin client close")
                    raise
                self._admin = admin
            return self._admin

    async def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            await bounded(admin.close(), self._config.timeout_s, "admin client close")

    def keep(self, streams: Sequence[str], retention: Retention) -> None:
        """How the streams are kept, for when their topics are created."""
        for stream in streams:
            self._retention[stream] = retention

    async def ensure(self, streams: Iterable[str], *, force: bool = False,
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
            known = {**self._seen, **self._written}
            fresh = time.monotonic() - self._checked_at < TOPIC_CHECK_S
            if fresh and not force and all(known.get(name) for name in wanted):
                return {name: known[name] for name in wanted}
            admin = await self.admin()
            async with translated("listing topics", self._config.timeout_s):
                listing = await admin.describe_topics(None)
            existing = {t["topic"]: len(t["partitions"]) for t in listing
                        if t.get("error_code", 0) == 0 and t.get("partitions")}
            owned = list(dict.fromkeys([*self._written, *(wanted if create else ())]))
            missing = [name for name in owned if name not in existing]
            if missing:
                await self._create(admin, missing)
                existing.update(dict.fromkeys(missing, self._config.kafka.topic_partitions))
            for name in owned:
                self._written[name] = existing[name]
            for name in wanted:
                self._seen[name] = existing.get(name, 0)
            self._checked_at = time.monotonic()
            return {name: existing.get(name, 0) for name in wanted}

    def suspect(self) -> None:
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
        kafka = self._config.kafka
        return NewTopic(name, kafka.topic_partitions, kafka.replication_factor,
                        topic_configs=configs)

    async def _create(self, admin: AIOKafkaAdminClient, names: list[str]) -> None:
        async with translated("creating topics", self._config.timeout_s):
            response = await admin.create_topics([self.new_topic(n) for n in names],
                                                 timeout_ms=self._config.request_timeout_ms)
        for row in response.topic_errors:
            topic, code, message = row[0], row[1], row[2] if len(row) > 2 else None
            if code == 0:
                log.info("created topic %s (%s)", topic, _describe(self.new_topic(topic)))
            elif code != _TOPIC_EXISTS:
                error = kafka_errors.for_code(code)
                setting = _CREATE_SETTINGS.get(code)
                detail = f"{error.__name__}: {message or error.description}"
                if setting is not None:
                    raise TransportConfigError(
                        f"kafka refused to create topic {topic} ({detail}); check {setting}")
                if issubclass(error, REFUSED):
                    raise TransportConfigError(
                        f"kafka refused to create topic {topic} ({detail}); create it "
                        "beforehand or grant this principal CREATE")
                raise BusUnavailable(f"kafka could not create topic {topic}: {detail}")


def _describe(topic: NewTopic) -> str:
    configs = ", ".join(f"{k}={v}" for k, v in topic.topic_configs.items())
    return (f"{topic.num_partitions} partition(s), replication {topic.replication_factor}"
            + (f", {configs}" if configs else ""))
