"""The dead-letter entry, its bounds, the attempt bookkeeping and ``bury``, without a bus."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from common.bus import Delivery, Record
from common.dead_letters import (
    ERROR_CHARS,
    PAYLOAD_KEPT_BYTES,
    Attempts,
    DeadEntry,
    attempt,
    bury,
    dead_entry,
    dead_stream,
    decode_dead_entry,
    describe_error,
    encode_dead_entry,
)


def delivery(position: str = "1-0", payload: bytes = b"\xc1\x00", stream: str = "ticks.3"
             ) -> Delivery:
    return Delivery(stream, position, payload, 1)


def test_a_dead_stream_sits_beside_its_stream() -> None:
    assert dead_stream("ticks.3") == "ticks.3.dead"
    assert dead_stream("alerts") == "alerts.dead"


def test_a_dead_entry_is_json_with_the_payload_in_base64_and_reads_back() -> None:
    entry = dead_entry(delivery(), "undecodable", ValueError("bad byte"), 1, now_ms=42)
    data = json.loads(encode_dead_entry(entry))
    assert data == {"stream": "ticks.3", "position": "1-0", "reason": "undecodable",
                    "error": "ValueError: bad byte", "attempts": 1, "dead_at_ms": 42,
                    "payload": "wQA=", "payload_size": 2}
    assert decode_dead_entry(encode_dead_entry(entry)) == entry


def test_the_error_is_one_bounded_line_and_the_payload_is_cut_past_its_bound() -> None:
    huge = b"x" * (PAYLOAD_KEPT_BYTES + 10)
    entry = dead_entry(delivery(payload=huge), "failed",
                       RuntimeError("first line\nsecond " + "y" * 1000), 3)
    assert len(entry.error) == ERROR_CHARS
    assert entry.error.startswith("RuntimeError: first line second yyy")
    assert "\n" not in entry.error
    assert entry.error.endswith("…")
    assert entry.payload == huge[:PAYLOAD_KEPT_BYTES]
    assert entry.payload_size == len(huge)
    assert describe_error(KeyError()) == "KeyError"


def test_attempts_count_per_entry_and_are_forgotten() -> None:
    attempts = Attempts(max_attempts=3)
    first, other = delivery("1-0"), delivery("2-0")
    assert [attempts.failed(first), attempts.failed(first), attempts.failed(other)] == [1, 2, 1]
    assert attempts.failed(delivery("1-0", stream="ticks.4")) == 1  # another stream's 1-0
    attempts.forget(first)
    assert attempts.failed(first) == 1
    assert len(attempts) == 3


def test_attempts_are_bounded_the_longest_failed_forgotten_first() -> None:
    attempts = Attempts(capacity=2)
    a, b, c = delivery("1-0"), delivery("2-0"), delivery("3-0")
    attempts.failed(a)
    attempts.failed(b)
    attempts.failed(a)  # a failed again: b is now the oldest
    attempts.failed(c)
    assert len(attempts) == 2
    assert attempts.failed(b) == 1  # forgotten
    assert attempts.failed(c) == 2


def test_attempts_refuse_a_bound_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Attempts(max_attempts=0)


def test_attempt_returns_the_first_success_and_forgets_the_failures() -> None:
    attempts = Attempts(max_attempts=3)
    answers: list[Exception | str] = [RuntimeError("once"), "done"]

    def operation() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert attempt(operation, delivery(), attempts) == "done"
    assert len(attempts) == 0


def test_attempt_gives_the_entry_to_bury_after_the_last_failure() -> None:
    attempts = Attempts(max_attempts=3)
    calls = []

    def operation() -> str:
        calls.append(1)
        raise ZeroDivisionError("division by zero")

    entry = attempt(operation, delivery(payload=b"ok"), attempts)
    assert isinstance(entry, DeadEntry)
    assert (entry.reason, entry.attempts, entry.error, entry.payload) == (
        "failed", 3, "ZeroDivisionError: division by zero", b"ok")
    assert len(calls) == 3
    assert len(attempts) == 0


async def test_bury_publishes_each_entry_on_its_dead_stream_at_once() -> None:
    published: list[list[Record]] = []

    async def publish(records: Sequence[Record]) -> None:
        published.append(list(records))

    entries = [dead_entry(delivery("1-0"), "undecodable", ValueError("x"), 1),
               dead_entry(delivery("0:7", stream="alerts"), "failed", KeyError("k"), 3)]
    await bury(publish, [])
    await bury(publish, entries)
    [records] = published
    assert [(r.stream, r.key) for r in records] == [("ticks.3.dead", "1-0"),
                                                    ("alerts.dead", "0:7")]
    assert [decode_dead_entry(r.payload) for r in records] == entries
