"""The Kafka transport's config: brokers from ``BUS_URL``, ``KAFKA_*`` read once at start
(named when wrong, the password never shown), and nothing read after."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys

import pytest

from common.bus import Retention, TransportConfigError, create_transport
from common.bus.kafka.config import KafkaConfig, bootstrap_servers
from common.bus.kafka.transport import KafkaTransport
from common.settings import BaseServiceSettings, load_settings
from tests.support.bus import records
from tests.support.servers import KAFKA_TEST_ENV, KafkaBroker


def kafka_settings(url: str) -> BaseServiceSettings:
    return load_settings(BaseServiceSettings, bus_url=url)


def test_bootstrap_servers_come_from_the_url() -> None:
    assert bootstrap_servers("kafka://k1:9093,k2") == ["k1:9093", "k2:9092"]
    assert bootstrap_servers("kafka://[::1]:9092") == ["[::1]:9092"]
    with pytest.raises(TransportConfigError, match="names no broker"):
        bootstrap_servers("kafka://")


@pytest.mark.parametrize(("variable", "value"), [
    ("KAFKA_LINGER_MS", "soon"),
    ("KAFKA_IDEMPOTENCE", "perhaps"),
    ("KAFKA_SECURITY_PROTOCOL", "SMOKE_SIGNALS"),
    ("KAFKA_SSL_CAFILE", "/nonexistent/ca.pem"),
])
def test_a_bad_kafka_setting_is_a_config_error_naming_the_variable(
        monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(TransportConfigError, match=variable):
        create_transport(kafka_settings("kafka://localhost:9092"))


def test_the_sasl_password_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "hunter2")
    with pytest.raises(TransportConfigError, match="KAFKA_SASL_USERNAME") as failure:
        create_transport(kafka_settings("kafka://localhost:9092"))
    assert "hunter2" not in str(failure.value)
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "alerter")
    transport = create_transport(kafka_settings("kafka://localhost:9092"))
    assert isinstance(transport, KafkaTransport)
    options = transport.config.client_options()
    assert (options["security_protocol"], options["sasl_plain_username"],
            options["sasl_plain_password"]) == ("SASL_PLAINTEXT", "alerter", "hunter2")
    assert "hunter2" not in repr(transport.config)


def test_ssl_settings_reach_the_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "ssl")
    transport = create_transport(kafka_settings("kafka://broker.example:9093"))
    assert isinstance(transport, KafkaTransport)
    options = transport.config.client_options()
    assert options["security_protocol"] == "SSL"
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
    monkeypatch.setenv("KAFKA_SSL_CERTFILE", __file__)  # a file, but no key to go with it
    with pytest.raises(TransportConfigError, match="KAFKA_SSL_KEYFILE"):
        create_transport(kafka_settings("kafka://broker.example:9093"))
    monkeypatch.setenv("KAFKA_SSL_KEYFILE", __file__)  # both, but not PEM
    with pytest.raises(TransportConfigError, match="KAFKA_SSL_CERTFILE"):
        create_transport(kafka_settings("kafka://broker.example:9093"))


def test_a_service_exits_with_code_2_on_a_bad_kafka_setting() -> None:
    env = {**os.environ, "BUS_URL": "kafka://127.0.0.1:1", "KAFKA_REPLICATION_FACTOR": "0",
           "DETECTOR_METRICS_PORT": "0"}
    done = subprocess.run([sys.executable, "-m", "detector"], env=env, capture_output=True,
                          timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert b"KAFKA_REPLICATION_FACTOR" in done.stderr


def test_the_config_is_read_once_and_the_transport_reads_no_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_LINGER_MS", "25")
    config = KafkaConfig.from_settings(kafka_settings("kafka://localhost:9092"))
    monkeypatch.setenv("KAFKA_LINGER_MS", "soon")  # would stop a transport that read it
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SMOKE_SIGNALS")
    transport = KafkaTransport(config)
    assert transport.config.kafka.linger_ms == 25
    assert transport.config.client_options()["security_protocol"] == "PLAINTEXT"


async def test_a_transport_built_from_a_config_works_whatever_the_environment_says(
        kafka_broker: KafkaBroker, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable, value in KAFKA_TEST_ENV.items():
        monkeypatch.setenv(variable, value)
    config = KafkaConfig.from_settings(kafka_settings(kafka_broker.url))
    monkeypatch.setenv("KAFKA_IDEMPOTENCE", "perhaps")
    monkeypatch.setenv("KAFKA_REPLICATION_FACTOR", "0")
    transport = KafkaTransport(config)
    try:
        await transport.declare(["alerts"], Retention(max_len=100))
        await transport.publish(records("alerts", 2))
        reader = transport.broadcast_reader("alerts")
        assert [d.payload for d in await reader.backlog(5)] == [b"m0", b"m1"]
    finally:
        await transport.close()
