from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Sequence

import pytest

from common.bus import BusUnavailable, Record, Retention
from common.bus.redis_streams import RedisConfig, RedisTransport
from common.schemas import Tick, decode_ticks
from ingestor.metrics import IngestorMetrics, new_registry
from ingestor.publisher import BUNDLE_TICKS, MAX_TICKS_PER_RECORD, Publisher
from tests.support.ingestor import read_entries, wait_until
from tests.support.servers import RedisServer

P = 4
SYMBOLS = [f"S{i:02d}USDT" for i in range(40)]


def frame(k: int, symbols: Sequence[str] = SYMBOLS) -> list[Tick]:
    return [Tick(s, 1.0 + k + i / 1000, 1_700_000_000_000 + 1000 * k, "mini_ticker")
            for i, s in enumerate(symbols)]


def expected_partition(symbol: str) -> int:
    return zlib.crc32(symbol.encode("utf-8")) % P


class CountingTransport(RedisTransport):
    """The real Redis transport, remembering how its publish and declare were called."""

    def __init__(self, url: str) -> None:
        super().__init__(RedisConfig(url, timeout_s=1.0))
        self.batches: list[int] = []
        self.declared: list[tuple[list[str], Retention]] = []

    async def declare(self, streams: Sequence[str], retention: Retention) -> None:
        self.declared.append((list(streams), retention))
        await super().declare(streams, retention)

    async def publish(self, records: Sequence[Record]) -> None:
        self.batches.append(len(records))
        await super().publish(records)


@pytest.fixture
async def transport(redis_server: RedisServer) -> AsyncIterator[CountingTransport]:
    t = CountingTransport(redis_server.url)
    yield t
    await t.close()


def make_publisher(transport: RedisTransport | None, buffer_frames: int = 100,
                   flush_timeout_s: float = 3.0) -> tuple[Publisher, IngestorMetrics]:
    metrics = IngestorMetrics(new_registry())
    publisher = Publisher(transport, metrics, partitions=P,  # type: ignore[arg-type]
                          buffer_frames=buffer_frames, retention=Retention(max_age_s=900.0),
                          flush_timeout_s=flush_timeout_s, retry_min_s=0.05, retry_max_s=0.2)
    return publisher, metrics


def value(metrics: IngestorMetrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


async def drain(publisher: Publisher) -> None:
    writer = asyncio.create_task(publisher.run())
    publisher.finish()
    await asyncio.wait_for(writer, 10)


async def test_one_entry_per_partition_per_frame_partitioned_by_crc32(
        transport: CountingTransport, redis_server: RedisServer) -> None:
    publisher, metrics = make_publisher(transport)
    frames = [frame(k) for k in range(3)]
    for f in frames:
        publisher.submit(f)
    await drain(publisher)

    entries = await read_entries(redis_server.url, P)
    assert {len(e) for e in entries.values()} == {3}  # every frame touched every partition
    for p, batches in entries.items():
        for k, batch in enumerate(batches):
            assert {t.symbol for t in batch} == {s for s in SYMBOLS if expected_partition(s) == p}
            assert batch == [t for t in frames[k] if expected_partition(t.symbol) == p]
    assert value(metrics, "ingestor_ticks_published_total") == 3 * len(SYMBOLS)


async def test_partitions_are_stable_across_frames_and_subsets(
        transport: CountingTransport, redis_server: RedisServer) -> None:
    publisher, _ = make_publisher(transport)
    publisher.submit(frame(0, SYMBOLS[:7]))
    publisher.submit(frame(1, list(reversed(SYMBOLS))))
    publisher.submit(frame(2, ["BTCUSDT"]))
    await drain(publisher)

    entries = await read_entries(redis_server.url, P)
    for p, batches in entries.items():
        assert all(expected_partition(t.symbol) == p for batch in batches for t in batch)
    btc_partition = entries[expected_partition("BTCUSDT")]
    btc = [batch for batch in btc_partition if batch[0].symbol == "BTCUSDT"]
    assert btc == [[frame(2, ["BTCUSDT"])[0]]]
    assert sum(len(b) for batches in entries.values() for b in batches) == 7 + 40 + 1


async def test_tick_streams_are_declared_with_age_retention(
        transport: CountingTransport) -> None:
    publisher, _ = make_publisher(transport)
    await drain(publisher)
    assert transport.declared == [([f"ticks.{p}" for p in range(P)], Retention(max_age_s=900.0))]


async def test_buffered_frames_go_out_in_one_publish(
        transport: CountingTransport, redis_server: RedisServer) -> None:
    publisher, metrics = make_publisher(transport)
    for k in range(10):
        publisher.submit(frame(k))
    await drain(publisher)
    assert transport.batches == [10 * P]
    assert metrics.registry.get_sample_value("ingestor_publish_batch_records_sum") == 10 * P


async def test_overflow_drops_the_oldest_frames_and_counts_their_ticks(
        transport: CountingTransport, redis_server: RedisServer) -> None:
    publisher, metrics = make_publisher(transport, buffer_frames=3)
    frames = [frame(k, SYMBOLS[: 10 + k]) for k in range(5)]  # distinct sizes per frame
    for f in frames:
        publisher.submit(f)
    assert publisher.buffered_frames == 3
    assert value(metrics, "ingestor_buffer_frames") == 3
    assert value(metrics, "ingestor_ticks_dropped_total") == len(frames[0]) + len(frames[1])
    await drain(publisher)

    entries = await read_entries(redis_server.url, P)
    landed = sorted({t.event_time_ms for batches in entries.values() for b in batches for t in b})
    assert landed == [f[0].event_time_ms for f in frames[2:]]


async def test_writer_survives_redis_restart_and_loses_nothing(
        transport: CountingTransport, redis_server: RedisServer) -> None:
    publisher, metrics = make_publisher(transport)
    writer = asyncio.create_task(publisher.run())
    publisher.submit(frame(0))
    await wait_until(lambda: value(metrics, "ingestor_ticks_published_total") == len(SYMBOLS),
                     what="first frame published")

    redis_server.stop()
    for k in range(1, 6):
        publisher.submit(frame(k))
        await asyncio.sleep(0.02)
    await wait_until(lambda: value(metrics, "ingestor_publish_errors_total") >= 2,
                     what="publish failures while redis is down")
    assert not writer.done()
    redis_server.start()

    await wait_until(lambda: value(metrics, "ingestor_ticks_published_total") == 6 * len(SYMBOLS),
                     what="held frames published after the restart")
    publisher.finish()
    await asyncio.wait_for(writer, 5)

    entries = await read_entries(redis_server.url, P)
    for batches in entries.values():
        times = [b[0].event_time_ms for b in batches]
        # Everything arrived, in order; a retried partial write may only add duplicates.
        assert sorted(set(times)) == [frame(k)[0].event_time_ms for k in range(6)]
        assert times == sorted(times)
    assert value(metrics, "ingestor_ticks_dropped_total") == 0


async def test_flush_gives_up_at_the_deadline_when_the_bus_is_down(
        redis_server: RedisServer) -> None:
    transport = RedisTransport(RedisConfig(redis_server.url, timeout_s=1.0))
    redis_server.stop()
    publisher, metrics = make_publisher(transport, flush_timeout_s=0.5)
    publisher.submit(frame(0))
    publisher.submit(frame(1))
    writer = asyncio.create_task(publisher.run())
    await asyncio.sleep(0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    publisher.finish()
    await asyncio.wait_for(writer, 3)
    assert loop.time() - started < 1.5
    assert value(metrics, "ingestor_ticks_dropped_total") == 2 * len(SYMBOLS)
    await transport.close()


class BrokenTransport:
    async def declare(self, streams: Sequence[str], retention: Retention) -> None:
        pass

    async def publish(self, records: Sequence[Record]) -> None:
        raise RuntimeError("a bug, not an outage")


class FlakyTransport(BrokenTransport):
    def __init__(self) -> None:
        self.calls = 0
        self.written: list[Record] = []

    async def publish(self, records: Sequence[Record]) -> None:
        self.calls += 1
        if self.calls <= 2:
            raise BusUnavailable("down")
        self.written.extend(records)


async def test_any_other_writer_error_propagates() -> None:
    publisher, _ = make_publisher(BrokenTransport())  # type: ignore[arg-type]
    writer = asyncio.create_task(publisher.run())
    publisher.submit(frame(0))
    with pytest.raises(RuntimeError, match="a bug"):
        await asyncio.wait_for(writer, 5)


async def test_bus_unavailable_is_retried_with_the_same_records() -> None:
    transport = FlakyTransport()
    publisher, metrics = make_publisher(transport)  # type: ignore[arg-type]
    publisher.submit(frame(0))
    await drain(publisher)
    assert transport.calls == 3
    assert [r.stream for r in transport.written] == [f"ticks.{p}" for p in range(P)]
    assert value(metrics, "ingestor_publish_errors_total") == 2


async def test_record_key_is_the_first_symbol_of_its_partition() -> None:
    publisher, _ = make_publisher(None)
    records = publisher.records_for(frame(0))
    for record in records:
        p = int(record.stream.removeprefix("ticks."))
        assert record.key == next(s for s in SYMBOLS if expected_partition(s) == p)


class TimedTransport(BrokenTransport):
    """Remembers each publish call's records and when it came (event-loop time)."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, list[Record]]] = []

    async def publish(self, records: Sequence[Record]) -> None:
        self.calls.append((asyncio.get_running_loop().time(), list(records)))


def make_flushing(transport: TimedTransport, flush_ms: int,
                  buffer_frames: int = 1000) -> tuple[Publisher, IngestorMetrics]:
    metrics = IngestorMetrics(new_registry())
    publisher = Publisher(transport, metrics, partitions=P,  # type: ignore[arg-type]
                          buffer_frames=buffer_frames, retention=Retention(max_age_s=900.0),
                          flush_timeout_s=3.0, flush_ms=flush_ms)
    return publisher, metrics


def trades(k: int) -> list[Tick]:
    """One trade per frame, as the aggTrade streams send them."""
    symbol = SYMBOLS[k % len(SYMBOLS)]
    return [Tick(symbol, 100.0 + k, 1_700_000_000_000 + k, "agg_trade", quantity=1.0)]


async def test_a_burst_within_the_flush_delay_is_one_entry_per_partition() -> None:
    transport = TimedTransport()
    publisher, metrics = make_flushing(transport, flush_ms=50)
    writer = asyncio.create_task(publisher.run())
    await asyncio.sleep(0.01)  # declared, waiting
    burst = [trades(k) for k in range(400)]
    for frame in burst:
        publisher.submit(frame)
    await wait_until(lambda: value(metrics, "ingestor_ticks_published_total") == 400,
                     what="the burst published")
    [(_, records)] = transport.calls
    assert sorted(r.stream for r in records) == [f"ticks.{p}" for p in range(P)]
    for record in records:
        p = int(record.stream.removeprefix("ticks."))
        # Every tick of the partition, in arrival order, in one entry.
        assert decode_ticks(record.payload) == [
            f[0] for f in burst if expected_partition(f[0].symbol) == p]
    publisher.finish()
    await asyncio.wait_for(writer, 5)


async def test_a_tick_waits_at_most_the_flush_delay() -> None:
    transport = TimedTransport()
    publisher, _ = make_flushing(transport, flush_ms=40)
    writer = asyncio.create_task(publisher.run())
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0.01)
    submitted = []
    for k in range(6):  # frames 25 ms apart: each flush takes what came within 40 ms
        submitted.append(loop.time())
        publisher.submit(trades(k))
        await asyncio.sleep(0.025)
    await wait_until(lambda: sum(len(decode_ticks(r.payload)) for _, rs in transport.calls
                                 for r in rs) == 6, what="every tick published")
    publisher.finish()
    await asyncio.wait_for(writer, 5)
    published_at = {}
    for at, records in transport.calls:
        for record in records:
            for tick in decode_ticks(record.payload):
                published_at[tick.event_time_ms - 1_700_000_000_000] = at
    waits = [published_at[k] - submitted[k] for k in range(6)]
    assert max(waits) <= 0.04 + 0.03  # the delay, and a scheduling margin
    assert min(waits) >= 0.0
    assert waits[0] >= 0.035  # the first tick did wait for company
    assert 1 < len(transport.calls) < 6


async def test_no_flush_delay_writes_as_soon_as_the_writer_is_free() -> None:
    transport = TimedTransport()
    publisher, _ = make_flushing(transport, flush_ms=0)
    writer = asyncio.create_task(publisher.run())
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0.01)
    submitted = loop.time()
    publisher.submit(trades(0))
    await wait_until(lambda: transport.calls, what="the publish")
    assert transport.calls[0][0] - submitted < 0.02
    publisher.finish()
    await asyncio.wait_for(writer, 5)


async def test_finish_flushes_at_once_without_waiting_for_the_delay() -> None:
    transport = TimedTransport()
    publisher, _ = make_flushing(transport, flush_ms=1000)
    writer = asyncio.create_task(publisher.run())
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0.01)
    publisher.submit(trades(0))
    await asyncio.sleep(0.01)
    started = loop.time()
    publisher.finish()
    await asyncio.wait_for(writer, 5)
    assert loop.time() - started < 0.2
    assert len(transport.calls) == 1


def board_frame(k: int) -> list[Tick]:
    """A frame as big as a buffer slot: a mini ticker frame of the whole board."""
    return [Tick(f"S{i}USDT", 1.0, 1_700_000_000_000 + k, "mini_ticker")
            for i in range(BUNDLE_TICKS)]


async def test_flushing_keeps_the_bounded_buffer_and_its_drop_count() -> None:
    transport = TimedTransport()
    publisher, metrics = make_flushing(transport, flush_ms=20, buffer_frames=10)
    for k in range(25):  # before the writer runs: 15 frames evicted, oldest first
        publisher.submit(board_frame(k))
    assert value(metrics, "ingestor_ticks_dropped_total") == 15 * BUNDLE_TICKS
    await drain(publisher)
    kept = sorted({t.event_time_ms - 1_700_000_000_000 for _, rs in transport.calls
                   for r in rs for t in decode_ticks(r.payload)})
    assert kept == list(range(15, 25))


async def test_small_frames_share_buffer_slots_so_an_outage_keeps_more_of_them() -> None:
    transport = TimedTransport()
    publisher, metrics = make_flushing(transport, flush_ms=20, buffer_frames=3)
    frames = [trades(k) for k in range(3 * BUNDLE_TICKS)]
    for frame in frames:  # one trade each: 3 slots of BUNDLE_TICKS, nothing dropped
        publisher.submit(frame)
    assert publisher.buffered_frames == 3
    assert value(metrics, "ingestor_ticks_dropped_total") == 0
    publisher.submit(trades(0))  # a 4th slot: the oldest bundle goes
    assert value(metrics, "ingestor_ticks_dropped_total") == BUNDLE_TICKS
    assert all(len(frame) == 1 for frame in frames)  # what the feed handed over is untouched
    await drain(publisher)
    assert sum(len(decode_ticks(r.payload)) for _, rs in transport.calls
               for r in rs) == 2 * BUNDLE_TICKS + 1


async def test_a_big_flush_is_split_into_bounded_entries() -> None:
    transport = TimedTransport()
    publisher, _ = make_flushing(transport, flush_ms=5, buffer_frames=100)
    symbol = "BTCUSDT"
    for k in range(3):
        publisher.submit([Tick(symbol, 1.0, k * 10_000 + i, "agg_trade")
                          for i in range(MAX_TICKS_PER_RECORD // 2 + 1)])
    await drain(publisher)
    [(_, records)] = transport.calls
    sizes = [len(decode_ticks(r.payload)) for r in records]
    assert sizes == [MAX_TICKS_PER_RECORD, 3 * (MAX_TICKS_PER_RECORD // 2 + 1)
                     - MAX_TICKS_PER_RECORD]
    assert {r.stream for r in records} == {f"ticks.{expected_partition(symbol)}"}
