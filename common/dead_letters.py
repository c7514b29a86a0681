"""Poison entries: an entry a group consumer cannot decode, or whose processing raises.

Such an entry must neither stop its stream (on Kafka an offset that is never acknowledged
holds the commit of the whole partition back; on Redis it stays pending forever) nor take
its service down (a restart would be handed the same entry again: a crash loop). So after a
bounded number of attempts it is moved to a dead-letter stream beside its own,
``<stream>.dead`` (``ticks.3.dead``, ``alerts.dead``), and acknowledged. The dead entry says
where it came from, why it was given up on and after how many attempts, and keeps the
original payload, so an operator can look at it (``XRANGE alerts.dead - +``) and replay it
by hand once the cause is fixed.

- An entry that cannot be decoded is buried at once (one attempt): decoding is a pure
  function of the bytes, so a second try cannot succeed.
- One whose processing raises is run again, at once, up to ``POISON_MAX_ATTEMPTS`` times
  (default 3) in all, then buried (``attempt``). The attempts are counted in memory per
  (stream, position) (``Attempts``: bounded, forgotten when the entry succeeds or is
  buried). A restart starts the count afresh, so an entry that kills its process (out of
  memory, a crash in native code) is not caught here: the supervisor's restart limit is.

What a dead entry is written with: the consumer's own publish (for the detector its fenced
one, so a member that lost the stream buries nothing), and the caller acknowledges the entry
only after that publish returned. At least once, like everything on the bus: a crash
between the two buries it again; entries of a dead stream are told apart by
(stream, position).

Broadcast readers (the gateway) do not bury: several of them read every entry, and each
would write the same dead entry. They count and skip what they cannot decode.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Literal, TypeVar

import msgspec

from common.bus.contract import Delivery, Record, Retention

log = logging.getLogger(__name__)

T = TypeVar("T")

DEAD_SUFFIX: Final = ".dead"
# Entries kept on each dead stream (MAXLEN ~ on Redis; a week on Kafka, which cannot count).
DEAD_KEPT: Final = 10_000
DEAD_RETENTION: Final = Retention(max_len=DEAD_KEPT)
DEFAULT_MAX_ATTEMPTS: Final = 3
# Entries whose attempts are remembered at once, at most.
ATTEMPTS_REMEMBERED: Final = 10_000
# The exception's message is cut here: enough to tell the cause, never a whole payload.
ERROR_CHARS: Final = 300
# The payload kept in a dead entry, at most: base64 in JSON adds a third, and a dead entry
# must stay below the bus's own entry limit (Kafka's default is 1 MB) or it could never be
# written, and its entry never acknowledged.
PAYLOAD_KEPT_BYTES: Final = 256 * 1024

Reason = Literal["undecodable", "failed"]
REASONS: Final[tuple[Reason, ...]] = ("undecodable", "failed")


class DeadEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One buried entry, as JSON on ``<stream>.dead`` (``payload`` in base64)."""

    stream: str
    position: str  # the entry's position on ``stream`` (a Redis id, partition:offset on Kafka)
    reason: Reason
    error: str  # the exception's class and the start of its message
    attempts: int
    dead_at_ms: int
    payload: bytes  # the original bytes, the first PAYLOAD_KEPT_BYTES of them
    payload_size: int  # the original's length: above len(payload) when it was cut


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(DeadEntry)


def dead_stream(stream: str) -> str:
    """Where the poison entries of ``stream`` go."""
    return f"{stream}{DEAD_SUFFIX}"


def describe_error(error: BaseException) -> str:
    """``Class: message``, on one line and at most ``ERROR_CHARS`` long.

    Only the exception is described, never the process's state: a message is what the
    failing code put in it (a decode error names a position and a type)."""
    message = " ".join(str(error).split())
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"


def dead_entry(delivery: Delivery, reason: Reason, error: BaseException, attempts: int,
               *, now_ms: int | None = None) -> DeadEntry:
    payload = delivery.payload
    return DeadEntry(
        stream=delivery.stream, position=delivery.position, reason=reason,
        error=describe_error(error), attempts=attempts,
        dead_at_ms=int(time.time() * 1000) if now_ms is None else now_ms,
        payload=bytes(payload[:PAYLOAD_KEPT_BYTES]), payload_size=len(payload))


def encode_dead_entry(entry: DeadEntry) -> bytes:
    return _encoder.encode(entry)


def decode_dead_entry(data: bytes) -> DeadEntry:
    return _decoder.decode(data)


def dead_record(entry: DeadEntry) -> Record:
    """The record for ``entry``, keyed by the position it had (one key per entry)."""
    return Record(dead_stream(entry.stream), entry.position, encode_dead_entry(entry))


async def bury(publish: Callable[[Sequence[Record]], Awaitable[None]],
               entries: Sequence[DeadEntry]) -> None:
    """Write ``entries`` to their dead streams with ``publish``, in one call; the caller
    acknowledges their deliveries once this returned. Raises what ``publish`` raises
    (``BusUnavailable``, ``OwnershipLost``): then nothing may be acknowledged."""
    if entries:
        await publish([dead_record(entry) for entry in entries])


class Attempts:
    """Failed attempts per (stream, position), bounded: past ``capacity`` entries the one
    that failed longest ago is forgotten (its count would restart)."""

    def __init__(self, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                 capacity: int = ATTEMPTS_REMEMBERED) -> None:
        if max_attempts < 1 or capacity < 1:
            raise ValueError("max_attempts and capacity must be at least 1")
        self.max_attempts = max_attempts
        self._capacity = capacity
        self._failed: OrderedDict[tuple[str, str], int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failed)

    def failed(self, delivery: Delivery) -> int:
        """Count one more failure of ``delivery``'s entry; its failures so far."""
        key = (delivery.stream, delivery.position)
        count = self._failed.pop(key, 0) + 1
        self._failed[key] = count
        if len(self._failed) > self._capacity:
            self._failed.popitem(last=False)
        return count

    def forget(self, delivery: Delivery) -> None:
        """The entry succeeded or was buried."""
        self._failed.pop((delivery.stream, delivery.position), None)


def attempt(operation: Callable[[], T], delivery: Delivery, attempts: Attempts
            ) -> T | DeadEntry:
    """``operation()`` (the processing of ``delivery``'s entry) until it returns, at most
    as often as ``attempts`` has left for the entry; its result, or the entry to bury
    (reason ``failed``) once the last attempt raised.

    The attempts follow each other at once: what fails is pure code on the entry's bytes
    (the detection engine, the notifier's routing), so waiting would change nothing, and
    holding the batch back for a backoff would delay every other entry in it. Only
    ``Exception`` is caught: a cancellation still stops the caller.
    """
    while True:
        try:
            result = operation()
        except Exception as exc:
            count = attempts.failed(delivery)
            log.warning("entry %s of %s failed (attempt %d of %d): %s", delivery.position,
                        delivery.stream, count, attempts.max_attempts, describe_error(exc))
            if count >= attempts.max_attempts:
                attempts.forget(delivery)
                return dead_entry(delivery, "failed", exc, count)
        else:
            attempts.forget(delivery)
            return result
