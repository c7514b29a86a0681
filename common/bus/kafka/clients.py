"""What every aiokafka client of the transport shares: its failures given the contract's
meaning, stops that never hang, and library logs that do not flood an outage.

Every broker failure reaches the caller as ``BusUnavailable`` (the services wait and
retry); a setting or a permission the broker refuses is a ``TransportConfigError``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, Final

from aiokafka import AIOKafkaConsumer
from aiokafka import errors as kafka_errors
from aiokafka.structs import TopicPartition

from common.bus.contract import BusUnavailable, TransportConfigError

log = logging.getLogger(__name__)

# aiokafka logs every failed reconnect at ERROR, dozens a second during an outage.
LIBRARY_LOG_INTERVAL_S: Final = 30.0

REFUSED: Final = (
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.GroupAuthorizationFailedError,
    kafka_errors.ClusterAuthorizationFailedError,
    kafka_errors.SaslAuthenticationFailed,
    kafka_errors.AuthenticationFailedError,
    kafka_errors.AuthenticationMethodNotSupported,
    kafka_errors.UnsupportedSaslMechanismError,
)


@asynccontextmanager
async def translated(what: str, timeout_s: float) -> AsyncIterator[None]:
    """Bound an operation in time and give its failure the contract's meaning."""
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except (BusUnavailable, TransportConfigError):
        raise
    except REFUSED as exc:
        raise TransportConfigError(
            f"kafka refused {what}: {exc!r} (check KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and "
            "the ACLs of this principal)") from exc
    except TimeoutError as exc:
        raise BusUnavailable(f"kafka: {what} timed out after {timeout_s:g}s") from exc
    except (kafka_errors.KafkaError, OSError) as exc:
        raise BusUnavailable(f"kafka: {what} failed: {exc!r}") from exc


async def bounded(closing: Any, timeout_s: float, what: str) -> None:
    """Await a client's stop/close, but never for ever, and never let it raise."""
    try:
        async with asyncio.timeout(timeout_s):
            await closing
    except (TimeoutError, kafka_errors.KafkaError, OSError) as exc:
        log.warning("kafka %s did not finish cleanly: %r", what, exc)


async def stop_consumer(consumer: AIOKafkaConsumer, timeout_s: float) -> None:
    """``consumer.stop()``, working around aiokafka 0.14: its fetcher cancels a fetch that
    is waiting to retry and then re-raises that task's CancelledError out of ``stop()``,
    leaving the connections open (seen when the broker is down)."""
    try:
        await bounded(consumer.stop(), timeout_s, "consumer stop")
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # we are being cancelled ourselves
        await bounded(consumer._client.close(), timeout_s, "consumer connections close")


async def start_consumer(consumer: AIOKafkaConsumer, what: str, timeout_s: float) -> None:
    """``consumer.start()`` as ``BusUnavailable`` on failure, with the half-started
    consumer stopped, so that a caller never keeps one that holds connections."""
    try:
        async with translated(what, timeout_s):
            await consumer.start()
    except BaseException:
        await stop_consumer(consumer, timeout_s)
        raise


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


def quiet_library_logs() -> None:
    # A filter on a logger does not see its children's records: put it on each of them.
    names = [name for name in logging.root.manager.loggerDict
             if name == "aiokafka" or name.startswith("aiokafka.")]
    for name in names:
        library_logger = logging.getLogger(name)
        if _library_filter not in library_logger.filters:
            library_logger.addFilter(_library_filter)


def partition_name(tp: TopicPartition) -> str:
    return f"{tp.topic}[{tp.partition}]"


def partition_names(tps: Iterable[TopicPartition]) -> str:
    return ", ".join(partition_name(tp) for tp in sorted(tps))
