"""Fast checks of the fan-out on fakeredis and on a scripted transport."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import fakeredis
import pytest

from common.bus import BusUnavailable, Delivery, Record, TransportConfigError
from common.bus.redis_streams import RedisConfig, RedisTransport
from common.partitioning import ALERTS_STREAM
from common.runner import Hosted, supervise
from common.schemas import encode_alert
from common.settings import GatewaySettings
from gateway.app import create_app
from gateway.hub import Hub, history_message
from gateway.metrics import Metrics
from gateway.service import SERVICE as GATEWAY
from gateway.service import bind_socket, serve
from tests.support.gateway import (
    ScriptedReader,
    ScriptedTransport,
    gateway_settings,
    make_alert,
    publish,
)


def new_hub(**overrides: int) -> tuple[Hub, Metrics]:
    metrics = Metrics()
    options = {"history_size": 3, "client_queue_size": 4, "max_clients": 10,
               "read_block_ms": 20} | overrides
    return Hub(metrics=metrics, **options), metrics


def value(metrics: Metrics, name: str, **labels: str) -> float:
    sample = metrics.registry.get_sample_value(name, labels or None)
    assert sample is not None, name
    return sample


def delivery(payload: bytes, position: str = "1-0") -> Delivery:
    return Delivery(ALERTS_STREAM, position, payload, 1)


@pytest.fixture
async def fake_bus() -> AsyncIterator[RedisTransport]:
    bus = RedisTransport(RedisConfig("redis://fake"), client=fakeredis.FakeAsyncRedis())
    yield bus
    await bus.close()


async def test_reader_takes_the_backlog_then_live_entries_and_skips_bad_ones(
        fake_bus: RedisTransport) -> None:
    hub, metrics = new_hub()
    old = [make_alert("AUSDT"), make_alert("BUSDT")]
    await publish(fake_bus, *old)
    await fake_bus.publish([Record(ALERTS_STREAM, "x", b"\xc1 not msgpack")])
    reader = asyncio.create_task(hub.run(fake_bus))
    try:
        await asyncio.wait_for(hub.primed.wait(), 2)
        subscription = hub.subscribe()
        assert subscription is not None
        subscriber, history = subscription
        assert [e.id for e in history] == [a.id for a in old]
        live = make_alert("CUSDT")
        await publish(fake_bus, live, old[0])  # a repeat of an old id is not news
        entry = await asyncio.wait_for(subscriber.queue.get(), 2)
        assert entry.id == live.id
        assert entry.message.startswith('{"type":"alert","alert":{"id":"CUSDT:60:')
        await asyncio.sleep(0.1)
        assert subscriber.queue.empty()
        assert value(metrics, "gateway_bad_payloads_total") == 1
        # The startup backlog is history, not news: only the live alert counts.
        assert value(metrics, "gateway_alerts_received_total") == 1
        assert value(metrics, "gateway_duplicate_alerts_total") == 1
    finally:
        reader.cancel()
        await asyncio.wait([reader])
    assert not hub.running
    assert not hub.reading


async def test_subscribing_is_atomic_with_the_fan_out() -> None:
    """What is in the snapshot is never queued; what comes after is always queued."""
    hub, _ = new_hub(history_size=2)
    first, second, third = make_alert(), make_alert(), make_alert()
    await hub.ingest([delivery(encode_alert(first)), delivery(encode_alert(second))])
    subscription = hub.subscribe()
    assert subscription is not None
    subscriber, history = subscription
    await hub.ingest([delivery(encode_alert(third))])
    assert [e.id for e in history] == [first.id, second.id]
    assert subscriber.queue.get_nowait().id == third.id
    assert subscriber.queue.empty()
    assert history_message(history).startswith('{"type":"history","alerts":[{"id":')


async def test_a_full_queue_drops_that_client_only() -> None:
    hub, metrics = new_hub(client_queue_size=2)
    slow = hub.subscribe()
    fast = hub.subscribe()
    assert slow is not None
    assert fast is not None
    got: list[str] = []

    async def drain() -> None:
        while True:
            got.append((await fast[0].queue.get()).id)

    draining = asyncio.create_task(drain())
    alerts = [make_alert() for _ in range(10)]
    await hub.ingest([delivery(encode_alert(a)) for a in alerts])
    await asyncio.sleep(0)
    draining.cancel()
    assert got == [a.id for a in alerts]
    assert slow[0].dropped.is_set()
    assert slow[0].drop is not None
    assert slow[0].drop.code == 1013
    assert not fast[0].dropped.is_set()
    assert hub.client_count == 1
    assert value(metrics, "gateway_clients_dropped_total", reason="too_slow") == 1
    assert value(metrics, "gateway_clients_connected") == 1


async def test_max_clients_and_history_size_zero() -> None:
    hub, metrics = new_hub(max_clients=1, history_size=0)
    await hub.ingest([delivery(encode_alert(make_alert()))])
    first = hub.subscribe()
    assert first is not None
    assert first[1] == []
    assert hub.subscribe() is None
    assert value(metrics, "gateway_clients_dropped_total", reason="max_clients") == 1
    hub.unsubscribe(first[0])
    assert hub.subscribe() is not None


async def test_ring_keeps_the_newest_and_ids_stay_known_after_leaving_it() -> None:
    hub, _ = new_hub(history_size=1)
    alerts = [make_alert() for _ in range(1005)]
    await hub.ingest([delivery(encode_alert(a)) for a in alerts])
    assert [e.id for e in hub.recent(2)] == [alerts[-2].id, alerts[-1].id]
    assert len(hub.recent(5000)) == 1000
    assert await hub.ingest([delivery(encode_alert(alerts[0]))]) == 0


async def test_the_reader_waits_out_bus_outages() -> None:
    hub, metrics = new_hub()
    alert = make_alert()
    reader = ScriptedReader([BusUnavailable("down"), [], BusUnavailable("down again"),
                             [delivery(encode_alert(alert))]])
    task = asyncio.create_task(hub.run(ScriptedTransport(reader)))  # type: ignore[arg-type]
    try:
        async with asyncio.timeout(5):
            while reader.script or not hub.reading:
                await asyncio.sleep(0.01)
        assert [e.id for e in hub.recent(10)] == [alert.id]
        assert value(metrics, "gateway_bus_errors_total") == 2
        assert value(metrics, "gateway_reader_up") == 1
    finally:
        task.cancel()
        await asyncio.wait([task])


async def test_a_reader_bug_stops_the_service_instead_of_serving_a_dead_page() -> None:
    transport = ScriptedTransport(ScriptedReader([[], ValueError("bug")]))
    settings = gateway_settings("redis://unused")
    app = create_app(settings, transport)  # type: ignore[arg-type]
    sock = bind_socket("127.0.0.1", 0)
    try:
        with pytest.raises(ExceptionGroup) as failed:
            await asyncio.wait_for(serve(app, settings, sock, asyncio.Event()), 10)
    finally:
        sock.close()
    assert failed.group_contains(ValueError, match="bug")


async def test_a_config_error_of_a_reader_is_exit_code_2_in_one_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    """What a broker refuses for a setting (here the alerts reader's first read) ends the
    service as any configuration error does, not as a crash (exit 1, a traceback)."""
    refused = TransportConfigError("kafka refused starting a reader (check KAFKA_SASL_*)")
    transport = ScriptedTransport(ScriptedReader([refused]))
    settings = gateway_settings("redis://unused", gateway_port=0)

    async def main(settings: GatewaySettings, stopping: asyncio.Event) -> None:
        await Hosted(GATEWAY, settings, transport).run(stopping)  # type: ignore[arg-type]

    code = await asyncio.wait_for(supervise("gateway", settings, main), 10)
    assert code == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["gateway: kafka refused starting a reader (check KAFKA_SASL_*)"]


async def test_the_startup_backlog_is_history_not_live_news(bus: RedisTransport) -> None:
    hub, metrics = new_hub(history_size=50)
    backlog = [make_alert(f"B{i}USDT") for i in range(300)]
    await publish(bus, *backlog)
    early = hub.subscribe()  # a client that got in before the backlog was loaded
    assert early is not None
    reader = asyncio.create_task(hub.run(bus))
    try:
        await asyncio.wait_for(hub.primed.wait(), 2)
        assert early[0].queue.empty()
        assert early[0].drop is None
        late = hub.subscribe()
        assert late is not None
        assert [e.id for e in late[1]] == [a.id for a in backlog[-50:]]
        assert value(metrics, "gateway_alerts_received_total") == 0
    finally:
        reader.cancel()
        await asyncio.wait([reader])
