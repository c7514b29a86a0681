"""What the soak watches from outside: a browser that resumes, and the detectors'
heartbeats.

``ResumingClient`` is the page's protocol (``gateway.ws``): on a lost connection it
reconnects with ``?since=<the last alert id it holds>`` and gets exactly what it missed;
when the gateway no longer holds that id (``unknown_since``) it connects without ``since``
and takes the history, as the page does. Every alert is recorded with how it came (live, in
a resumed history, or in a plain one). An id seen again live or in a resumed history is a
duplicate the trader would see; in a plain history it is the expected overlap (the page
drops an id it shows), counted apart.

``HeartbeatLog`` reads ``detector.heartbeat`` through the bus package, so it follows the
bus wherever ``BUS_URL`` leads (a restarted Redis, a promoted replica).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import websockets
from websockets.asyncio.client import connect

from common.bus.contract import BusUnavailable
from common.bus.registry import create_transport
from common.partitioning import DETECTOR_HEARTBEAT_STREAM
from common.runner import wait_or_stop
from common.schemas import DetectorHeartbeat, decode_heartbeat
from common.settings import BaseServiceSettings

log = logging.getLogger(__name__)

RECONNECT_S: Final = 0.2


@dataclass(frozen=True, slots=True)
class Received:
    id: str
    symbol: str
    direction: str
    event_time_ms: int
    at_s: float  # wall clock on arrival
    how: str  # "live", "resume" or "history"


@dataclass
class ResumingClient:
    url: str
    received: list[Received] = field(default_factory=list)  # first arrival of each id
    duplicates: list[Received] = field(default_factory=list)
    overlap: int = 0  # ids seen again in a plain (not resumed) history
    connections: int = 0
    resumes: int = 0
    unknown_since: int = 0
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    _seen: set[str] = field(default_factory=set)
    _last_id: str | None = None

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            since = self._last_id
            url = self.url if since is None else f"{self.url}?since={since}"
            try:
                async with connect(url, open_timeout=3, close_timeout=1,
                                   max_size=2**24) as ws:
                    self.connections += 1
                    self.resumes += since is not None
                    async for raw in ws:
                        self._take(json.loads(raw))
                        if stopping.is_set():
                            break
            except (OSError, websockets.WebSocketException, TimeoutError) as exc:
                log.debug("client connection lost: %s", exc)
            self.connected.clear()
            await wait_or_stop(stopping, RECONNECT_S)

    def _take(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "history":
            self.connected.set()
            how = "resume" if message.get("resumed") else "history"
            self._record(message["alerts"], how)
        elif kind == "alert":
            self._record([message["alert"]], "live")
        elif kind == "alerts":
            self._record(message["alerts"], "live")
        elif kind == "error" and message.get("code") == "unknown_since":
            self.unknown_since += 1
            self._last_id = None  # as the page does: take the plain history next time

    def _record(self, alerts: list[dict[str, Any]], how: str) -> None:
        now = time.time()
        for alert in alerts:
            got = Received(alert["id"], alert["symbol"], alert["direction"],
                           int(alert["event_time_ms"]), now, how)
            self._last_id = got.id
            if got.id not in self._seen:
                self._seen.add(got.id)
                self.received.append(got)
            elif how == "history":
                self.overlap += 1
            else:
                self.duplicates.append(got)


@dataclass(frozen=True, slots=True)
class Beat:
    at_s: float  # wall clock on arrival here
    heartbeat: DetectorHeartbeat


@dataclass
class HeartbeatLog:
    """Every heartbeat of every detector, in arrival order."""

    bus_url: str
    beats: list[Beat] = field(default_factory=list)

    async def run(self, stopping: asyncio.Event) -> None:
        transport = create_transport(BaseServiceSettings(bus_url=self.bus_url))
        reader = None
        try:
            while not stopping.is_set():
                try:
                    if reader is None:
                        await transport.start()
                        reader = transport.broadcast_reader(DETECTOR_HEARTBEAT_STREAM)
                    deliveries = await reader.read(1000, 500)
                except BusUnavailable:
                    await wait_or_stop(stopping, 0.5)
                    continue
                now = time.time()
                for delivery in deliveries:
                    try:
                        beat = decode_heartbeat(delivery.payload)
                    except msgspec.DecodeError:
                        continue
                    self.beats.append(Beat(now, beat))
        finally:
            await transport.close()
