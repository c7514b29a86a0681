"""The soak's verdict: alerts matched to scripted moves, and takeover times read from the
detectors' heartbeats."""

from __future__ import annotations

from bench.soak import Options, fault_plan
from bench.soak_client import Beat, Received
from bench.soak_market import Script, symbol_name
from bench.soak_report import Fault, alerts_verdict, match_move, takeover
from common.schemas import DetectorHeartbeat

SCRIPT = Script(t0=1000.0, every_s=1.0, symbols=10)


def alert(i: int, direction: str, at_s: float, *, suffix: str = "") -> Received:
    ms = int(at_s * 1000)
    return Received(f"{symbol_name(i)}:10:{ms}{suffix}", symbol_name(i), direction, ms,
                    at_s + 0.1, "live")


def test_an_alert_belongs_to_its_symbols_move_of_the_same_direction() -> None:
    assert match_move(SCRIPT, alert(3, "up", 1003.2)) == SCRIPT.move(3)
    assert match_move(SCRIPT, alert(3, "down", 1013.4)) == SCRIPT.move(13)
    assert match_move(SCRIPT, alert(3, "down", 1003.2)) is None  # wrong direction
    assert match_move(SCRIPT, alert(3, "up", 990.0)) is None  # before its first move


def test_lost_duplicated_and_unexpected_are_counted_apart() -> None:
    expected = SCRIPT.moves_between(1000.0, 1005.0)  # moves 0-4
    received = [alert(0, "up", 1000.3), alert(1, "up", 1001.3), alert(1, "up", 1004.0),
                alert(2, "up", 1002.2), alert(4, "up", 1004.1), alert(5, "down", 1005.5)]
    duplicates = [alert(0, "up", 1000.3)]
    verdict = alerts_verdict(SCRIPT, expected, received, duplicates)
    assert verdict["expected"] == 5
    assert verdict["received"] == 4
    assert verdict["lost"] == 1
    assert verdict["lost_moves"][0]["index"] == 3
    assert verdict["duplicated"] == 2  # an id twice, and a second id for move 1
    assert verdict["unexpected"] == 1


def beat(at_s: float, consumer: str, partitions: list[int], *, rebuilding: bool = False
         ) -> Beat:
    return Beat(at_s + 0.01, DetectorHeartbeat(consumer=consumer, partitions=partitions,
                                               sent_at_ms=int(at_s * 1000),
                                               rebuilding=rebuilding))


def test_a_takeover_ends_when_every_partition_of_the_dead_is_owned_again() -> None:
    beats = [beat(99.0, "detector-a", [0, 2]), beat(99.5, "detector-b", [1, 3]),
             beat(100.5, "detector-b", [1, 3]),
             beat(103.0, "detector-b", [0, 1, 3], rebuilding=True),  # not yet: rebuilding
             beat(104.0, "detector-b", [0, 1, 3]),
             beat(106.0, "detector-a.2", [2])]
    outcome = takeover(Fault(100.0, "detector-a", 7), beats)
    assert outcome.partitions == [0, 2]
    assert outcome.seconds == 6.01
    assert outcome.by == ["detector-a.2", "detector-b"]
    assert takeover(Fault(100.0, "detector-a", 7), beats[:5]).seconds is None


def test_the_fault_plan_kills_every_kind_once_per_round_from_a_seed() -> None:
    options = Options(duration_s=1000, fault_every_s=50, warmup_s=100, tail_s=100, seed=5)
    plan = fault_plan(options, 0.0)
    assert [at for at, _ in plan] == [100.0 + 50 * i for i in range(17)]  # to 900: the tail
    kinds = set(options.targets)
    assert {r for _, r in plan[:5]} == kinds
    assert {r for _, r in plan[5:10]} == kinds
    assert plan == fault_plan(options, 0.0)
    assert plan != fault_plan(Options(duration_s=1000, fault_every_s=50, warmup_s=100,
                                      tail_s=100, seed=6), 0.0)
