"""The gateway's view of the pipeline, observed on the bus and published to the browsers.

Bus-agnostic by design: everything comes through ``common.bus`` broadcast readers, which
both backends implement the same way, rather than from group introspection (``XINFO`` on
Redis, the group coordinator on Kafka), which they do not.

- ``ticks.{p}``: a broadcast reader per partition, from the newest entry on, telling the
  newest event time per partition and the symbols seen. A trade-level feed writes an entry
  per partition per ``FLUSH_MS`` (hundreds a second): a read per entry would cost this
  process, which also fans the alerts out, a Redis round trip each. So a partition is read
  every ``HEALTH_CHECK_S / 4`` (at once again after a full read), which takes what came
  meanwhile in one round trip and ages the verdict by that much at most, and an entry is
  decoded as symbols and event times only (``_Seen``), not as ticks.
- ``detector.heartbeat``: each detector's ``DetectorHeartbeat`` about once a second (see
  ``detector.service.Detector.beat``); the newest per consumer is kept.

Every ``HEALTH_CHECK_S`` the observation is evaluated (``gateway.health``, pure). Browsers
are told when the state changes (a level, or the number of symbols), and again every
``NOT_OK_REPEAT_S`` while it is not ok, so that the reasons' figures stay current; between
messages the page ages a stale feed itself. Repeating every check instead would cost every
client a message a second for as long as an incident lasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Final

import msgspec

from common.backoff import Backoff
from common.bus import BusUnavailable, Delivery, Transport
from common.partitioning import DETECTOR_HEARTBEAT_STREAM, ticks_stream
from common.schemas import DetectorHeartbeat, decode_heartbeat
from common.settings import GatewaySettings
from gateway.health import Health, Observation, Thresholds, evaluate
from gateway.hub import Hub

log = logging.getLogger(__name__)

READ_COUNT: Final = 512
NOT_OK_REPEAT_S: Final = 5.0
READS_PER_CHECK: Final = 4  # reads of a ticks stream per HEALTH_CHECK_S, at most
_json: Final = msgspec.json.Encoder()


class _Seen(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """The leading fields of an array-like ``common.schemas.Tick``: what the health needs.
    The trailing ones are skipped unread by the decoder, and nothing else is built."""

    symbol: str
    price: float
    event_time_ms: int


_seen_decoder: Final = msgspec.msgpack.Decoder(list[_Seen])


class HealthMessage(msgspec.Struct, frozen=True, tag_field="type", tag="health"):
    health: Health


class HealthMonitor:
    def __init__(self, settings: GatewaySettings, hub: Hub, *,
                 clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
                 repeat_s: float = NOT_OK_REPEAT_S) -> None:
        self._hub = hub
        self._clock_ms = clock_ms
        self._partitions = settings.tick_partitions
        self._block_ms = settings.read_block_ms
        self._check_s = settings.health_check_s
        self._pace_s = settings.health_check_s / READS_PER_CHECK
        self._repeat_ms = int(max(repeat_s, settings.health_check_s) * 1000)
        self._prime_timeout_s = settings.bus_timeout_s
        self._symbols_window_ms = int(settings.health_symbols_window_s * 1000)
        self.thresholds = Thresholds(
            feed_stale_s=settings.health_feed_stale_s, feed_down_s=settings.health_feed_down_s,
            detector_stale_s=settings.health_detector_stale_s,
            detector_lag_s=settings.health_detector_lag_s,
            detector_down_s=settings.health_detector_down_s)
        self._newest: dict[int, int] = {}  # partition → newest tick event time
        self._last_seen: dict[str, int] = {}  # symbol → newest event time
        self._heartbeats: dict[str, DetectorHeartbeat] = {}  # consumer → newest
        self._failing: set[str] = set()  # streams whose reader is waiting out an outage
        self._announced: Health | None = None
        self._unprimed = self._partitions + 1  # streams whose newest entries are not read yet
        self._primed = asyncio.Event()

    def observation(self) -> Observation:
        newest = max(self._newest.values(), default=0)
        horizon = newest - self._symbols_window_ms
        symbols = sum(1 for t in self._last_seen.values() if t >= horizon)
        return Observation(now_ms=self._clock_ms(), partitions=self._partitions,
                           reading=not self._failing, newest_by_partition=dict(self._newest),
                           symbols=symbols, heartbeats=list(self._heartbeats.values()))

    def current(self) -> Health:
        return evaluate(self.observation(), self.thresholds)

    def message(self) -> str:
        """The ``{"type":"health","health":{...}}`` WebSocket message, evaluated now."""
        return encode_message(self.current())

    def check(self) -> Health:
        """Evaluate, and tell the browsers when they should hear of it."""
        self._forget_old_symbols()
        health = self.current()
        changed = not health.same_state(self._announced)
        repeat = (self._announced is not None and health.level != "ok"
                  and health.at_ms - self._announced.at_ms >= self._repeat_ms)
        if changed:
            log.info("pipeline health %s: %s%s", health.level, health.summary,
                     "".join(f"; {r}" for r in health.reasons))
        if changed or repeat:
            self._announced = health
            self._hub.broadcast(encode_message(health))
        return health

    def take_ticks(self, partition: int, deliveries: list[Delivery]) -> None:
        """Entries come oldest first: a symbol's time is that of its newest entry read (a
        tick a few ms out of order only shifts when it leaves the symbols window)."""
        last_seen = self._last_seen
        newest = self._newest.get(partition, 0)
        for delivery in deliveries:
            try:
                ticks = _seen_decoder.decode(delivery.payload)
            except msgspec.DecodeError:
                continue  # counted by the detector, which owns the meaning of ticks
            if ticks:
                last_seen.update({tick.symbol: tick.event_time_ms for tick in ticks})
                newest = max(newest, max(tick.event_time_ms for tick in ticks))
        if newest:
            self._newest[partition] = newest

    def _forget_old_symbols(self) -> None:
        """Delisted symbols leave the count by the window; this bounds the memory too."""
        horizon = max(self._newest.values(), default=0) - self._symbols_window_ms
        self._last_seen = {s: t for s, t in self._last_seen.items() if t >= horizon}

    def take_heartbeats(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            try:
                beat = decode_heartbeat(delivery.payload)
            except msgspec.DecodeError:
                log.warning("undecodable heartbeat %s skipped", delivery.position)
                continue
            known = self._heartbeats.get(beat.consumer)
            if known is None or beat.sent_at_ms >= known.sent_at_ms:
                self._heartbeats[beat.consumer] = beat
        # A consumer that stopped long ago is no longer worth listing.
        horizon = self._clock_ms() - 10 * self.thresholds.detector_down_s * 1000
        for consumer in [c for c, b in self._heartbeats.items() if b.sent_at_ms < horizon]:
            del self._heartbeats[consumer]

    async def run(self, transport: Transport) -> None:
        """Follow the streams and publish until cancelled; a bus outage is waited out."""
        async with asyncio.TaskGroup() as tasks:
            for partition in range(self._partitions):
                tasks.create_task(self._follow(
                    transport, ticks_stream(partition), partial(self.take_ticks, partition),
                    pace_s=self._pace_s), name=f"health ticks.{partition}")
            tasks.create_task(self._follow(transport, DETECTOR_HEARTBEAT_STREAM,
                                           self.take_heartbeats), name="health heartbeats")
            # The first verdict waits for the newest entries (a gateway that starts would
            # otherwise flash "no exchange data" at every browser), but not for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._prime_timeout_s):
                    await self._primed.wait()
            while True:
                self.check()
                await asyncio.sleep(self._check_s)

    async def _follow(self, transport: Transport, stream: str,
                      take: Callable[[list[Delivery]], None], *, pace_s: float = 0.0) -> None:
        """Read ``stream`` until cancelled; with ``pace_s``, one read per ``pace_s`` at most
        unless the last one came back full (a backlog is read through at once)."""
        reader = transport.broadcast_reader(stream)
        backoff = Backoff()
        primed = False
        attempted = False  # the first read counted towards the monitor's first verdict
        try:
            while True:
                try:
                    if primed:
                        batch = await reader.read(READ_COUNT, self._block_ms)
                    else:
                        batch = await reader.backlog(1 if stream != DETECTOR_HEARTBEAT_STREAM
                                                     else READ_COUNT)
                        primed = True
                except BusUnavailable as exc:
                    self._failing.add(stream)
                    attempted = attempted or self._prime()
                    delay = backoff.next_delay()
                    log.debug("%s not read (%s); retrying in %.1fs", stream, exc, delay)
                    await asyncio.sleep(delay)
                    continue
                self._failing.discard(stream)
                backoff.reset()
                take(batch)
                attempted = attempted or self._prime()
                if pace_s and len(batch) < READ_COUNT:
                    await asyncio.sleep(pace_s)
        finally:
            await reader.close()

    def _prime(self) -> bool:
        """One more stream had its first read (or failed it); True, for the caller's flag."""
        self._unprimed -= 1
        if self._unprimed <= 0:
            self._primed.set()
        return True


def encode_message(health: Health) -> str:
    return _json.encode(HealthMessage(health)).decode()
