"""``KAFKA_*``: the Kafka transport's own settings, apart from the services' (they are read
only when ``BUS_URL`` picks Kafka; see ``common.bus.kafka.config``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    """``KAFKA_*``: how the Kafka transport talks to the brokers (``BUS_URL=kafka://…``).

    Read once at start by the Kafka backend's entry in the bus registry, when ``BUS_URL``
    picks Kafka, so that a Redis deployment never parses them; a bad value still stops the
    service at start (exit code 2) with the variable named. The defaults suit a real Kafka
    cluster; the in-memory ``tansu`` broker of ``binance-alerter up --bus kafka`` and of the
    tests needs ``KAFKA_IDEMPOTENCE=false``.
    """

    model_config = SettingsConfigDict(
        env_prefix="KAFKA_", env_file=".env", env_file_encoding="utf-8", extra="ignore",
        frozen=True,
    )

    idempotence: bool = True
    replication_factor: Annotated[int, Field(ge=1, le=32_767)] = 1
    topic_partitions: Annotated[int, Field(ge=1, le=10_000)] = 1
    linger_ms: Annotated[int, Field(ge=0, le=60_000)] = 0
    batch_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 256 * 1024
    fetch_max_wait_ms: Annotated[int, Field(ge=0, le=10_000)] = 100
    session_timeout_ms: Annotated[int, Field(ge=1000, le=3_600_000)] = 10_000
    heartbeat_interval_ms: Annotated[int, Field(ge=10, le=3_600_000)] = 3_000
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    @field_validator("security_protocol", "sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("ssl_cafile", "ssl_certfile", "ssl_keyfile")
    @classmethod
    def _readable_file(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError("no such file")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("KAFKA_HEARTBEAT_INTERVAL_MS must stay below "
                             "KAFKA_SESSION_TIMEOUT_MS")
        if self.security_protocol.startswith("SASL_") and not (
                self.sasl_username and self.sasl_password):
            raise ValueError(f"KAFKA_SECURITY_PROTOCOL={self.security_protocol} needs "
                             "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together")
        return self
