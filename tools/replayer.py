"""``binance-alerter replay FILE...``: a recording served as a Binance market-stream server.

The routes are the exchange's (``fake_exchange.routes.route``): ``/market/stream?streams=``
gets combined frames, ``/market/ws/<stream>`` raw ones, the retired ``/ws`` and ``/stream``
connect and stay silent. Frames go out as recorded, whatever streams the client names, so
``binance-alerter up --binance-url`` with its usual URL runs the whole stack on a
recording; only the wrapper changes with the route (a combined frame's ``data`` unwrapped
for a raw route, a raw frame wrapped for a combined one).

The fake exchange cannot do this job: it renders ``Quote`` objects into ticker arrays,
whereas a replay must send the recorded text (depth, bookTicker and all) unchanged.
One playback is shared by every client, like one market. It starts when the first client
connects and pauses while none is connected, so nothing is played to an empty room. Timing
follows the receive times in the file, divided by ``speed`` (0: as fast as the slowest
client reads). With ``loop`` each later pass shifts the event times (``E``, ``T``) forward by
the recording's length, because a consumer rightly ignores ticks older than ones it has seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

import msgspec
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from common.logs import configure_logging
from common.runner import EXIT_CONFIG, supervise
from common.settings import BaseServiceSettings, SettingsError, load_settings
from fake_exchange.routes import Route, route
from tools.recording_formats import Recording, UnknownFormat, open_recordings

if TYPE_CHECKING:
    from collections.abc import Iterator

    from websockets.asyncio.server import Server
    from websockets.http11 import Request, Response

log = logging.getLogger(__name__)

CLIENT_QUEUE: Final = 1024
SLOW_CLIENT_TIMEOUT_S: Final = 10.0
_WRITE_LIMIT: Final = 2**16
_YIELD_EVERY: Final = 64  # frames sent back to back before other tasks get a turn (speed 0)


class _Envelope(msgspec.Struct):
    data: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


_envelope: Final = msgspec.json.Decoder(_Envelope)
_generic: Final = msgspec.json.Decoder()
_encoder: Final = msgspec.json.Encoder()


@dataclass(frozen=True)
class ReplayOptions:
    paths: list[str]
    host: str = "127.0.0.1"
    port: int = 9443
    speed: float = 1.0
    loop: bool = False


class _Frame:
    """One recorded frame, converted lazily to the wrapper a route wants, once for all."""

    __slots__ = ("_combined", "_raw", "_stream", "_text")

    def __init__(self, text: str | bytes, combined: bool, stream: bytes) -> None:
        self._text = text if isinstance(text, bytes) else text.encode()
        self._stream = stream
        self._combined: bytes | None = self._text if combined else None
        self._raw: bytes | None = None if combined else self._text

    def for_route(self, combined: bool) -> bytes | None:
        """None: nothing to send on that route (a combined frame without ``data``)."""
        if combined:
            if self._combined is None:
                self._combined = b'{"stream":%s,"data":%s}' % (self._stream, self._text)
            return self._combined
        if self._raw is None:
            try:
                data = _envelope.decode(self._text).data
            except msgspec.DecodeError:
                return None
            self._raw = bytes(data) if data else b""
        return self._raw or None


def shift_event_times(text: str | bytes, combined: bool, shift_ms: int) -> bytes:
    """The frame with every event's ``E`` and ``T`` moved forward by ``shift_ms``."""
    try:
        document = _generic.decode(text)
    except msgspec.DecodeError:
        return text if isinstance(text, bytes) else text.encode()
    payload = document.get("data") if combined and isinstance(document, dict) else document
    events = payload if isinstance(payload, list) else [payload]
    for event in events:
        if isinstance(event, dict):
            for key in ("E", "T"):
                if isinstance(event.get(key), int):
                    event[key] += shift_ms
    return _encoder.encode(document)


def _stream_name(url: str | None) -> bytes:
    """The stream a raw recording was made of, for wrapping it as a combined frame."""
    path = urlsplit(url or "").path.rstrip("/")
    name = path.rsplit("/", 1)[-1] if "/ws/" in path else ""
    return _encoder.encode(name)


@dataclass(eq=False)
class _Client:
    ws: ServerConnection
    route: Route
    queue: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(CLIENT_QUEUE))
    closing: bool = False


class ReplayServer:
    def __init__(self, paths: list[str], *, host: str = "127.0.0.1", port: int = 0,
                 speed: float = 1.0, loop: bool = False) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self._paths = paths
        self._host = host
        self._port = port
        self.speed = speed
        self.loop = loop
        self.frames_sent = 0
        self.passes = 0
        self.done = asyncio.Event()
        self._clients: set[_Client] = set()
        self._listening = asyncio.Event()
        self._server: Server | None = None
        self._player: asyncio.Task[None] | None = None

    async def start(self) -> None:
        for path in self._paths:
            Recording(path)  # fail now on an unknown format, not when the first client comes
        self._server = await serve(
            self._handle, self._host, self._port, process_request=self._process_request,
            compression=None, ping_interval=180, ping_timeout=600, close_timeout=1,
            max_size=2**16, write_limit=_WRITE_LIMIT)
        self._player = asyncio.create_task(self._play(), name="replay-player")

    async def stop(self) -> None:
        if self._player is not None:
            self._player.cancel()
            await asyncio.wait([self._player])
        if self._server is not None:
            for client in list(self._clients):  # a reader that stopped reading would hang close
                if client.ws.transport.get_write_buffer_size() > _WRITE_LIMIT:
                    client.ws.transport.abort()
            self._server.close()
            await self._server.wait_closed()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("ReplayServer not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def address(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"ws://{host}:{self.port}"

    # -- playback ----------------------------------------------------------------------------

    def _recordings(self) -> Iterator[Recording]:
        for path in self._paths:
            yield Recording(path)

    async def _play(self) -> None:
        clock = asyncio.get_running_loop().time
        shift_ms = 0
        while True:
            first_s: float | None = None
            last_s = 0.0
            count = 0
            anchor: tuple[float, float] | None = None  # (loop time, recorded time)
            for recording in self._recordings():
                stream = _stream_name(recording.url)
                for received_s, text in recording.frames_with_times():
                    if not self._listening.is_set():
                        await self._listening.wait()
                        anchor = None  # resume where we were, without a burst to catch up
                    if self.speed > 0:
                        if anchor is None or received_s < anchor[1]:
                            anchor = (clock(), received_s)
                        delay = anchor[0] + (received_s - anchor[1]) / self.speed - clock()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    elif count % _YIELD_EVERY == 0:
                        await asyncio.sleep(0)
                    if shift_ms:
                        text = shift_event_times(text, recording.combined, shift_ms)
                    await self._broadcast(_Frame(text, recording.combined, stream))
                    count += 1
                    first_s = received_s if first_s is None else first_s
                    last_s = received_s
            self.passes += 1
            if not self.loop or first_s is None:
                break
            shift_ms += round((last_s - first_s) * 1000) + 1000
        log.info("replay done after %d frames", self.frames_sent)
        print(f"replay done after {self.frames_sent} frames", flush=True)
        self.done.set()

    async def _broadcast(self, frame: _Frame) -> None:
        for client in list(self._clients):
            if client.closing or not client.route.market:
                continue
            message = frame.for_route(client.route.combined)
            if message is None:
                continue
            try:
                client.queue.put_nowait(message)
                continue
            except asyncio.QueueFull:
                pass
            if self.speed > 0:  # paced: a client that cannot keep up must not slow the rest
                self._kick(client)
                continue
            try:
                await asyncio.wait_for(client.queue.put(message), SLOW_CLIENT_TIMEOUT_S)
            except TimeoutError:
                self._kick(client)
        self.frames_sent += 1

    def _kick(self, client: _Client) -> None:
        log.warning("dropping a client that fell %d frames behind", CLIENT_QUEUE)
        client.closing = True
        client.ws.transport.abort()

    # -- connections -------------------------------------------------------------------------

    async def _process_request(self, conn: ServerConnection, request: Request
                               ) -> Response | None:
        if route(request.path) is None:
            return conn.respond(404, "Not Found\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        client_route = route(ws.request.path)
        assert client_route is not None  # _process_request answered the rest with 404
        client = _Client(ws, client_route)
        self._clients.add(client)
        self._update_listening()
        writer = asyncio.create_task(self._write(client))
        try:
            async for _ in ws:  # client messages are read (for pings and close), not answered
                pass
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(client)
            self._update_listening()
            writer.cancel()
            await asyncio.wait([writer])

    def _update_listening(self) -> None:
        if any(c.route.market and not c.closing for c in self._clients):
            self._listening.set()
        else:
            self._listening.clear()

    async def _write(self, client: _Client) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await client.ws.send(await client.queue.get(), text=True)


def run_replay(options: ReplayOptions) -> int:
    try:
        open_recordings(options.paths)  # as backtest does: a wrong file is one line, exit 2
    except (OSError, UnknownFormat) as exc:
        print(f"binance-alerter replay: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        settings = load_settings(BaseServiceSettings)
    except SettingsError as exc:
        print(f"binance-alerter replay: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_level, settings.log_format, service="replay")

    async def main(_: BaseServiceSettings, stopping: asyncio.Event) -> None:
        server = ReplayServer(options.paths, host=options.host, port=options.port,
                              speed=options.speed, loop=options.loop)
        await server.start()
        try:
            print(f"replay listening on {server.address}", flush=True)
            log.info("serving %d file(s) at %s; e.g. %s/market/stream?streams=!miniTicker@arr",
                     len(options.paths), _describe_speed(options.speed), server.address)
            await stopping.wait()
        finally:
            await server.stop()

    return asyncio.run(supervise("replay", settings, main))


def _describe_speed(speed: float) -> str:
    return "full speed" if speed == 0 else f"{speed:g}× the recorded pace"
