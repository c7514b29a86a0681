"""One typed, frozen settings object per service, read once from the environment.

A wrong value must stop the service before it touches the network, with a message that
names the variable an operator has to fix; pydantic's own messages name the Python field.
"""

from __future__ import annotations

import os
import socket
from typing import Annotated, Literal, Self, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.bus.registry import schemes as bus_schemes

_LOG_LEVELS = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})
_LOG_FORMATS = frozenset({"text", "json"})

PositiveSeconds = Annotated[float, Field(gt=0)]
Port = Annotated[int, Field(ge=0, le=65535)]


class SettingsError(ValueError):
    """A setting cannot be used; the message names the environment variable."""


def check_websocket_url(value: str) -> str:
    """``value`` when it is a ws:// or wss:// URL with a host, else ``ValueError``.

    Also the check of ``binance-alerter record URL``, whose error names the argument.
    """
    parts = urlsplit(value)
    if parts.scheme not in {"ws", "wss"} or not parts.netloc:
        raise ValueError("must be a ws:// or wss:// URL")
    return value


class BaseServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    bus_url: str = "redis://localhost:6379/0"
    tick_partitions: Annotated[int, Field(ge=1, le=1024)] = 4
    ticks_retention_s: PositiveSeconds = 900.0
    alerts_maxlen: Annotated[int, Field(ge=100)] = 10_000
    bus_timeout_s: PositiveSeconds = 10.0
    # Redis only (its group consumers): an entry left this long in another consumer's
    # pending list is claimed. Here rather than in one service's settings because every
    # group consumer (the detector, the coming notifier) shares the Redis backend's config.
    claim_min_idle_s: PositiveSeconds = 30.0
    # A group consumer (the detector, the notifier) runs an entry whose processing raises
    # this many times in all before it moves it to ``<stream>.dead`` (common.dead_letters).
    poison_max_attempts: Annotated[int, Field(ge=1, le=100)] = 3
    # Where a service's health server listens (the gateway serves /metrics on its own port).
    metrics_host: str = "0.0.0.0"
    shutdown_timeout_s: PositiveSeconds = 10.0
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _forgive_case(cls, value: object) -> object:
        """``debug`` and ``JSON`` are meant as ``DEBUG`` and ``json``; anything else is left
        as given, so that the error message shows what the operator wrote."""
        if not isinstance(value, str):
            return value
        if value.upper() in _LOG_LEVELS:
            return value.upper()
        return value.lower() if value.lower() in _LOG_FORMATS else value

    @field_validator("bus_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        known = bus_schemes()  # asked now: a scheme registered at run time counts
        if scheme not in known:
            raise ValueError(f"scheme must be one of {sorted(known)}, got {scheme!r}")
        return value


def check_http_url(value: str) -> str:
    """``value`` when it is an http:// or https:// URL with a host, else ``ValueError``."""
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return value


class IngestorSettings(BaseServiceSettings):
    # mini_ticker: one connection to BINANCE_WS_URL. agg_trade: every tradable perpetual's
    # trades, listed from BINANCE_REST_URL, over as many connections to BINANCE_WS_BASE_URL
    # as STREAMS_PER_CONNECTION asks for (ingestor.board).
    feed: Literal["mini_ticker", "agg_trade"] = "mini_ticker"
    # The WebSocket client of the exchange connections (ingestor.ws_client): picows, in
    # Cython, takes a fraction of the per-message CPU of websockets, in pure Python.
    ws_client: Literal["picows", "websockets"] = "picows"
    # The default carries liquidations and mark prices with funding beside the mini
    # ticker, so that every rule kind works on the default feed.
    binance_ws_url: str = ("wss://fstream.binance.com/market/stream?streams="
                           "!miniTicker@arr/!forceOrder@arr/!markPrice@arr@1s")
    binance_rest_url: str = "https://fapi.binance.com"
    binance_ws_base_url: str = "wss://fstream.binance.com/market"
    symbols_refresh_s: Annotated[float, Field(ge=0.5, le=86_400)] = 300.0
    # The exchange takes at most 1024 streams per connection; 200 keeps a frame burst small.
    streams_per_connection: Annotated[int, Field(ge=1, le=1024)] = 200
    # Ticks wait at most this long in the publisher for others of their partition.
    flush_ms: Annotated[int, Field(ge=0, le=1000)] = 5
    stale_after_s: PositiveSeconds = 30.0
    rotate_after_s: PositiveSeconds = 23 * 3600.0
    reconnect_min_s: PositiveSeconds = 0.5
    reconnect_max_s: PositiveSeconds = 30.0
    healthy_after_s: PositiveSeconds = 60.0
    ws_max_frame_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024 * 1024
    ingest_buffer_frames: Annotated[int, Field(ge=1)] = 10_000
    ingestor_metrics_port: Port = 9101

    @field_validator("binance_ws_url")
    @classmethod
    def _websocket_url(cls, value: str) -> str:
        return check_websocket_url(value)

    @field_validator("binance_ws_base_url")
    @classmethod
    def _websocket_base(cls, value: str) -> str:
        check_websocket_url(value)
        parts = urlsplit(value)
        if parts.query or parts.fragment:
            raise ValueError("must be a base URL without a query (…/market, not …/stream?…)")
        return value.rstrip("/")

    @field_validator("binance_rest_url")
    @classmethod
    def _rest_url(cls, value: str) -> str:
        return check_http_url(value).rstrip("/")

    @model_validator(mode="after")
    def _backoff_order(self) -> Self:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("RECONNECT_MAX_S must be >= RECONNECT_MIN_S")
        if self.feed == "agg_trade" and self.streams_per_connection < 2:
            raise ValueError("STREAMS_PER_CONNECTION must be at least 2 with FEED=agg_trade "
                             "(connection 0 carries the liquidation and mark price streams)")
        return self


class DetectorSettings(BaseServiceSettings):
    window_s: Annotated[int, Field(ge=1, le=86_400)] = 60
    threshold_up_pct: Annotated[float, Field(gt=0)] = 2.0
    threshold_down_pct: Annotated[float, Field(gt=0)] = 2.0
    cooldown_s: Annotated[int, Field(ge=0)] | None = None
    detector_partitions: str = ""
    # The member's name in group ``detector``: unique per process unless set, so that any
    # number of detectors can be started from one configuration.
    detector_consumer: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        default_factory=lambda: unique_consumer_name())
    # With DETECTOR_PARTITIONS unset, detectors share the partitions through leases of this
    # length: a dead detector's partitions are taken over after it (plus the rebuild).
    lease_s: Annotated[float, Field(ge=0.5, le=300)] = 5.0
    read_count: Annotated[int, Field(ge=1, le=10_000)] = 256
    read_block_ms: Annotated[int, Field(ge=1)] = 1000
    rebuild_margin_s: Annotated[float, Field(ge=0)] = 10.0
    detector_metrics_port: Port = 9102
    # How often the detector publishes its heartbeat on ``detector.heartbeat`` (the page's
    # "no detector consuming" / "detector behind"); keep it well below HEALTH_DETECTOR_STALE_S.
    detector_heartbeat_s: Annotated[float, Field(gt=0, le=60)] = 1.0

    @property
    def effective_cooldown_s(self) -> int:
        return self.window_s if self.cooldown_s is None else self.cooldown_s

    @property
    def shared(self) -> bool:
        """True when the partitions are divided among the running detectors (leases on
        Redis, the consumer group on Kafka); False for a fixed ``DETECTOR_PARTITIONS``."""
        return not self.detector_partitions.strip()

    @property
    def partitions(self) -> tuple[int, ...]:
        """The partitions this detector may read: ``DETECTOR_PARTITIONS``, or all of them
        (shared with the other detectors)."""
        if not self.detector_partitions.strip():
            return tuple(range(self.tick_partitions))
        return tuple(int(p) for p in self.detector_partitions.split(","))

    @field_validator("detector_partitions")
    @classmethod
    def _partition_list(cls, value: str, info: ValidationInfo) -> str:
        """Each partition once, in range: a partition listed twice would be read (and its
        history replayed) twice."""
        if not value.strip():
            return value
        seen: set[int] = set()
        for part in (p.strip() for p in value.split(",")):
            if not part:
                raise ValueError("an empty entry between commas; expected comma-separated "
                                 "partition numbers, e.g. 0,1")
            if not part.isdigit():
                raise ValueError(f"expected comma-separated partition numbers, got {part!r}")
            partition = int(part)
            if partition in seen:
                raise ValueError(f"partition {partition} is listed twice")
            total = info.data.get("tick_partitions")
            if isinstance(total, int) and partition >= total:
                raise ValueError(f"partition {partition} >= TICK_PARTITIONS ({total})")
            seen.add(partition)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.read_block_ms / 1000 >= self.bus_timeout_s:
            raise ValueError("READ_BLOCK_MS must stay below BUS_TIMEOUT_S")
        # A lease is renewed between reads: a blocking read and the batch after it must fit
        # in it twice over, or a healthy detector would let its partitions go.
        if self.shared and self.lease_s < 2 * self.read_block_ms / 1000:
            raise ValueError(f"LEASE_S={self.lease_s:g} must be at least twice READ_BLOCK_MS "
                             f"({self.read_block_ms} ms): leases are renewed between reads")
        return self


def unique_consumer_name() -> str:
    """``<host>-<pid>``: a group member name no other running detector has."""
    return f"{socket.gethostname()[:180] or 'detector'}-{os.getpid()}"


class GatewaySettings(BaseServiceSettings):
    gateway_host: str = "0.0.0.0"
    gateway_port: Port = 8080
    history_size: Annotated[int, Field(ge=0, le=10_000)] = 50
    max_clients: Annotated[int, Field(ge=1)] = 1000
    read_block_ms: Annotated[int, Field(ge=1)] = 1000
    allowed_origins: str = ""
    ws_heartbeat_s: PositiveSeconds = 15.0
    ws_ping_interval_s: PositiveSeconds = 20.0
    ws_ping_timeout_s: PositiveSeconds = 20.0
    # Bearer token of the rules admin API (/api/admin/*); unset or empty: the API is off.
    admin_token: SecretStr | None = None
    # workers: processes serving the one port (gateway.workers); each is a whole gateway
    # with its own readers, hub and MAX_CLIENTS.
    gateway_workers: Annotated[int, Field(ge=1, le=64)] = 1
    # fanout: bytes a browser's connection may hold unsent (beyond the kernel's buffer)
    # before it is dropped as too slow; alerts are ~1-2 kB, so this is ~100-250 of them.
    ws_max_buffered_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 256 * 1024
    # Pipeline health (gateway.health): the page's header and the /readyz body.
    # Data older than this is a stale feed (amber), older than DOWN a dead one (red).
    health_feed_stale_s: PositiveSeconds = 5.0
    health_feed_down_s: PositiveSeconds = 30.0
    # No heartbeat from any detector for this long: "no detector consuming" (red).
    health_detector_stale_s: PositiveSeconds = 5.0
    # The detector's newest processed tick this far behind the feed's: amber; DOWN: red.
    health_detector_lag_s: PositiveSeconds = 5.0
    health_detector_down_s: PositiveSeconds = 30.0
    # A symbol counts as watched while it had a tick within this window.
    health_symbols_window_s: PositiveSeconds = 60.0
    # How often health is evaluated (a change reaches the browsers within one check).
    health_check_s: Annotated[float, Field(gt=0, le=10)] = 1.0

    @property
    def origins(self) -> frozenset[str]:
        """Browser origins allowed on ``/ws`` besides the ones the gateway serves the page
        at itself (``gateway.origins``): where the page is published under a name."""
        return frozenset(o.strip().rstrip("/") for o in self.allowed_origins.split(",")
                         if o.strip())

    @field_validator("allowed_origins")
    @classmethod
    def _origin_list(cls, value: str) -> str:
        for origin in filter(None, (o.strip() for o in value.split(","))):
            parts = urlsplit(origin)
            if origin != "*" and (parts.scheme not in {"http", "https"} or not parts.netloc
                                  or parts.path not in {"", "/"}):
                raise ValueError(f"expected '*' or origins like https://host:port, got {origin!r}")
        return value

    @field_validator("admin_token", mode="before")
    @classmethod
    def _token(cls, value: object) -> object:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str):
            value = value.strip()
            if not value:
                return None
            if len(value) < 16:
                raise ValueError("must be at least 16 characters (or unset to turn the "
                                 "admin API off)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.read_block_ms / 1000 >= self.bus_timeout_s:
            raise ValueError("READ_BLOCK_MS must stay below BUS_TIMEOUT_S")
        if self.health_feed_down_s <= self.health_feed_stale_s:
            raise ValueError("HEALTH_FEED_DOWN_S must be above HEALTH_FEED_STALE_S")
        if self.health_detector_down_s <= self.health_detector_lag_s:
            raise ValueError("HEALTH_DETECTOR_DOWN_S must be above HEALTH_DETECTOR_LAG_S")
        return self

    # Bounds on one HTTP request (gateway.limits): its longest line (the request line: 414;
    # a header line: 431), its whole head (431), its body (413), and the time it may take
    # to arrive (408). Lines stop at 8 KiB, the WebSocket handshake parser's own limit,
    # beyond which an upgrade would get no answer at all.
    max_request_line_bytes: Annotated[int, Field(ge=256, le=8192)] = 8192
    max_header_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024)] = 32 * 1024
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 64 * 1024
    request_read_timeout_s: PositiveSeconds = 10.0

    @model_validator(mode="after")
    def _request_limits(self) -> Self:
        if self.max_header_bytes < self.max_request_line_bytes:
            raise ValueError("MAX_HEADER_BYTES must be at least MAX_REQUEST_LINE_BYTES")
        return self


class NotifierSettings(BaseServiceSettings):
    # The channels and routes (notifier.config): a TOML file; required.
    notify_config: Annotated[str, Field(min_length=1)]
    notifier_metrics_port: Port = 9103
    notifier_consumer: Annotated[str, Field(min_length=1, max_length=200)] = "notifier-1"
    read_count: Annotated[int, Field(ge=1, le=10_000)] = 256
    read_block_ms: Annotated[int, Field(ge=1)] = 1000
    # An alert older than this when it reaches the notifier is not sent (counted and
    # logged): a first start does not page anyone with the stream's whole history.
    notify_max_age_s: PositiveSeconds = 900.0
    # A 5xx or a timeout is retried with jittered backoff until the alert is this old at
    # its channel; then it goes to ``notifications.dead``.
    notify_retry_deadline_s: PositiveSeconds = 300.0
    # How long one request to a channel's API may take.
    notify_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    # The delivery state on the bus (which channel accepted which alert) is kept this long:
    # the horizon within which a restart resends nothing a channel already took.
    notify_ledger_kept_s: Annotated[float, Field(ge=60, le=30 * 86_400)] = 86_400.0

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.read_block_ms / 1000 >= self.bus_timeout_s:
            raise ValueError("READ_BLOCK_MS must stay below BUS_TIMEOUT_S")
        if self.notify_ledger_kept_s <= self.notify_max_age_s:
            raise ValueError("NOTIFY_LEDGER_KEPT_S must be above NOTIFY_MAX_AGE_S")
        return self


S = TypeVar("S", bound=BaseSettings)


def address_in_use(variable: str, host: str, port: int, error: OSError) -> SettingsError:
    """The error for a port a service cannot listen on: a setting to change, not a crash
    to restart (another process holds it, or the host is not this machine's)."""
    return SettingsError(f"invalid {variable}={port}: cannot listen on {host}:{port} "
                         f"({error.strerror or error})")


def load_settings(cls: type[S], **overrides: object) -> S:
    """Build settings from the environment, turning validation errors into named ones."""
    try:
        return cls(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(_describe(exc, str(cls.model_config.get("env_prefix") or ""))
                            ) from None


def _describe(exc: ValidationError, prefix: str = "") -> str:
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        name = (prefix + field).upper() if field else "settings"
        value = error.get("input")
        if field == "bus_url" and isinstance(value, str):
            value = redact_url(value)
        secret = "password" in field or "token" in field
        shown = (f"={value!r}" if field and not secret and isinstance(value, str | int | float)
                 else "")
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"invalid {name}{shown}: {message}")
    return "; ".join(problems)


def redact_url(url: str) -> str:
    """Hide the passwords a URL holds (before its hosts, or a ``…password=`` option, as in
    ``redis+sentinel://…?sentinel_password=``) before it reaches a log or an error message."""
    parts = urlsplit(url)
    if parts.password is not None:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        parts = parts._replace(netloc=netloc)
    if "password" in parts.query:
        query = "&".join(
            f"{name}=***" if "password" in name.lower() else f"{name}{sep}{value}"
            for name, sep, value in (item.partition("=") for item in parts.query.split("&")))
        parts = parts._replace(query=query)
    return parts.geturl()
