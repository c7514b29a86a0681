"""Every registered WebSocket client against a real server on a free port: what the feed
relies on of a client, message by message."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.server import ServerConnection, serve

from ingestor.ws_client import CLIENTS, ConnectFailed, ConnectionClosed, Options
from tools.redis_server import free_port

OPTIONS = Options(max_size=4096, ping_interval_s=20.0, ping_timeout_s=20.0,
                  close_timeout_s=2.0, open_timeout_s=5.0)

Handler = Callable[[ServerConnection], Awaitable[None]]


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[str]:
    async with serve(handler, "127.0.0.1", 0, compression=None) as ws_server:
        port = next(iter(ws_server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/ws"


class Received:
    def __init__(self) -> None:
        self.messages: list[tuple[bytes | str, bool]] = []
        self.arrived = asyncio.Event()

    def __call__(self, message: bytes | str, binary: bool) -> None:
        self.messages.append((message, binary))
        self.arrived.set()

    def texts(self) -> list[str]:
        return [m.decode() if isinstance(m, bytes) else m for m, binary in self.messages
                if not binary]


async def test_text_binary_and_fragmented_messages_arrive_whole_and_in_order(
        ws_client: str) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send('{"a": 1}')
        await ws.send(b"\x00\x01")
        await ws.send(['{"b": ', "2}"])  # one text message in two frames
        await ws.send('{"c": 3}')
        await ws.wait_closed()

    received = Received()
    async with server(handler) as url:
        connection = await CLIENTS[ws_client](url, received, OPTIONS)
        reader = asyncio.create_task(connection.closed())
        async with asyncio.timeout(5):
            while len(received.messages) < 4:
                received.arrived.clear()
                await received.arrived.wait()
        await connection.close()
        await asyncio.wait_for(reader, 5)
    assert received.texts() == ['{"a": 1}', '{"b": 2}', '{"c": 3}']
    assert [(m if binary else None) for m, binary in received.messages] == [
        None, b"\x00\x01", None, None]


async def test_the_server_closing_is_reported_with_its_code(ws_client: str) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.close(4001, "maintenance")

    async with server(handler) as url:
        connection = await CLIENTS[ws_client](url, Received(), OPTIONS)
        reason = await asyncio.wait_for(connection.closed(), 5)
        assert "4001" in reason
        assert "maintenance" in reason
        with pytest.raises(ConnectionClosed):
            await connection.send("{}")
        await connection.close()  # closing a closed connection is no error


async def test_a_message_over_the_size_limit_closes_the_connection(ws_client: str) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("x" * (OPTIONS.max_size + 1))
        await ws.wait_closed()

    received = Received()
    async with server(handler) as url:
        connection = await CLIENTS[ws_client](url, received, OPTIONS)
        reason = await asyncio.wait_for(connection.closed(), 5)
    assert "1009" in reason or "too big" in reason.lower()
    assert received.messages == []


async def test_a_fragmented_message_over_the_size_limit_closes_the_connection(
        ws_client: str) -> None:
    half = "x" * (OPTIONS.max_size // 2 + 1)

    async def handler(ws: ServerConnection) -> None:
        await ws.send([half, half])
        await ws.wait_closed()

    received = Received()
    async with server(handler) as url:
        connection = await CLIENTS[ws_client](url, received, OPTIONS)
        reason = await asyncio.wait_for(connection.closed(), 5)
    assert "1009" in reason
    assert received.messages == []


async def test_text_sent_reaches_the_server_and_a_clean_close_ends_the_reader(
        ws_client: str) -> None:
    got: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        got.append(str(await ws.recv()))
        await ws.send("ack")
        await ws.wait_closed()

    received = Received()
    async with server(handler) as url:
        connection = await CLIENTS[ws_client](url, received, OPTIONS)
        reader = asyncio.create_task(connection.closed())
        await connection.send('{"method": "SUBSCRIBE"}')
        await asyncio.wait_for(received.arrived.wait(), 5)
        await connection.close()
        reason = await asyncio.wait_for(reader, 5)
    assert got == ['{"method": "SUBSCRIBE"}']
    assert received.texts() == ["ack"]
    assert "1000" in reason


async def test_nobody_listening_fails_to_connect(ws_client: str) -> None:
    with pytest.raises(ConnectFailed):
        await CLIENTS[ws_client](f"ws://127.0.0.1:{free_port()}/ws", Received(), OPTIONS)


async def test_an_exception_of_the_callback_is_raised_by_closed(ws_client: str) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("boom")
        await ws.wait_closed()

    def on_message(message: bytes | str, binary: bool) -> None:
        raise RuntimeError("a bug in the feed")

    async with server(handler) as url:
        connection = await CLIENTS[ws_client](url, on_message, OPTIONS)
        with pytest.raises(RuntimeError, match="a bug in the feed"):
            await asyncio.wait_for(connection.closed(), 5)
        await connection.close()
