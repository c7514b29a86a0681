"""Hostile HTTP clients on raw sockets: what no well-behaved library sends (a 64 MB header, a
trickle, a body that never ends), and what the server answers to it, byte for byte.

Sending and reading run in two threads, so that an answer given while the client is still
sending is seen when it arrives, and blocking ``sendall`` of a large buffer stays one call
outside the GIL (the test's event loop, reading alerts meanwhile, is not slowed by it).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

WS_KEY: Final = "dGhlIHNhbXBsZSBub25jZQ=="


@dataclass
class Answer:
    """What came back on one connection, until the server closed it or the wait ended."""

    raw: bytes = b""
    closed: bool = False  # the server ended the stream (FIN or reset) within the wait
    answered_after_s: float | None = None  # first byte of the answer, from the first sent
    closed_after_s: float | None = None
    send_error: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> int | None:
        line = self.raw.split(b"\r\n", 1)[0].split(b" ")
        return int(line[1]) if len(line) > 1 and line[1].isdigit() else None

    @property
    def body(self) -> bytes:
        return self.raw.partition(b"\r\n\r\n")[2]

    def parse(self) -> Answer:
        head = self.raw.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]
        self.headers = {name.strip().lower(): value.strip()
                        for name, _, value in (line.partition(":") for line in head)}
        return self


def request(method: str, path: str, *headers: str, body: bytes = b"",
            host: str = "gateway.test") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def upgrade(path: str = "/ws", *headers: str, host: str = "gateway.test") -> bytes:
    """A WebSocket handshake as a browser sends it (without ``Origin`` unless given)."""
    return request("GET", path, "Upgrade: websocket", "Connection: Upgrade",
                   "Sec-WebSocket-Version: 13", f"Sec-WebSocket-Key: {WS_KEY}", *headers,
                   host=host)


def exchange(port: int, parts: Iterable[bytes], *, wait_s: float = 5.0,
             pause_s: float = 0.0, host: str = "127.0.0.1") -> Answer:
    """Send ``parts`` (``pause_s`` apart) on a new connection while reading what comes back;
    return once the server closed the connection, or after ``wait_s``."""
    answer = Answer()
    sock = socket.create_connection((host, port), timeout=wait_s)
    started = time.monotonic()
    done = threading.Event()

    def send() -> None:
        try:
            for part in parts:
                if done.is_set():
                    return
                sock.sendall(part)
                if pause_s:
                    time.sleep(pause_s)
        except OSError as exc:
            answer.send_error = repr(exc)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        deadline = started + wait_s
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                chunk = b""  # a reset ends the stream as surely as a FIN
            now = time.monotonic() - started
            if not chunk:
                answer.closed, answer.closed_after_s = True, now
                break
            if answer.answered_after_s is None:
                answer.answered_after_s = now
            answer.raw += chunk
    finally:
        done.set()
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        sender.join(5)
    return answer.parse()


async def exchange_async(port: int, parts: Iterable[bytes], *, wait_s: float = 5.0,
                         pause_s: float = 0.0) -> Answer:
    """``exchange`` in a thread, so that the caller's event loop keeps running."""
    return await asyncio.to_thread(exchange, port, parts, wait_s=wait_s, pause_s=pause_s)
