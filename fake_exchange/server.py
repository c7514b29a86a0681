"""A fake Binance USDⓈ-M market-stream server over real WebSockets.

One broadcaster task consumes the scenario, so every client sees the same market and a test
can reason about "the" frame k. It only consumes frames while someone is streaming and the
feed is not stalled: a jump placed at frame 5 is never lost because the ingestor connected late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from fake_exchange import control
from fake_exchange.broadcast import render_frame
from fake_exchange.clients import Client, QueueItem
from fake_exchange.connections import close_for_rate, write_loop
from fake_exchange.faults import Faults
from fake_exchange.frames import (
    Renderer,
    StreamSpec,
    parse_stream,
)
from fake_exchange.routes import route
from fake_exchange.scenarios import Quote, looped
from fake_exchange.subscriptions import (
    MAX_STREAMS,
    ConnectionStats,
    canonical,
    connections_summary,
    subscription_reply,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from websockets.asyncio.server import Server
    from websockets.http11 import Request, Response

    from fake_exchange.market import TradeMarket

logger = logging.getLogger(__name__)

_WRITE_LIMIT = 2**16  # bytes buffered per connection before send() waits for the socket


class FakeExchange(Faults):
    """The exchange end of every test: one market, many clients, faults on cue.

    Frames go out every `interval_s` real seconds (0: as fast as the slowest client reads),
    whatever the scenario's event-time step, so a test compresses minutes into a second.
    The scenario is consumed once, only while a client is streaming and the feed is not
    stalled; when it ends, connections stay open and silent (or it restarts, `loop=True`).

    `client_queue` frames may wait per client. With `interval_s > 0` a client whose queue
    is full is dropped (aborted, 1006) at once; with `interval_s == 0` the broadcaster waits
    for it up to `slow_client_timeout_s` (that wait is the "as fast as the socket allows"
    pacing), then drops it.

    With a `market` (`fake_exchange.market.TradeMarket`) the same port also serves REST
    `/fapi/v1/exchangeInfo`, and the market (not the scenario) fills the aggTrade, forceOrder
    and markPrice streams; scenario prices then lead the listed symbols' trades.
    """

    def __init__(
        self,
        scenario: Iterable[list[Quote]],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        interval_s: float = 1.0,
        wall_clock: bool = False,
        loop: bool = False,
        max_frames: int | None = None,
        client_queue: int = 512,
        slow_client_timeout_s: float = 5.0,
        market: TradeMarket | None = None,
    ) -> None:
        if interval_s < 0 or client_queue < 1:
            raise ValueError("interval_s >= 0 and client_queue >= 1 required")
        self._scenario = scenario
        self._host = host
        self._port = port
        self.interval_s = interval_s
        self.wall_clock = wall_clock
        self.loop = loop
        self.max_frames = max_frames
        self._queue_size = client_queue
        self._slow_timeout = slow_client_timeout_s
        self.connections_total = 0
        self.frames_sent = 0
        self.quotes_sent = 0
        self.pongs_received = 0
        self._clients: set[Client] = set()
        self._renderer = Renderer()
        self._last_frame: list[Quote] = []
        self._changed = asyncio.Event()
        self._done = asyncio.Event()
        self._error: BaseException | None = None
        self._stalled = False
        self._stall_timer: asyncio.TimerHandle | None = None
        self._server: Server | None = None
        self._broadcaster: asyncio.Task[None] | None = None
        self.market = market
        self._market_task: asyncio.Task[None] | None = None
        self.subs_version = 0  # bumped on every change of any connection's subscriptions
        self._conn_stats: deque[ConnectionStats] = deque(maxlen=1000)
        self.rejected_handshakes = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self._host,
            self._port,
            process_request=self._process_request,
            compression=None,  # Binance does not compress; deflate would dominate CPU
            ping_interval=180,  # Binance pings every 3 min and waits 10 min for the pong
            ping_timeout=600,
            close_timeout=1,
            max_size=2**16,
            write_limit=_WRITE_LIMIT,
        )
        self._broadcaster = asyncio.create_task(self._run(), name="fake-exchange-broadcaster")
        if self.market is not None:
            self._market_task = asyncio.create_task(self.market.run(self), name="fake-market")
        logger.info("fake exchange listening on %s", self.url())

    async def stop(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
        for task in (self._broadcaster, self._market_task):
            if task is not None:
                task.cancel()
                await asyncio.wait([task])
        if self._server is not None:
            # websockets drains the write buffer after queueing the close frame with no
            # deadline, so a client that stopped reading would hang close(): abort those.
            for c in list(self._clients):
                if c.ws.transport.get_write_buffer_size() > _WRITE_LIMIT:
                    c.ws.transport.abort()
            self._server.close()
            try:
                async with asyncio.timeout(3):
                    await self._server.wait_closed()
            except TimeoutError:
                for conn in self._server.connections:
                    conn.transport.abort()
                await self._server.wait_closed()

    async def __aenter__(self) -> FakeExchange:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeExchange not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def url(self, stream: str = "!miniTicker@arr", *, combined: bool = True) -> str:
        if combined:
            return f"{self.ws_base_url}/stream?streams={stream}"
        return f"{self.ws_base_url}/ws/{stream}"

    def _base(self, scheme: str) -> str:
        host = "127.0.0.1" if self._host in ("", "0.0.0.0") else self._host
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{host}:{self.port}"

    @property
    def rest_url(self) -> str:
        """Where `GET /fapi/v1/exchangeInfo` and `/control/...` answer."""
        return self._base("http")

    @property
    def ws_base_url(self) -> str:
        """The market route, as `wss://fstream.binance.com/market` is the exchange's."""
        return self._base("ws") + "/market"

    @property
    def active_connections(self) -> int:
        return len(self._clients)

    def stats(self) -> dict[str, Any]:
        return {
            "connections_total": self.connections_total,
            "active_connections": self.active_connections,
            "frames_sent": self.frames_sent,
            "quotes_sent": self.quotes_sent,
            "pongs_received": self.pongs_received,
            "stalled": self._stalled,
            "done": self._done.is_set(),
            "rejected_handshakes": self.rejected_handshakes,
            **connections_summary(self._conn_stats),
            **(self.market.stats() if self.market is not None else {}),
        }

    # -- the trade market's outlet -----------------------------------------------------------

    def market_clients(self) -> list[Client]:
        return [c for c in self._clients if c.route.market and not c.closing]

    def offer_batch(self, client: Client, batch: list[bytes]) -> None:
        """Queue one tick of the market for a client; one that fell that far behind is dropped."""
        if client.closing:
            return
        try:
            client.queue.put_nowait((batch, True))
        except asyncio.QueueFull:
            self._kick(client)

    # -- waiting -----------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait(self, pred: Callable[[], bool], limit_s: float | None = None) -> None:
        async with asyncio.timeout(limit_s):
            while not pred():
                await self._changed.wait()

    async def wait_for_connections(self, n: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - contract
        await self._wait(lambda: self.connections_total >= n, timeout)

    async def wait_until_done(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - contract
        """Raises RuntimeError if the scenario itself failed (the broadcaster logged it)."""
        async with asyncio.timeout(timeout):
            await self._done.wait()
        if self._error is not None:
            raise RuntimeError("scenario failed") from self._error

    # -- broadcasting ------------------------------------------------------------------------

    def _ready(self) -> bool:
        return not self._stalled and any(c.streaming for c in self._clients)

    async def _run(self) -> None:
        clock = asyncio.get_running_loop().time
        frames = looped(self._scenario) if self.loop else iter(self._scenario)
        next_at: float | None = None
        try:
            while self.max_frames is None or self.frames_sent < self.max_frames:
                if not self._ready():
                    await self._wait(self._ready)
                    next_at = None  # resume at once, do not burst to catch up
                if self.interval_s > 0:
                    now = clock()
                    if next_at is not None and now < next_at:
                        await asyncio.sleep(next_at - now)
                        continue  # a stall or drop may have happened meanwhile
                    if next_at is None or now - next_at > self.interval_s:
                        next_at = now
                    next_at += self.interval_s
                frame = next(frames, None)
                if frame is None:
                    break
                await self._publish(frame)
                if self.interval_s == 0:
                    await asyncio.sleep(0)
        except Exception as exc:
            logger.exception("scenario failed; the fake exchange stops sending")
            self._error = exc
        finally:
            logger.info("scenario done after %d frames", self.frames_sent)
            self._done.set()
            self._notify()

    async def _publish(self, frame: list[Quote]) -> None:
        self._renderer.apply(frame)
        market = self.market
        if market is not None:
            market.follow(frame)
        skip = market.serves if market is not None else _nothing
        for client, msg in render_frame(list(self._clients), self._renderer, frame,
                                        wall_clock=self.wall_clock, skip=skip):
            await self._offer(client, msg, True)
        self._last_frame = frame
        self.frames_sent += 1
        self.quotes_sent += len(frame)

    async def _offer(self, client: Client, data: bytes, text: bool) -> None:
        if client.closing:
            return
        try:
            client.queue.put_nowait((data, text))
            return
        except asyncio.QueueFull:
            pass
        if self.interval_s > 0:
            self._kick(client)
            return
        try:
            await asyncio.wait_for(client.queue.put((data, text)), self._slow_timeout)
        except TimeoutError:
            self._kick(client)

    def _kick(self, client: Client) -> None:
        """Drop a client that fell behind, so one slow reader cannot stall everyone.

        An abort, not a close frame: the frame would sit behind the unread backlog and the
        closing handshake could never finish.
        """
        logger.warning("dropping slow client %s: %d frames queued", client.ws.id, self._queue_size)
        client.closing = True
        client.ws.transport.abort()
        self._notify()

    # -- connections -------------------------------------------------------------------------

    async def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path.startswith("/control/"):
            return await control.handle(self, conn, url.path, url.query)
        if url.path.startswith("/fapi/") and self.market is not None:
            return self.market.rest.handle(conn, url.path, request.method)
        r = route(request.path)
        if r is None:
            return conn.respond(404, "Not Found\n")
        if len(r.streams) > MAX_STREAMS:
            self.rejected_handshakes += 1
            return conn.respond(400, f"at most {MAX_STREAMS} streams per connection\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        r = route(ws.request.path)
        assert r is not None  # _process_request rejected the rest
        self.connections_total += 1
        stats = ConnectionStats(self.connections_total, ws.request.path.split("?", 1)[0])
        queue: asyncio.Queue[QueueItem] = asyncio.Queue(self._queue_size)
        client = Client(ws, r, queue, stats)
        client.subs = {s: parse_stream(s) for s in map(canonical, r.streams)}
        stats.streams = len(client.subs)
        self._conn_stats.append(stats)
        self._clients.add(client)
        self.subs_version += 1
        client.writer = asyncio.create_task(self._write(client))
        self._notify()
        logger.debug("client %s connected to %s", ws.id, ws.request.path)
        clock = asyncio.get_running_loop().time
        try:
            async for message in ws:
                if not r.market:  # the old routes acknowledge nothing
                    continue
                if stats.hit(clock()):
                    await close_for_rate(client)
                    break
                self._on_message(client, message)
        except ConnectionClosed:
            pass
        finally:
            stats.open = False
            self._clients.discard(client)
            self.subs_version += 1
            client.writer.cancel()
            await asyncio.wait([client.writer])
            self._notify()
            logger.debug("client %s gone", ws.id)

    async def _write(self, client: Client) -> None:
        await write_loop(client, self._until_resumed)

    async def _until_resumed(self) -> None:
        if self._stalled:
            await self._wait(lambda: not self._stalled)

    def _on_message(self, client: Client, message: str | bytes) -> None:
        reply = subscription_reply(client.subs, client.stats, message,
                                   combined=client.route.combined)
        self.subs_version += 1
        with contextlib.suppress(asyncio.QueueFull):
            client.queue.put_nowait((reply, True))
        self._notify()


def _nothing(spec: StreamSpec) -> bool:
    return False
