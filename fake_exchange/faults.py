"""The faults a fake exchange takes on command: drops, stalls, malformed frames, pings.

A mixin of `FakeExchange` (`fake_exchange.server`), kept apart so that the server module
holds the connections and the broadcasting only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import TYPE_CHECKING

from websockets.exceptions import ConnectionClosed

from fake_exchange.frames import MALFORMED_KINDS, Renderer, malformed, malformed_sample

if TYPE_CHECKING:
    from collections.abc import Callable

    from fake_exchange.clients import Client
    from fake_exchange.scenarios import Quote

logger = logging.getLogger(__name__)


class Faults:
    """Needs the server's clients, renderer and last frame, and its `_notify`, `_wait` and
    `_offer`."""

    _clients: set[Client]
    _renderer: Renderer
    _last_frame: list[Quote]
    _stalled: bool
    _stall_timer: asyncio.TimerHandle | None
    pongs_received: int

    def _notify(self) -> None:
        raise NotImplementedError

    async def _wait(self, pred: Callable[[], bool], limit_s: float | None = None) -> None:
        raise NotImplementedError

    async def _offer(self, client: Client, data: bytes, text: bool) -> None:
        raise NotImplementedError

    @property
    def stalled(self) -> bool:
        return self._stalled

    async def drop(self) -> None:
        """Abort every connection without a close frame, like a network drop (code 1006)."""
        victims = list(self._clients)
        for c in victims:
            c.closing = True
            c.ws.transport.abort()
        await self._wait(lambda: not any(c in self._clients for c in victims), 5.0)

    def stall(self, seconds: float | None = None) -> None:
        """Must be called from the event loop thread (it arms a timer on it)."""
        if seconds is not None and not (seconds >= 0 and math.isfinite(seconds)):
            raise ValueError("seconds must be a finite number >= 0")
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        self._stalled = True
        if seconds is not None:
            self._stall_timer = asyncio.get_running_loop().call_later(seconds, self.resume)
        self._notify()

    def resume(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        self._stalled = False
        self._notify()

    async def send_malformed(self, kind: str) -> None:
        """Queue one bad message to every market-route client, in order with its data frames
        (so during a stall it arrives on resume). `bad_price` corrupts the price field the
        client's stream carries: "c" for the tickers, "p" for markPrice and trades."""
        if kind not in MALFORMED_KINDS:
            raise ValueError(f"unknown malformed kind {kind!r}; expected one of {MALFORMED_KINDS}")
        sample = malformed_sample(self._last_frame)
        for c in list(self._clients):
            if not c.route.market or c.closing:
                continue
            stream, spec = c.data_stream()
            data, text = malformed(kind, spec, stream, is_combined=c.route.combined,
                                   renderer=self._renderer, sample=sample)
            await self._offer(c, data, text)

    async def ping(self, wait_s: float = 5.0) -> None:
        """Ping every client and count the pongs that come back within `wait_s`."""
        waiters: list[asyncio.Future[float]] = []
        for c in list(self._clients):
            with contextlib.suppress(ConnectionClosed):
                waiters.append(asyncio.ensure_future(await c.ws.ping()))
        if not waiters:
            return
        done, _ = await asyncio.wait(waiters, timeout=wait_s)
        self.pongs_received += sum(1 for f in done if not f.cancelled() and f.exception() is None)

