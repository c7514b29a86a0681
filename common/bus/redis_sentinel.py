"""Redis behind Sentinel: ``BUS_URL=redis+sentinel://…``, the Redis Streams backend on
whichever node the Sentinels name the master.

The URL (the convention of other redis-py users: a list of Sentinels, the master's name,
the database; the data nodes' credentials before the hosts, the Sentinels' own in the
query)::

    redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/<master>[/<db>]
        [?sentinel_username=…&sentinel_password=…]

A Sentinel's port defaults to 26379, the database to 0. The client is redis-py's
``Sentinel(...).master_for(master)``: its pool asks the Sentinels for the master's address
whenever it opens a connection, and drops a connection to a master that was demoted
(``READONLY``) or that died. A failover therefore surfaces as ``BusUnavailable`` on the
calls made during it, which the services already retry; the first call after it goes to
the promoted replica. The same timeouts as the plain client, and no retries (a retried
``XADD`` could write twice).

A master that refuses writes because no replica is in reach (``min-replicas-to-write``,
``NOREPLICAS``) is unavailable too, as is a replica's ``MASTERDOWN``: both are waited out,
not taken for a bad command.

One gap of that pool is closed here: it asks the Sentinels only when it opens a
connection, and a master that was failed over while still alive (a manual failover, a
network blip) keeps accepting writes until the Sentinels demote it, seconds later, and
then discards them. So the pool asks again at most every ``MASTER_CHECK_S`` and moves its
connections, idle or just handed back, to the master the Sentinels name.
"""

from __future__ import annotations

import logging
import time
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

import redis.asyncio as redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from common.bus.contract import TransportConfigError
from common.bus.redis_streams import RedisConfig, RedisTransport

if TYPE_CHECKING:
    from common.settings import BaseServiceSettings

log = logging.getLogger(__name__)

SCHEME: Final = "redis+sentinel"
MASTER_CHECK_S: Final = 1.0
DEFAULT_PORT: Final = 26379
# Replies that say "not now" rather than "not this": the Redis backend's BusUnavailable.
_UNAVAILABLE_REPLIES: Final = ("NOREPLICAS", "MASTERDOWN")
_QUERY_KEYS: Final = frozenset({"sentinel_username", "sentinel_password"})
_FORM: Final = "redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/<master>[/<db>]"


def _bad(reason: str) -> TransportConfigError:
    # Never the URL itself: it may hold passwords.
    return TransportConfigError(f"BUS_URL: {reason} (expected {_FORM})")


@dataclass(frozen=True, slots=True)
class SentinelAddress:
    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> SentinelAddress:
        """The parts of a ``redis+sentinel://`` URL; ``TransportConfigError`` naming
        ``BUS_URL`` (and never quoting it) for anything else."""
        try:
            parts = urlsplit(url)
        except ValueError:
            raise _bad("not a URL") from None
        if parts.scheme != SCHEME:
            raise _bad(f"scheme {parts.scheme!r} is not {SCHEME!r}")
        userinfo, at, hostlist = parts.netloc.rpartition("@")
        username = password = None
        if at:
            user, colon, secret = userinfo.partition(":")
            username = unquote(user) or None
            password = unquote(secret) if colon else None  # as redis-py reads redis://
        sentinels = tuple(_host_port(item) for item in hostlist.split(","))
        segments = parts.path.split("/")[1:]
        if not segments or not segments[0]:
            raise _bad("names no master (the path's first part)")
        if len(segments) > 2:
            raise _bad("path has more than /<master>/<db>")
        master = unquote(segments[0])
        db = 0
        if len(segments) == 2 and segments[1]:
            if not segments[1].isdigit():
                raise _bad("database must be a number")
            db = int(segments[1])
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(set(query) - _QUERY_KEYS)
        if unknown:
            raise _bad(f"unknown option(s) {', '.join(unknown)} "
                       f"(known: {', '.join(sorted(_QUERY_KEYS))})")
        return cls(sentinels, master, db, username, password,
                   query.get("sentinel_username") or None,
                   query.get("sentinel_password") or None)


def _host_port(item: str) -> tuple[str, int]:
    if not item:
        raise _bad("names an empty Sentinel (host[:port] between commas)")
    if item.startswith("["):  # [IPv6]:port
        host, bracket, rest = item[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise _bad("a bracketed IPv6 Sentinel address is not closed")
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise _bad("names a Sentinel without a host")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _bad("a Sentinel's port must be a number from 1 to 65535")
    return host, int(port_text)


class MasterConnection(SentinelManagedConnection):
    """redis-py's connection to the master (``READONLY`` from a demoted one is already a
    connection error there), with the replies of a master that cannot write now as
    connection errors too."""

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except ResponseError as exc:
            text = str(exc)
            if not text.startswith(_UNAVAILABLE_REPLIES) and \
                    getattr(exc, "status_code", None) not in _UNAVAILABLE_REPLIES:
                raise
            await self.disconnect()
            raise RedisConnectionError(text.split(" ", 1)[0] + ": the master cannot write "
                                       "now") from exc


class CheckedMasterPool(SentinelConnectionPool):
    """redis-py's pool of connections to the master, asking the Sentinels where the
    master is at most every ``MASTER_CHECK_S`` rather than only on a new connection, and
    handing out no connection to another node than the one they name."""

    _next_check = 0.0

    async def get_connection(self, *args: Any, **options: Any) -> AbstractConnection:
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + MASTER_CHECK_S
            # No Sentinel answering is no reason to fail a command the master may take;
            # a new connection would fail on it anyway, with BusUnavailable.
            with suppress(RedisConnectionError, RedisTimeoutError, OSError):
                before = self.master_address
                # When the master moved, this drops the idle connections too.
                await self.get_master_address()  # type: ignore[no-untyped-call]
                if before is not None and self.master_address != before:
                    log.warning("the Sentinels name a new master for %s", self.service_name)
        get = super().get_connection
        connection: AbstractConnection = await get(  # type: ignore[no-untyped-call]
            *args, **options)
        if (self.master_address is not None and connection.is_connected
                and (connection.host, getattr(connection, "port", None))
                != self.master_address):
            try:  # one that was in use when the master moved: open it to the new one
                await connection.disconnect()
                await connection.connect()  # type: ignore[no-untyped-call]
            except BaseException:
                await self.release(connection)
                raise
        return connection


def master_client(address: SentinelAddress, timeout_s: float) -> tuple[Sentinel, redis.Redis]:
    """The Sentinel manager and a client of the master it names, with the plain client's
    timeouts and no retries."""
    connect_s = min(timeout_s, 5.0)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(address.sentinels),
        sentinel_kwargs={"socket_timeout": timeout_s, "socket_connect_timeout": connect_s,
                         "retry": Retry(NoBackoff(), 0),
                         "username": address.sentinel_username,
                         "password": address.sentinel_password},
    )
    client = sentinel.master_for(
        address.master, connection_pool_class=CheckedMasterPool,
        connection_class=MasterConnection, db=address.db,
        username=address.username, password=address.password,
        retry=Retry(NoBackoff(), 0), health_check_interval=30,
        socket_timeout=timeout_s, socket_connect_timeout=connect_s)
    return sentinel, client


class SentinelTransport(RedisTransport):
    """The Redis transport on the master the Sentinels name; closing it closes the
    connections to the Sentinels too."""

    def __init__(self, config: RedisConfig, address: SentinelAddress) -> None:
        self._sentinel, client = master_client(address, config.timeout_s)
        super().__init__(config, client=client)

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            await self._sentinel.aclose()


def from_settings(settings: BaseServiceSettings) -> SentinelTransport:
    """The registry's entry for ``redis+sentinel://``."""
    return SentinelTransport(RedisConfig.from_settings(settings),
                             SentinelAddress.parse(settings.bus_url))
