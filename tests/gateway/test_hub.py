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
    RecordingSink,
    ScriptedReader,
    ScriptedTransport,
    gateway_settings,
    make_alert,
    publish,
)


def new_hub(**overrides: int) -> tuple[Hub, Metrics]:
    metrics = Metrics()
    options = {"history_size": 3, "max_buffered_bytes": 4096, "max_clients": 10,
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
        sink = RecordingSink()
        subscription = hub.subscribe(sink)
        assert subscription is not None
        _, history = subscription
        assert [e.id for e in history] == [a.id for a in old]
        live = make_alert("CUSDT")
        # A live entry that is not an alert is counted and skipped; the reader goes on.
        await fake_bus.publish([Record(ALERTS_STREAM, "x", b"\x93 cut short")])
        await publish(fake_bus, live, old[0])  # a repeat of an old id is not news
        async with asyncio.timeout(2):
            while len(sink.messages) < 2:
                await asyncio.sleep(0.01)
        assert sink.messages[1]["type"] == "alert"
        assert sink.messages[1]["alert"]["id"] == live.id
        await asyncio.sleep(0.1)
        assert len(sink.messages) == 2
        assert value(metrics, "gateway_bad_payloads_total") == 2
        # The startup backlog is history, not news: only the live alert counts.
        assert value(metrics, "gateway_alerts_received_total") == 1
        assert value(metrics, "gateway_duplicate_alerts_total") == 1
    finally:
        reader.cancel()
        await asyncio.wait([reader])
    assert not hub.running
    assert not hub.reading


async def test_subscribing_is_atomic_with_the_fan_out() -> None:
    """The history, then the messages given, then every later alert: nothing twice,
    nothing missing, nothing before the history."""
    hub, metrics = new_hub(history_size=2)
    first, second, third = make_alert(), make_alert(), make_alert()
    await hub.ingest([delivery(encode_alert(first)), delivery(encode_alert(second))])
    sink = RecordingSink()
    subscription = hub.subscribe(sink, then=['{"type":"rules","rules":[]}'])
    assert subscription is not None
    _, history = subscription
    await hub.ingest([delivery(encode_alert(third))])
    assert [e.id for e in history] == [first.id, second.id]
    assert [m["type"] for m in sink.messages] == ["history", "rules", "alert"]
    assert [a["id"] for a in sink.messages[0]["alerts"]] == [first.id, second.id]
    assert sink.alert_ids() == [third.id]
    assert history_message(history).startswith('{"type":"history","alerts":[{"id":')
    assert value(metrics, "gateway_deliveries_total") == 1


async def test_the_alerts_of_one_read_go_out_in_one_message_oldest_first() -> None:
    hub, metrics = new_hub()
    sinks = [RecordingSink() for _ in range(3)]
    for sink in sinks:
        assert hub.subscribe(sink) is not None
    batch = [make_alert(f"C{i}USDT") for i in range(5)]
    await hub.ingest([delivery(encode_alert(a)) for a in [*batch, batch[1]]])  # + a repeat
    single = make_alert("DUSDT")
    await hub.ingest([delivery(encode_alert(single))])
    for sink in sinks:
        assert [m["type"] for m in sink.messages] == ["history", "alerts", "alert"]
        assert sink.alert_ids() == [a.id for a in [*batch, single]]
    assert value(metrics, "gateway_deliveries_total") == 3 * 6
    assert value(metrics, "gateway_alerts_received_total") == 6


async def test_a_client_behind_by_more_than_the_bound_is_dropped_alone() -> None:
    hub, metrics = new_hub(max_buffered_bytes=4096)
    slow, fast = RecordingSink(behind=4097), RecordingSink(behind=4096)
    gone = RecordingSink()
    slow_subscription = hub.subscribe(slow)
    assert hub.subscribe(fast) is not None
    assert hub.subscribe(gone) is not None
    assert slow_subscription is not None
    gone.open = False  # left between two writes: skipped, not dropped as slow
    alerts = [make_alert() for _ in range(10)]
    for alert in alerts:
        await hub.ingest([delivery(encode_alert(alert))])
    assert fast.alert_ids() == [a.id for a in alerts]
    assert slow.alert_ids() == []
    slow_subscriber = slow_subscription[0]
    assert slow_subscriber.dropped.is_set()
    assert slow_subscriber.drop is not None
    assert slow_subscriber.drop.code == 1013
    assert hub.client_count == 1
    assert value(metrics, "gateway_clients_dropped_total", reason="too_slow") == 1
    assert value(metrics, "gateway_clients_connected") == 1


async def test_one_timer_pings_the_clients_that_heard_nothing() -> None:
    hub, _ = new_hub()
    quiet, late = RecordingSink(), RecordingSink()
    assert hub.subscribe(quiet) is not None
    heartbeat = asyncio.create_task(hub.heartbeat(0.2))
    try:
        await asyncio.sleep(0.1)
        assert hub.subscribe(late) is not None  # joined later: its silence starts later
        await asyncio.sleep(0.18)
        assert [m["type"] for m in quiet.messages] == ["history", "ping"]
        assert [m["type"] for m in late.messages] == ["history"]
        await hub.ingest([delivery(encode_alert(make_alert()))])  # news resets the silence
        await asyncio.sleep(0.15)
        assert [m["type"] for m in quiet.messages] == ["history", "ping", "alert"]
        await asyncio.sleep(0.2)
        assert [m["type"] for m in quiet.messages][-1] == "ping"
        assert [m["type"] for m in late.messages] == ["history", "alert", "ping"]
    finally:
        heartbeat.cancel()
        await asyncio.wait([heartbeat])


async def test_max_clients_and_history_size_zero() -> None:
    hub, metrics = new_hub(max_clients=1, history_size=0)
    await hub.ingest([delivery(encode_alert(make_alert()))])
    first = hub.subscribe(RecordingSink())
    assert first is not None
    assert first[1] == []
    assert hub.subscribe(RecordingSink()) is None
    assert value(metrics, "gateway_clients_dropped_total", reason="max_clients") == 1
    hub.unsubscribe(first[0])
    assert hub.subscribe(RecordingSink()) is not None


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
    sink = RecordingSink()
    early = hub.subscribe(sink)  # a client that got in before the backlog was loaded
    assert early is not None
    reader = asyncio.create_task(hub.run(bus))
    try:
        await asyncio.wait_for(hub.primed.wait(), 2)
        assert [m["type"] for m in sink.messages] == ["history"]
        assert early[0].drop is None
        late = hub.subscribe(RecordingSink())
        assert late is not None
        assert [e.id for e in late[1]] == [a.id for a in backlog[-50:]]
        assert value(metrics, "gateway_alerts_received_total") == 0
    finally:
        reader.cancel()
        await asyncio.wait([reader])
