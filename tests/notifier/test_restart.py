"""kill -9 of the notifier in the middle of a burst, then a restart, as real processes on
a real Redis server: no alert missing at any fake API, and nothing sent twice beyond the
one request that was in flight at the kill. And a bad NOTIFY_CONFIG stops it at start."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from common.bus.redis_streams import RedisConfig, RedisTransport
from fake_notify.server import FakeApis, running_fake
from tests.support.notifier import ledger_entries, publish_alerts, wait_until, write_notify_config
from tests.support.notify import burst
from tests.support.processes import Service, assert_config_failure, run_to_exit, service_env
from tests.support.servers import RedisServer
from tools.redis_server import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture
async def fakes() -> AsyncIterator[FakeApis]:
    async with running_fake() as fakes:
        yield fakes


def notifier_process(redis_url: str, config: Path, env: dict[str, str], log_dir: Path
                     ) -> tuple[Service, int]:
    port = free_port()
    service = Service("notifier", service_env(
        BUS_URL=redis_url, NOTIFY_CONFIG=str(config), NOTIFIER_METRICS_PORT=str(port),
        METRICS_HOST="127.0.0.1", READ_BLOCK_MS="50", LOG_LEVEL="INFO", **env), log_dir)
    return service, port


async def healthy(port: int) -> bool:
    try:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
    except httpx.HTTPError:
        return False


def digest_counts(fakes: FakeApis) -> list[int]:
    """How many alerts each Telegram message carried (a digest says so in its title)."""
    texts = [r.json()["text"] for r in fakes.of("telegram") if r.status == 200]
    return [int(m.group(1)) if (m := re.search(r"(\d+) alerts in", t)) else 1 for t in texts]


async def test_kill_9_mid_burst_loses_nothing_and_repeats_at_most_the_request_in_flight(
        redis_server: RedisServer, fakes: FakeApis, tmp_path: Path) -> None:
    config = tmp_path / "notify.toml"
    env = write_notify_config(config, fakes, ["tg", "hooks"])
    service, port = notifier_process(redis_server.url, config, env, tmp_path)
    bus = RedisTransport(RedisConfig(redis_server.url, timeout_s=3))
    alerts = burst(200)
    fakes.slow("webhook", 0.01, times=10_000)  # each webhook answer takes 10 ms
    service.start()
    try:
        await wait_until(lambda: healthy(port), what="the notifier's health")
        for start in range(0, 100, 10):
            await publish_alerts(bus, alerts[start:start + 10])
            await asyncio.sleep(0.1)

        async def halfway() -> bool:
            return len(fakes.of("webhook")) >= 50

        await wait_until(halfway, what="half the burst at the webhook")
        service.kill()  # SIGKILL: no drain, no ack of what is in hand
        killed_at = len(fakes.of("webhook"))
        assert killed_at < 200
        await publish_alerts(bus, alerts[100:])
        service.start()

        async def all_done() -> bool:
            done = await ledger_entries(bus)
            return len({(d.alert_id, d.channel) for d in done}) == 400

        await wait_until(all_done, timeout_s=60, what="every alert done on both channels")
    except BaseException:
        print(service.output())
        raise
    finally:
        if service.process is not None:
            service.stop()
        await bus.close()
    # The webhook: every alert, and at most one twice (the request in flight at the kill).
    ids = Counter(r.headers["webhook-id"] for r in fakes.of("webhook"))
    assert set(ids) == {a.id for a in alerts}
    assert sum(ids.values()) - len(ids) <= 1, [i for i, n in ids.items() if n > 1]
    # Telegram: the messages add up to every alert, plus at most the one in flight.
    counts = digest_counts(fakes)
    assert sum(counts) >= 200
    assert sum(counts) - 200 <= max(counts), counts
    # A restart within a second of the last message may meet one 429 (the pacing starts
    # afresh); the notifier waits it out and never breaks the limit again.
    assert len(fakes.violations) <= 1, fakes.violations


@pytest.mark.parametrize(("table", "field"), [
    ('[[channel]]\nname = "desk"\ntype = "telegram"\ntoken = "${MISSING_TOKEN}"\n'
     'chat_id = "42"\n[[route]]\nchannels = ["desk"]\n', "'token'"),
    ('[[channel]]\nname = "hooks"\ntype = "webhook"\nurl = "ftp://example.org/x"\n'
     'secret = "whsec_MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIz"\n[[route]]\nchannels = ["hooks"]\n',
     "'url'"),
])
async def test_a_bad_notify_config_exits_2_naming_the_channel_and_the_field(
        redis_server: RedisServer, tmp_path: Path, table: str, field: str) -> None:
    config = tmp_path / "notify.toml"
    config.write_text(table)
    code, stderr = await run_to_exit("notifier", service_env(
        BUS_URL=redis_server.url, NOTIFY_CONFIG=str(config), NOTIFIER_METRICS_PORT="0"),
        tmp_path)
    assert_config_failure(code, stderr, "notifier", "NOTIFY_CONFIG")
    assert field in stderr.splitlines()[-1]
    assert "channel '" in stderr.splitlines()[-1]


async def test_no_notify_config_at_all_exits_2_naming_the_variable(tmp_path: Path) -> None:
    code, stderr = await run_to_exit("notifier", service_env(NOTIFIER_METRICS_PORT="0"),
                                     tmp_path)
    assert_config_failure(code, stderr, "notifier", "NOTIFY_CONFIG")

