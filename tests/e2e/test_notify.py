"""From a price jump on the fake exchange to a message at the fake Telegram server and a
signed request at a webhook receiver: the four services as real processes, on Redis and
on Kafka (the notifier's own consumer group on both)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import standardwebhooks

from fake_exchange import FakeExchange, jump_scenario
from fake_notify.notify_config import WEBHOOK_SECRET
from fake_notify.server import running_fake
from tests.support.notifier import write_notify_config
from tests.support.processes import Pipeline, Service, running
from tests.support.servers import Bus
from tools.redis_server import free_port

pytestmark = pytest.mark.e2e


async def test_a_jump_on_the_exchange_reaches_telegram_and_a_webhook(bus: Bus,
                                                                      tmp_path: Path) -> None:
    scenario = jump_scenario(300, jump_symbol="SYM007USDT", at_frame=4, pct=3.0,
                             over_frames=8, frames=40)
    async with running_fake() as fakes, FakeExchange(scenario, interval_s=0.25,
                                                     wall_clock=True) as exchange:
        config = tmp_path / "notify.toml"
        secrets = write_notify_config(config, fakes, ["tg", "hooks"])
        pipeline = Pipeline(bus.url, exchange.url("!miniTicker@arr"), tmp_path,
                            extra_env={"TICK_PARTITIONS": "2", **bus.env})
        notifier_port = free_port()
        pipeline.services["notifier"] = Service("notifier", {
            **pipeline.services["detector"].env, **secrets, "NOTIFY_CONFIG": str(config),
            "NOTIFIER_METRICS_PORT": str(notifier_port)}, tmp_path)
        async with running(pipeline):
            deadline = time.monotonic() + 45
            while not (fakes.of("telegram") and fakes.of("webhook")):
                assert time.monotonic() < deadline, "no notification"
                await asyncio.sleep(0.1)
            await exchange.wait_until_done(timeout=20)
            await asyncio.sleep(1.0)  # anything more would arrive by now
    [message], [hook] = fakes.of("telegram"), fakes.of("webhook")
    text = message.json()["text"]
    assert "SYM007USDT" in text
    assert "https://www.tradingview.com/chart/?symbol=BINANCE:SYM007USDT.P" in text
    assert "▲" in text
    alert = standardwebhooks.Webhook(WEBHOOK_SECRET).verify(hook.body, hook.headers)
    assert alert["type"] == "alert"
    assert alert["alert"]["symbol"] == "SYM007USDT"
    assert hook.headers["webhook-id"] == alert["alert"]["id"]
    # Alert detected → accepted by the webhook receiver, across four processes.
    assert hook.arrived_wall_ms - alert["alert"]["detected_at_ms"] < 2000
