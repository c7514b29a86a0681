"""The runner, identically for every service: a configuration error, wherever it is raised
(even inside a task group, where it arrives wrapped in an ``ExceptionGroup``), is exit
code 2 and one line naming the variable, never a traceback and exit code 1."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from common.bus import TransportConfigError
from common.runner import EXIT_CONFIG, EXIT_FAILED, supervise
from common.settings import BaseServiceSettings
from fake_exchange import FakeExchange, drifting_market
from tests.support.processes import assert_config_failure, run_to_exit, service_env
from tests.support.servers import KafkaBroker, RedisServer
from tools.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("ingestor", "detector", "gateway")


def ports() -> dict[str, str]:
    return {"INGESTOR_METRICS_PORT": str(free_port()), "DETECTOR_METRICS_PORT": str(free_port()),
            "GATEWAY_PORT": str(free_port()), "METRICS_HOST": "127.0.0.1",
            "GATEWAY_HOST": "127.0.0.1"}


@pytest.mark.parametrize("service", SERVICES)
async def test_a_bad_kafka_setting_exits_2_in_one_line(service: str, tmp_path: Path) -> None:
    env = service_env(BUS_URL=f"kafka://127.0.0.1:{free_port()}", KAFKA_LINGER_MS="soon",
                      PYTHONPATH=str(ROOT), **ports())
    code, stderr = await run_to_exit(service, env, tmp_path)
    assert_config_failure(code, stderr, service, "KAFKA_LINGER_MS")


@pytest.mark.parametrize("service", ["ingestor", "detector"])
async def test_a_broker_refusing_a_setting_inside_the_task_group_exits_2_in_one_line(
        service: str, kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    """tansu has no idempotent producer: the first publish (the ingestor's first ticks, the
    detector's seed of the rules stream) is refused, inside the service's task group."""
    async with FakeExchange(drifting_market(20, start_ms=1_700_000_000_000),
                            interval_s=0.05, loop=True) as exchange:
        env = service_env(BUS_URL=kafka_broker.url, KAFKA_IDEMPOTENCE="true",
                          BINANCE_WS_URL=exchange.url(), PYTHONPATH=str(ROOT), **ports())
        code, stderr = await run_to_exit(service, env, tmp_path)
    assert_config_failure(code, stderr, service, "KAFKA_IDEMPOTENCE")


@pytest.mark.parametrize(("service", "variable", "value"), [
    ("ingestor", "LOG_LEVEL", "LOUD"),
    ("detector", "LOG_FORMAT", "XML"),
    ("gateway", "LOG_LEVEL", "Loud"),
    ("detector", "DETECTOR_PARTITIONS", "0,,1"),
    ("detector", "DETECTOR_PARTITIONS", "1,1"),
    ("detector", "DETECTOR_PARTITIONS", "0,4"),
])
async def test_a_bad_setting_exits_2_in_one_line_echoing_the_value(
        service: str, variable: str, value: str, tmp_path: Path) -> None:
    env = service_env(**{variable: value}, TICK_PARTITIONS="4", PYTHONPATH=str(ROOT), **ports())
    code, stderr = await run_to_exit(service, env, tmp_path, timeout_s=20)
    assert_config_failure(code, stderr, service, variable)
    assert f"{variable}={value!r}" in stderr


async def test_config_errors_are_found_anywhere_in_nested_task_groups(
        capsys: pytest.CaptureFixture[str]) -> None:
    async def refused() -> None:
        raise TransportConfigError("check KAFKA_SASL_USERNAME")

    async def idle() -> None:
        await asyncio.sleep(3600)

    async def main(_: BaseServiceSettings, stopping: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as outer:
            outer.create_task(idle())
            async with asyncio.TaskGroup() as inner:
                inner.create_task(refused())

    settings = BaseServiceSettings.model_validate({})
    assert await supervise("svc", settings, main) == EXIT_CONFIG
    assert capsys.readouterr().err == "svc: check KAFKA_SASL_USERNAME\n"


async def test_any_other_error_in_a_task_group_is_exit_code_1_with_its_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    async def main(_: BaseServiceSettings, stopping: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(asyncio.sleep(0))
            raise ValueError("a bug")

    settings = BaseServiceSettings.model_validate({})
    assert await supervise("svc", settings, main) == EXIT_FAILED
    [failure] = [r for r in caplog.records if r.getMessage() == "svc: failed"]
    assert failure.exc_info is not None
    assert "a bug" in caplog.text


@pytest.mark.parametrize(("service", "variable"), [
    ("ingestor", "INGESTOR_METRICS_PORT"),
    ("detector", "DETECTOR_METRICS_PORT"),
    ("gateway", "GATEWAY_PORT"),
])
async def test_a_port_in_use_exits_2_in_one_line_naming_its_setting(
        service: str, variable: str, redis_server: RedisServer, tmp_path: Path) -> None:
    """Another process on the port is a setting to change, not a crash to restart forever."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = service_env(BUS_URL=redis_server.url, PYTHONPATH=str(ROOT),
                          **{**ports(), variable: str(taken.getsockname()[1])})
        code, stderr = await run_to_exit(service, env, tmp_path)
    assert_config_failure(code, stderr, service, variable)
    assert "cannot listen on 127.0.0.1" in stderr
