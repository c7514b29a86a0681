"""The Kafka transport's config: brokers, timeouts, the ``KAFKA_*`` tuning, security.

Built once at start (``KafkaConfig.from_settings``, called by the registry's entry for
``kafka://``), which is the only place the ``KAFKA_*`` variables are read; everything below
takes the config. A bad value, or an SSL file that cannot be used, is a
``TransportConfigError`` naming the variable, raised then, before any connection, and
never showing the SASL password.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from aiokafka import AIOKafkaConsumer
from aiokafka.helpers import create_ssl_context

from common.bus.contract import TransportConfigError
from common.kafka_settings import KafkaSettings
from common.settings import SettingsError, load_settings

if TYPE_CHECKING:
    from common.settings import BaseServiceSettings

DEFAULT_PORT: Final = 9092


def bootstrap_servers(url: str) -> list[str]:
    """``kafka://h1:9092,h2:9092`` → ``["h1:9092", "h2:9092"]``; the port defaults to 9092."""
    netloc = urlsplit(url).netloc.rsplit("@", 1)[-1]
    servers = []
    for host in filter(None, (h.strip() for h in netloc.split(","))):
        servers.append(host if host.rsplit("]", 1)[-1].count(":") else f"{host}:{DEFAULT_PORT}")
    if not servers:
        raise TransportConfigError(f"BUS_URL {url!r} names no broker (kafka://host:port)")
    return servers


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    """Everything the transport's clients need; ``security`` is derived from ``kafka``
    (the SASL credentials, an SSL context) when the config is made, and kept out of its
    repr."""

    servers: tuple[str, ...]
    kafka: KafkaSettings
    timeout_s: float = 10.0
    security: Mapping[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            security = security_options(self.kafka)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise TransportConfigError(
                f"KAFKA_SSL_CAFILE/KAFKA_SSL_CERTFILE/KAFKA_SSL_KEYFILE cannot be used: {exc}"
            ) from None
        object.__setattr__(self, "security", security)

    @classmethod
    def from_url(cls, url: str, kafka: KafkaSettings, *, timeout_s: float = 10.0
                 ) -> KafkaConfig:
        return cls(tuple(bootstrap_servers(url)), kafka, timeout_s)

    @classmethod
    def from_settings(cls, settings: BaseServiceSettings) -> KafkaConfig:
        """``BUS_URL`` and ``BUS_TIMEOUT_S`` from the service, ``KAFKA_*`` read now."""
        try:
            kafka = load_settings(KafkaSettings)
        except SettingsError as exc:
            raise TransportConfigError(str(exc)) from None
        return cls.from_url(settings.bus_url, kafka, timeout_s=settings.bus_timeout_s)

    @property
    def request_timeout_ms(self) -> int:
        return int(self.timeout_s * 1000)

    def client_options(self) -> dict[str, Any]:
        """Options every aiokafka client of the transport shares."""
        return {"bootstrap_servers": list(self.servers), **self.security}


def security_options(kafka: KafkaSettings) -> dict[str, Any]:
    """``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_*`` and ``KAFKA_SSL_*`` as client options."""
    options: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    if kafka.security_protocol.startswith("SASL_"):
        password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        options.update(sasl_mechanism=kafka.sasl_mechanism,
                       sasl_plain_username=kafka.sasl_username,
                       sasl_plain_password=password)
    if kafka.security_protocol.endswith("SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=kafka.ssl_cafile, certfile=kafka.ssl_certfile, keyfile=kafka.ssl_keyfile)
    return options


def group_member(config: KafkaConfig, group: str, name: str) -> AIOKafkaConsumer:
    """A consumer-group member with manual commits and the group timings of the settings."""
    kafka = config.kafka
    return AIOKafkaConsumer(
        group_id=group,
        client_id=name,
        enable_auto_commit=False,
        auto_offset_reset="earliest",  # a new group sees what was written before it
        session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=kafka.heartbeat_interval_ms,
        fetch_max_wait_ms=kafka.fetch_max_wait_ms,
        # A JoinGroup may be held by the broker for up to the rebalance timeout.
        request_timeout_ms=max(config.request_timeout_ms, kafka.session_timeout_ms + 5000),
        **config.client_options(),
    )
