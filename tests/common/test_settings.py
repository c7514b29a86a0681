"""A bad value stops a service at start with the variable's name in the message."""

from __future__ import annotations

import os
import socket

import pytest

from common.settings import (
    DetectorSettings,
    GatewaySettings,
    IngestorSettings,
    SettingsError,
    load_settings,
)


def test_defaults_match_the_documented_interface(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")  # no .env
    detector = load_settings(DetectorSettings)
    assert detector.bus_url == "redis://localhost:6379/0"
    assert (detector.tick_partitions, detector.window_s) == (4, 60)
    assert (detector.threshold_up_pct, detector.threshold_down_pct) == (2.0, 2.0)
    assert detector.effective_cooldown_s == 60
    assert detector.partitions == (0, 1, 2, 3)
    assert detector.detector_metrics_port == 9102
    assert detector.poison_max_attempts == 3
    ingestor = load_settings(IngestorSettings)
    assert ingestor.binance_ws_url == (
        "wss://fstream.binance.com/market/stream?streams="
        "!miniTicker@arr/!forceOrder@arr/!markPrice@arr@1s")
    assert (ingestor.stale_after_s, ingestor.ingestor_metrics_port) == (30.0, 9101)
    assert (ingestor.feed, ingestor.binance_rest_url, ingestor.binance_ws_base_url) == (
        "mini_ticker", "https://fapi.binance.com", "wss://fstream.binance.com/market")
    assert (ingestor.symbols_refresh_s, ingestor.streams_per_connection,
            ingestor.flush_ms) == (300.0, 200, 5)
    gateway = load_settings(GatewaySettings)
    assert (gateway.gateway_host, gateway.gateway_port, gateway.history_size) == (
        "0.0.0.0", 8080, 50)
    assert (gateway.log_level, gateway.log_format) == ("INFO", "text")


def test_detectors_share_the_partitions_unless_told_which(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")  # no .env
    shared = load_settings(DetectorSettings)
    assert (shared.shared, shared.lease_s, shared.partitions) == (True, 5.0, (0, 1, 2, 3))
    monkeypatch.setenv("DETECTOR_PARTITIONS", "1,3")
    fixed = load_settings(DetectorSettings, lease_s=1.0)  # no lease to renew: any length
    assert (fixed.shared, fixed.partitions) == (False, (1, 3))
    monkeypatch.setenv("LEASE_S", "1.5")
    monkeypatch.setenv("READ_BLOCK_MS", "500")
    monkeypatch.delenv("DETECTOR_PARTITIONS")
    assert load_settings(DetectorSettings).lease_s == 1.5


def test_an_unnamed_detector_gets_a_name_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two detectors started from one configuration must be two members of the group."""
    monkeypatch.chdir("/")
    name = load_settings(DetectorSettings).detector_consumer
    assert name.endswith(f"-{os.getpid()}")
    assert name.startswith(socket.gethostname()[:20])
    monkeypatch.setenv("DETECTOR_CONSUMER", "detector-east")
    assert load_settings(DetectorSettings).detector_consumer == "detector-east"


def test_cooldown_defaults_to_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WINDOW_S", "120")
    assert load_settings(DetectorSettings).effective_cooldown_s == 120
    monkeypatch.setenv("COOLDOWN_S", "30")
    assert load_settings(DetectorSettings).effective_cooldown_s == 30


@pytest.mark.parametrize(
    ("settings_type", "variable", "value"),
    [
        (DetectorSettings, "WINDOW_S", "abc"),
        (DetectorSettings, "WINDOW_S", "0"),
        (DetectorSettings, "THRESHOLD_UP_PCT", "-1"),
        (DetectorSettings, "THRESHOLD_DOWN_PCT", "two"),
        (DetectorSettings, "COOLDOWN_S", "-5"),
        (DetectorSettings, "TICK_PARTITIONS", "0"),
        (DetectorSettings, "DETECTOR_PARTITIONS", "0,x"),
        (DetectorSettings, "DETECTOR_PARTITIONS", "0,7"),
        (DetectorSettings, "READ_BLOCK_MS", "60000"),
        (DetectorSettings, "POISON_MAX_ATTEMPTS", "0"),
        (IngestorSettings, "BINANCE_WS_URL", "http://example.invalid/"),
        (IngestorSettings, "STALE_AFTER_S", "soon"),
        (IngestorSettings, "FEED", "trades"),
        (IngestorSettings, "BINANCE_REST_URL", "fapi.binance.com"),
        (IngestorSettings, "BINANCE_WS_BASE_URL", "https://fstream.binance.com/market"),
        (IngestorSettings, "BINANCE_WS_BASE_URL", "wss://h/market/stream?streams=a"),
        (IngestorSettings, "SYMBOLS_REFRESH_S", "0"),
        (IngestorSettings, "SYMBOLS_REFRESH_S", "1e9"),
        (IngestorSettings, "STREAMS_PER_CONNECTION", "0"),
        (IngestorSettings, "STREAMS_PER_CONNECTION", "1025"),
        (IngestorSettings, "FLUSH_MS", "-1"),
        (IngestorSettings, "FLUSH_MS", "1001"),
        (IngestorSettings, "INGESTOR_METRICS_PORT", "70000"),
        (IngestorSettings, "BUS_URL", "amqp://localhost"),
        (GatewaySettings, "GATEWAY_PORT", "eighty"),
        (GatewaySettings, "HISTORY_SIZE", "-1"),
        (GatewaySettings, "LOG_FORMAT", "xml"),
        (GatewaySettings, "LOG_LEVEL", "LOUD"),
        (GatewaySettings, "ALLOWED_ORIGINS", "desk.example.com"),
        (GatewaySettings, "WS_HEARTBEAT_S", "0"),
        (GatewaySettings, "MAX_REQUEST_LINE_BYTES", "9000"),  # past the handshake parser's
        (GatewaySettings, "MAX_HEADER_BYTES", "4096"),  # below MAX_REQUEST_LINE_BYTES
        (GatewaySettings, "MAX_BODY_BYTES", "0"),
        (GatewaySettings, "REQUEST_READ_TIMEOUT_S", "0"),
        (GatewaySettings, "HEALTH_FEED_STALE_S", "0"),
        (GatewaySettings, "HEALTH_FEED_DOWN_S", "3"),  # not above HEALTH_FEED_STALE_S
        (GatewaySettings, "HEALTH_DETECTOR_STALE_S", "-1"),
        (GatewaySettings, "HEALTH_DETECTOR_DOWN_S", "2"),  # not above HEALTH_DETECTOR_LAG_S
        (GatewaySettings, "HEALTH_SYMBOLS_WINDOW_S", "never"),
        (GatewaySettings, "HEALTH_CHECK_S", "60"),
        (DetectorSettings, "DETECTOR_HEARTBEAT_S", "0"),
        (DetectorSettings, "LEASE_S", "0.1"),
        (DetectorSettings, "LEASE_S", "1.5"),  # below twice READ_BLOCK_MS (1000 ms)
        (DetectorSettings, "LEASE_S", "forever"),
    ],
)
def test_each_bad_value_names_its_variable(monkeypatch: pytest.MonkeyPatch,
                                           settings_type: type[DetectorSettings],
                                           variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings(settings_type)


def test_the_trade_level_feed_needs_room_for_the_board_streams(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMS_PER_CONNECTION", "1")
    assert load_settings(IngestorSettings).streams_per_connection == 1  # mini_ticker: unused
    monkeypatch.setenv("FEED", "agg_trade")
    with pytest.raises(SettingsError, match="STREAMS_PER_CONNECTION"):
        load_settings(IngestorSettings)


def test_case_of_log_settings_is_forgiven(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("LOG_FORMAT", "JSON")
    settings = load_settings(GatewaySettings)
    assert (settings.log_level, settings.log_format) == ("DEBUG", "json")


def test_a_password_in_bus_url_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUS_URL", "amqp://user:hunter2@localhost")
    with pytest.raises(SettingsError) as caught:
        load_settings(DetectorSettings)
    assert "hunter2" not in str(caught.value)
    assert "BUS_URL" in str(caught.value)


def test_settings_are_frozen() -> None:
    settings = load_settings(DetectorSettings)
    with pytest.raises(ValueError, match="frozen"):
        setattr(settings, "window_s", 5)  # noqa: B010


@pytest.mark.parametrize(("value", "reason"), [
    ("0,,1", "empty"),
    ("0,", "empty"),
    ("1,1", "twice"),
    (" 2, 2 ", "twice"),
    ("4", ">= TICK_PARTITIONS"),
])
def test_a_bad_partition_list_names_the_variable_and_says_why(
        monkeypatch: pytest.MonkeyPatch, value: str, reason: str) -> None:
    monkeypatch.setenv("TICK_PARTITIONS", "4")
    monkeypatch.setenv("DETECTOR_PARTITIONS", value)
    with pytest.raises(SettingsError) as caught:
        load_settings(DetectorSettings)
    message = str(caught.value)
    assert message.startswith("invalid DETECTOR_PARTITIONS="), message
    assert reason in message
    assert "\n" not in message


def test_a_partition_list_is_read_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICK_PARTITIONS", "4")
    monkeypatch.setenv("DETECTOR_PARTITIONS", " 3, 1 ")
    assert load_settings(DetectorSettings).partitions == (3, 1)
    monkeypatch.setenv("DETECTOR_PARTITIONS", " ")
    assert load_settings(DetectorSettings).partitions == (0, 1, 2, 3)


@pytest.mark.parametrize(("variable", "value"), [
    ("LOG_LEVEL", "LOUD"), ("LOG_LEVEL", "Loud"), ("LOG_FORMAT", "XML"), ("LOG_FORMAT", "Yaml")])
def test_a_bad_log_setting_is_echoed_as_given(monkeypatch: pytest.MonkeyPatch,
                                              variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(GatewaySettings)
    assert f"invalid {variable}={value!r}" in str(caught.value)
