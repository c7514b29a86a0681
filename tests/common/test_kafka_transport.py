"""What only the Kafka transport has: topics, the producer's settings, offset commits,
rebalances, offsets by time, and a broker that restarts with its memory wiped."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndTimestamp, TopicPartition

from common.bus import (
    BusUnavailable,
    Delivery,
    Record,
    Retention,
    TransportConfigError,
    create_transport,
)
from common.bus.kafka.transport import (
    COUNT_CAPPED_RETENTION_MS,
    KafkaDelivery,
    KafkaGroupConsumer,
    KafkaTransport,
    _Partition,
    bootstrap_servers,
)
from tests.support.bus import crash, drain, kafka_transport, records
from tests.support.servers import KafkaBroker

STREAMS = ["ticks.0", "ticks.1"]
T = TypeVar("T")


@pytest.fixture
async def bus(kafka_broker: KafkaBroker) -> AsyncIterator[KafkaTransport]:
    transport = kafka_transport(kafka_broker)
    yield transport
    await transport.close()


@pytest.fixture
async def admin(kafka_broker: KafkaBroker) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.url.removeprefix("kafka://"))
    await client.start()
    yield client
    await client.close()


async def partitions_of(admin: AIOKafkaAdminClient) -> dict[str, int]:
    return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(None)}


async def committed(broker: KafkaBroker, group: str, stream: str) -> int | None:
    """The group's committed offset, as a newcomer would find it."""
    probe = AIOKafkaConsumer(bootstrap_servers=broker.url.removeprefix("kafka://"),
                             group_id=group, enable_auto_commit=False)
    await probe.start()
    try:
        offset: int | None = await probe.committed(TopicPartition(stream, 0))
        return offset
    finally:
        await probe.stop()


async def eventually(operation: Callable[[], Awaitable[T]], timeout_s: float = 20) -> T:
    """Retry while the bus is unavailable, as every service does."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await operation()
        except BusUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


# -- addresses and settings -----------------------------------------------------------------

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
        create_transport("kafka://localhost:9092")


def test_the_sasl_password_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "hunter2")
    with pytest.raises(TransportConfigError, match="KAFKA_SASL_USERNAME") as failure:
        create_transport("kafka://localhost:9092")
    assert "hunter2" not in str(failure.value)
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "alerter")
    transport = create_transport("kafka://localhost:9092")
    assert isinstance(transport, KafkaTransport)
    options = transport.client_options()
    assert (options["security_protocol"], options["sasl_plain_username"],
            options["sasl_plain_password"]) == ("SASL_PLAINTEXT", "alerter", "hunter2")
    assert "hunter2" not in repr(transport.settings)


def test_ssl_settings_reach_the_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "ssl")
    transport = create_transport("kafka://broker.example:9093")
    assert isinstance(transport, KafkaTransport)
    options = transport.client_options()
    assert options["security_protocol"] == "SSL"
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
    monkeypatch.setenv("KAFKA_SSL_CERTFILE", __file__)  # a file, but no key to go with it
    with pytest.raises(TransportConfigError, match="KAFKA_SSL_KEYFILE"):
        create_transport("kafka://broker.example:9093")
    monkeypatch.setenv("KAFKA_SSL_KEYFILE", __file__)  # both, but not PEM
    with pytest.raises(TransportConfigError, match="KAFKA_SSL_CERTFILE"):
        create_transport("kafka://broker.example:9093")


def test_a_service_exits_with_code_2_on_a_bad_kafka_setting() -> None:
    env = {**os.environ, "BUS_URL": "kafka://127.0.0.1:1", "KAFKA_REPLICATION_FACTOR": "0",
           "DETECTOR_METRICS_PORT": "0"}
    done = subprocess.run([sys.executable, "-m", "detector"], env=env, capture_output=True,
                          timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert b"KAFKA_REPLICATION_FACTOR" in done.stderr


# -- topics and producer --------------------------------------------------------------------

async def test_topics_are_created_with_the_configured_partitions_and_retention(
        kafka_broker: KafkaBroker, admin: AIOKafkaAdminClient) -> None:
    bus = kafka_transport(kafka_broker, topic_partitions=3, replication_factor=1)
    try:
        await bus.declare(STREAMS, Retention(max_age_s=900))
        await bus.declare(["alerts"], Retention(max_len=10_000))
        assert await partitions_of(admin) == {"ticks.0": 3, "ticks.1": 3, "alerts": 3}
        ticks = bus.new_topic("ticks.0")
        assert (ticks.num_partitions, ticks.replication_factor) == (3, 1)
        assert ticks.topic_configs == {"retention.ms": "900000"}
        assert bus.new_topic("alerts").topic_configs == {
            "retention.ms": str(COUNT_CAPPED_RETENTION_MS)}
        await bus.declare(STREAMS, Retention(max_age_s=900))  # existing: left as they are
        # Records go to crc32(key) % partitions: one key, one partition, in order.
        await bus.publish([Record("alerts", "BTCUSDT", f"b{i}".encode()) for i in range(5)]
                          + [Record("alerts", "ETHUSDT", f"e{i}".encode()) for i in range(5)])
        reader = bus.broadcast_reader("alerts")
        by_partition: dict[str, set[str]] = {}
        for delivery in await reader.backlog(10):
            partition = delivery.position.split(":")[0]
            by_partition.setdefault(delivery.payload.decode()[0], set()).add(partition)
        assert all(len(partitions) == 1 for partitions in by_partition.values())
    finally:
        await bus.close()


async def test_a_topic_the_broker_made_with_more_partitions_is_still_one_log(
        bus: KafkaTransport, kafka_broker: KafkaBroker, admin: AIOKafkaAdminClient) -> None:
    # tansu creates a topic it is merely asked about, with four partitions.
    await admin.describe_topics(["ticks.0"])
    assert (await partitions_of(admin))["ticks.0"] == 4
    await bus.publish([Record("ticks.0", f"SYM{i}", f"m{i}".encode()) for i in range(20)])
    consumer = bus.group_consumer("g", "c", ["ticks.0"], rebuild_s=60, claim_min_idle_s=30)
    got = await drain(consumer, 20)
    assert [d.payload for d in got] == [f"m{i}".encode() for i in range(20)]
    assert {d.position.split(":")[0] for d in got} == {"0"}


async def test_idempotence_is_on_by_default_and_can_be_switched_off(
        kafka_broker: KafkaBroker) -> None:
    strict = kafka_transport(kafka_broker, idempotence=True)
    try:
        # tansu has no idempotent producer: the error says which switch to use.
        with pytest.raises(TransportConfigError, match="KAFKA_IDEMPOTENCE=false"):
            await strict.publish(records("ticks.0", 1))
    finally:
        await strict.close()
    relaxed = kafka_transport(kafka_broker, idempotence=False)
    try:
        await relaxed.publish(records("ticks.0", 1))
    finally:
        await relaxed.close()


async def test_publish_and_fetch_raise_bus_unavailable_while_the_broker_is_down(
        bus: KafkaTransport, kafka_broker: KafkaBroker) -> None:
    consumer = bus.group_consumer("g", "c", STREAMS, rebuild_s=60, claim_min_idle_s=30)
    await bus.publish(records("ticks.0", 1))
    assert len(await drain(consumer, 1)) == 1
    kafka_broker.stop()
    assert await bus.ping() is False
    started = time.monotonic()
    with pytest.raises(BusUnavailable):
        await bus.publish(records("ticks.0", 1, start=1))
    with pytest.raises(BusUnavailable):
        await consumer.fetch(10, 50)
    assert time.monotonic() - started < 10  # bounded by BUS_TIMEOUT_S (3 s here)


# -- commits --------------------------------------------------------------------------------

async def test_ack_commits_exactly_offset_plus_one_and_never_goes_back(
        bus: KafkaTransport, kafka_broker: KafkaBroker) -> None:
    await bus.publish(records("ticks.0", 5))
    consumer = bus.group_consumer("g", "c", ["ticks.0"], rebuild_s=60, claim_min_idle_s=30)
    got = await drain(consumer, 5)
    assert [d.position for d in got] == [f"0:{i}" for i in range(5)]
    await consumer.ack(got[3:4])  # out of order: offset 0 is still in hand
    assert await committed(kafka_broker, "g", "ticks.0") is None
    await consumer.ack(got[:3])
    assert await committed(kafka_broker, "g", "ticks.0") == 4  # offset 4 is still in hand
    await consumer.ack(got[:3])  # again: nothing moves
    assert await committed(kafka_broker, "g", "ticks.0") == 4
    await consumer.ack(got)
    assert await committed(kafka_broker, "g", "ticks.0") == 5


async def test_replayed_deliveries_are_not_committed(
        bus: KafkaTransport, kafka_broker: KafkaBroker) -> None:
    await bus.publish(records("ticks.0", 4))
    first = bus.group_consumer("g", "c", ["ticks.0"], rebuild_s=60, claim_min_idle_s=30)
    await first.ack((await drain(first, 4))[:2])
    await crash(first)
    second = bus.group_consumer("g", "c", ["ticks.0"], rebuild_s=60, claim_min_idle_s=30)
    again = await drain(second, 4)
    replayed = [d for d in again if d.replay]
    assert [d.payload for d in replayed] == [b"m0", b"m1"]
    await second.ack(replayed)
    assert not any(d.acked for d in replayed)
    assert await committed(kafka_broker, "g", "ticks.0") == 2


async def test_revocation_waits_for_the_batch_in_hand_and_commits_it(
        bus: KafkaTransport, kafka_broker: KafkaBroker) -> None:
    await bus.publish(records("ticks.0", 5) + records("ticks.1", 5))
    first = bus.group_consumer("g", "first", STREAMS, rebuild_s=60, claim_min_idle_s=30)
    in_hand = await drain(first, 10)
    assert len(in_hand) == 10
    # A second member joins: the first is asked to give up a partition while it still
    # holds its batch; the rebalance waits until the batch is acknowledged.
    second = bus.group_consumer("g", "second", STREAMS, rebuild_s=60, claim_min_idle_s=30)
    joining = asyncio.create_task(drain(second, 0, block_ms=200))
    await asyncio.sleep(0.6)  # the first member's revocation has begun by now, and waits
    assert not joining.done()
    await first.ack(in_hand)
    taken = await joining
    assert all(d.replay for d in taken), "an acknowledged entry was delivered again"
    assert await committed(kafka_broker, "g", "ticks.0") == 5
    assert await committed(kafka_broker, "g", "ticks.1") == 5


async def test_an_unacknowledged_batch_goes_to_the_next_owner(
        bus: KafkaTransport, kafka_broker: KafkaBroker) -> None:
    await bus.publish(records("ticks.0", 3))
    first = bus.group_consumer("g", "first", ["ticks.0"], rebuild_s=60, claim_min_idle_s=30)
    in_hand = await drain(first, 3)
    await crash(first)
    heir = bus.group_consumer("g", "heir", ["ticks.0"], rebuild_s=60, claim_min_idle_s=30)
    again = await drain(heir, 3)
    assert [(d.payload, d.replay) for d in again] == [(b"m0", False), (b"m1", False),
                                                      (b"m2", False)]
    await first.ack(in_hand)  # too late, and not the first member's to commit any more
    assert not any(d.acked for d in again)
    await heir.ack(again)
    assert await committed(kafka_broker, "g", "ticks.0") == 3


# -- offsets by time ------------------------------------------------------------------------

class FakeConsumer:
    """Just what the rebuild probe asks of a consumer, answering like a given broker."""

    def __init__(self, answer: OffsetAndTimestamp | None, beginning: int = 0) -> None:
        self.answer = answer
        self.beginning = beginning
        self.seeks: list[int] = []

    async def offsets_for_times(self, query: dict[TopicPartition, int]
                                ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        return dict.fromkeys(query, self.answer)

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, self.beginning)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append(offset)

    def resume(self, *tps: TopicPartition) -> None:
        pass


class FakeRecord:
    def __init__(self, offset: int, timestamp: int) -> None:
        self.offset, self.timestamp = offset, timestamp


@pytest.mark.parametrize(("answer", "start"), [
    (OffsetAndTimestamp(40, 1_000_000 - 60_000), 40),  # real Kafka: the offset for the time
    (OffsetAndTimestamp(0, -1), 7),  # tansu: an offset with an unknown time → from the start
    (OffsetAndTimestamp(-1, -1), 7),
    (None, 99),  # nothing that recent: only the last record itself
])
async def test_the_rebuild_starts_at_the_offset_for_the_time_or_reads_forward(
        bus: KafkaTransport, answer: OffsetAndTimestamp | None, start: int) -> None:
    consumer = KafkaGroupConsumer(bus, "g", "c", ["ticks.0"], rebuild_s=60)
    fake = FakeConsumer(answer, beginning=7)
    tp = TopicPartition("ticks.0", 0)
    state = _Partition(1, 100, phase="probe", replay_until=100)
    left = await consumer._probe(fake, tp, state, [FakeRecord(99, 1_000_000)])
    assert left == []
    assert fake.seeks == [start]
    assert (state.phase, state.replay_from_ms) == ("replay", 1_000_000 - 60_000)


async def test_replay_skips_records_older_than_the_span_by_their_timestamps(
        bus: KafkaTransport) -> None:
    """tansu answers offsets_for_times with offset 0: the span is cut by timestamps."""
    await bus.publish(records("ticks.0", 3))
    await asyncio.sleep(0.5)
    await bus.publish(records("ticks.0", 3, start=3))
    first = bus.group_consumer("g", "c", ["ticks.0"], rebuild_s=0.3, claim_min_idle_s=30)
    await first.ack(await drain(first, 6))
    await crash(first)
    second = bus.group_consumer("g", "c", ["ticks.0"], rebuild_s=0.3, claim_min_idle_s=30)
    await bus.publish(records("ticks.0", 1, start=6))
    again = await drain(second, 4)
    assert [(d.payload, d.replay) for d in again] == [
        (b"m3", True), (b"m4", True), (b"m5", True), (b"m6", False)]


# -- a broker that restarts with nothing -----------------------------------------------------

async def test_a_broker_restart_that_loses_everything_is_recovered_from(
        bus: KafkaTransport, kafka_broker: KafkaBroker, admin: AIOKafkaAdminClient) -> None:
    await bus.declare(STREAMS, Retention(max_age_s=900))
    consumer = bus.group_consumer("g", "c", STREAMS, rebuild_s=60, claim_min_idle_s=30)
    reader = bus.broadcast_reader("alerts")
    await bus.publish(records("ticks.0", 3) + records("alerts", 2))
    await consumer.ack(await drain(consumer, 3))
    assert len(await reader.backlog(10)) == 2
    kafka_broker.restart()
    await asyncio.sleep(1.5)  # past the topic re-check interval

    # The producer keeps working; the declared topics come back as they were declared.
    await eventually(lambda: bus.publish(records("ticks.0", 2, start=10)
                                         + records("alerts", 1, start=10)))
    live: list[Delivery] = []
    deadline = time.monotonic() + 30
    while {d.payload for d in live} != {b"m10", b"m11"} and time.monotonic() < deadline:
        batch = await eventually(lambda: consumer.fetch(100, 100))
        await eventually(lambda batch=batch: consumer.ack(batch))  # type: ignore[misc]
        live.extend(d for d in batch if not d.replay)
    assert {d.payload for d in live} == {b"m10", b"m11"}
    # Back, by the transport or (asked by a consumer first) with the broker's defaults.
    assert {"ticks.0", "ticks.1", "alerts"} <= set(await partitions_of(admin))
    seen: list[Delivery] = []
    deadline = time.monotonic() + 20
    while not seen and time.monotonic() < deadline:
        seen = await eventually(lambda: reader.read(10, 200))
    assert [d.payload for d in seen] == [b"m10"]
    assert await committed(kafka_broker, "g", "ticks.0") == 2


def _kafka_delivery(offset: int, epoch: int) -> KafkaDelivery:
    return KafkaDelivery("ticks.0", f"0:{offset}", b"", 0, partition=0, offset=offset,
                         epoch=epoch)


def test_commit_targets_follow_the_oldest_unacknowledged_offset() -> None:
    state = _Partition(1, committed=10, next_offset=15, unacked={12, 14})
    assert state.commit_target() == 12
    state.unacked.clear()
    assert state.commit_target() == 15
    state.committed = 15
    assert state.commit_target() is None
    fresh = _Partition(1, committed=None)
    assert fresh.commit_target() is None
    assert isinstance(_kafka_delivery(3, 1), Delivery)



async def test_a_reader_waits_for_its_topic_without_creating_it(
        bus: KafkaTransport, admin: AIOKafkaAdminClient) -> None:
    reader = bus.broadcast_reader("alerts")
    assert await reader.backlog(10) == []
    assert await reader.read(10, 50) == []
    assert "alerts" not in await partitions_of(admin)  # left to the writer, with its retention
    await bus.declare(["alerts"], Retention(max_len=100))
    await bus.publish(records("alerts", 2))
    seen: list[Delivery] = []
    deadline = time.monotonic() + 10
    while len(seen) < 2 and time.monotonic() < deadline:
        seen += await reader.read(10, 100)
    assert [d.payload for d in seen] == [b"m0", b"m1"]  # all of it: it is all new


async def test_declare_while_the_broker_is_down_leaves_creation_to_first_use(
        kafka_broker: KafkaBroker) -> None:
    kafka_broker.stop()
    bus = kafka_transport(kafka_broker)
    try:
        await bus.declare(STREAMS, Retention(max_age_s=900))  # no error: services start
        assert await bus.ping() is False
        kafka_broker.start()
        await eventually(lambda: bus.publish(records("ticks.0", 1)))
        assert bus.new_topic("ticks.0").topic_configs == {"retention.ms": "900000"}
        assert await bus.ping() is True
    finally:
        await bus.close()


async def test_a_reader_holds_a_consumer_only_while_it_reads(bus: KafkaTransport) -> None:
    await bus.publish(records("alerts", 3))
    readers = [bus.broadcast_reader("alerts") for _ in range(5)]
    for reader in readers:
        assert [d.payload for d in await reader.backlog(2)] == [b"m1", b"m2"]
    assert bus._readers == []  # five backlogs (a detector's start, admin requests): no consumer
    await bus.publish(records("alerts", 1, start=3))
    assert [d.payload for d in await readers[0].read(10, 500)] == [b"m3"]
    assert bus._readers == [readers[0]]
    await readers[0].close()
    assert bus._readers == []
