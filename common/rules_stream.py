"""The ``rules`` stream: which entry is in force, read once (``load``) or followed (``follow``).

The gateway's admin API writes a whole ``RuleSet`` per change; detectors apply the one in
force live; gateways show it. Every reader decides the same way, here, so they agree on
every edge:

- **Which entry wins.** Read oldest first, an entry comes into force when its version is
  higher than the one in force (``wins``). So of two writers of one version, the first
  entry on the stream wins everywhere, and a later entry with the same or a lower version
  is ignored. A writer recognises its own entry by ``change_id`` and reads the stream back
  to learn whether it won (``in_force_after``).
- **Version 0 or negative: refused, everywhere.** Writers start at 1 (``next_version``).
  Version 0 is what detectors that predate versioned rules announced, and what a writer
  that forgot the field would write: it is skipped like a bad entry, so an empty stream
  or one of such entries alone is seeded again by the next detector.
- **A torn or undecodable entry** (not msgpack, cut short, or rules that do not validate,
  e.g. a field this version does not know) is skipped: logged as a warning by each
  detector and gateway that reads it, counted by kind in ``RulesView.skipped``, never
  fatal, never the winner. The rules in force stay.
- **A version gap** (3, then 7): accepted, and logged. Versions order the entries; they are
  not a sequence to complete (what is between was trimmed, lost, or never read by this
  reader), and waiting for it would freeze the rules forever.
- **A lower version than the one held** (a broker that lost the stream, say): ignored by a
  running reader, which cannot tell it from a stale write; a restarted one reads the
  stream afresh.

The stream keeps ``RULES_KEPT`` entries: a reader that starts reads them all and holds the
winner (``load``), then continues after them (``follow``). Pure functions decide; the async
ones only read and write through the bus contract (``common.bus``). See
docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal

import msgspec

from common.backoff import Backoff
from common.bus import BroadcastReader, BusUnavailable, Delivery, Record, Retention, Transport
from common.partitioning import RULES_KEPT, RULES_STREAM
from common.rule_model import Rule
from common.runner import wait_or_stop
from common.schemas import RuleSet, decode_rule_set, encode_rule_set

log = logging.getLogger(__name__)

# How long one read of a follower blocks: a change is applied within about this long.
FOLLOW_BLOCK_MS: Final = 250
READ_COUNT: Final = 16

SkipKind = Literal["undecodable", "invalid", "unversioned"]


class EntryError(ValueError):
    """A ``rules`` entry that no reader applies; ``kind`` says why, for counting."""

    def __init__(self, kind: SkipKind, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind: SkipKind = kind


# --- pure: one entry, and which one wins ---------------------------------------------------


def read_entry(payload: bytes) -> RuleSet:
    """The rule set of one entry, or ``EntryError`` when no reader may apply it."""
    try:
        rule_set = decode_rule_set(payload)
    except msgspec.ValidationError as exc:  # msgpack, but not a valid rule set
        raise EntryError("invalid", str(exc)) from None
    except msgspec.DecodeError as exc:  # not msgpack, or cut short
        raise EntryError("undecodable", str(exc)) from None
    if rule_set.version < 1:
        raise EntryError("unversioned", f"version {rule_set.version} (versions start at 1)")
    return rule_set


def wins(entry: RuleSet, current: RuleSet | None) -> bool:
    """Whether ``entry``, read after ``current`` was in force, comes into force."""
    return current is None or entry.version > current.version


@dataclass(frozen=True, slots=True)
class Judged:
    """One entry of the stream as every reader sees it."""

    position: str
    entry: RuleSet | None  # None: skipped (``error`` says why)
    applied: bool
    error: EntryError | None = None


def judge(deliveries: Iterable[Delivery], current: RuleSet | None = None) -> list[Judged]:
    """Each entry, oldest first, judged as a reader holding ``current`` judges it."""
    judged = []
    for delivery in deliveries:
        try:
            entry = read_entry(delivery.payload)
        except EntryError as exc:
            judged.append(Judged(delivery.position, None, False, exc))
            continue
        applied = wins(entry, current)
        if applied:
            current = entry
        judged.append(Judged(delivery.position, entry, applied))
    return judged


def in_force(judged: Iterable[Judged]) -> RuleSet | None:
    """The rule set in force after these entries: the last one applied."""
    current = None
    for row in judged:
        if row.applied:
            current = row.entry
    return current


def in_force_after(judged: Iterable[Judged], change_id: str) -> RuleSet | None:
    """The rule set in force right after the entry of ``change_id`` was read: that entry
    if it won, else the one that beat it; ``None`` while that entry is not on the stream."""
    current = None
    for row in judged:
        if row.applied:
            current = row.entry
        if row.entry is not None and row.entry.change_id == change_id:
            return current
    return None


def next_version(current: RuleSet | None, rules: list[Rule], *, by: str,
                 change: str) -> RuleSet:
    """The entry a writer publishes on top of ``current``: one version above, new id."""
    return RuleSet(rules=rules, updated_at_ms=int(time.time() * 1000), updated_by=by,
                   version=(current.version if current else 0) + 1, change=change,
                   change_id=uuid.uuid4().hex)


class RulesView:
    """The rules stream as one reader has read it so far: the rule set in force, and the
    entries it skipped, by kind (each logged as a warning the first time it is read, and
    handed to ``on_skip``: the service's metric)."""

    def __init__(self, on_skip: Callable[[SkipKind], None] | None = None) -> None:
        self.current: RuleSet | None = None
        self.skipped: Counter[SkipKind] = Counter()
        self.loaded = False  # the kept entries have been read
        self.on_skip = on_skip

    def offer(self, rule_set: RuleSet) -> bool:
        """Hold ``rule_set`` (an entry already read) if it wins; True when it did."""
        previous = self.current
        if not wins(rule_set, previous):
            return False
        if previous is not None and rule_set.version > previous.version + 1:
            log.info("rules version %d follows version %d: the versions between were "
                     "never read here (trimmed, lost or before this reader)",
                     rule_set.version, previous.version)
        self.current = rule_set
        return True

    def take(self, deliveries: Iterable[Delivery], *, quiet: bool = False) -> list[RuleSet]:
        """Read entries, oldest first; returns those that came into force, in order.
        ``quiet`` keeps ignored entries out of the log (a start-up read of the backlog)."""
        applied = []
        for row in judge(deliveries):
            if row.error is not None:
                self.skipped[row.error.kind] += 1
                if self.on_skip is not None:
                    self.on_skip(row.error.kind)
                log.warning("rules entry %s skipped (%s); the rules in force stay",
                            row.position, row.error)
            elif row.entry is not None and self.offer(row.entry):
                applied.append(row.entry)
            elif row.entry is not None and not quiet:
                held = self.current.version if self.current else 0
                log.info("rules entry %s (version %d, by %s) ignored: version %d is in force",
                         row.position, row.entry.version, row.entry.updated_by, held)
        return applied


# --- the bus: read and write ---------------------------------------------------------------


async def load(reader: BroadcastReader, view: RulesView | None = None) -> RulesView:
    """Read the kept entries into ``view`` (a new one by default); ``view.current`` is the
    newest valid rule set, ``None`` for a stream with none. Later reads of ``reader``
    continue after these entries. Raises ``BusUnavailable``."""
    view = view if view is not None else RulesView()
    view.take(await reader.backlog(RULES_KEPT), quiet=True)
    view.loaded = True
    return view


async def kept(transport: Transport) -> list[Judged]:
    """The kept entries, oldest first, judged, through a reader of their own (closed).
    Raises ``BusUnavailable``."""
    reader = transport.broadcast_reader(RULES_STREAM)
    try:
        return judge(await reader.backlog(RULES_KEPT))
    finally:
        await reader.close()


async def follow(reader: BroadcastReader, view: RulesView, *, block_ms: int = FOLLOW_BLOCK_MS,
                 stopping: asyncio.Event | None = None) -> AsyncGenerator[RuleSet, None]:
    """Yield each rule set as it comes into force: first, if ``view`` was not loaded, the
    winner of the kept entries (when there is one), then every newer one within about
    ``block_ms`` of its write. A bus outage is waited out (``Backoff``), never raised.
    Ends when ``stopping`` is set; without it, runs until cancelled."""
    backoff = Backoff(0.1, 2.0)
    while stopping is None or not stopping.is_set():
        try:
            if view.loaded:
                deliveries = await reader.read(READ_COUNT, block_ms)
            else:
                deliveries = await reader.backlog(RULES_KEPT)
        except BusUnavailable as exc:
            delay = backoff.next_delay()
            log.debug("rules stream not read (%s); retrying in %.1fs", exc, delay)
            if stopping is None:
                await asyncio.sleep(delay)
            elif await wait_or_stop(stopping, delay):
                return
            continue
        backoff.reset()
        if view.loaded:
            for rule_set in view.take(deliveries):
                yield rule_set
        else:
            applied = view.take(deliveries, quiet=True)
            view.loaded = True
            if applied:
                yield applied[-1]


async def write(transport: Transport, rule_set: RuleSet) -> None:
    """Append ``rule_set`` to the stream (made to exist, keeping ``RULES_KEPT``). Whether it
    won is for a read-back to tell (``in_force_after``). Raises ``BusUnavailable``."""
    await transport.declare([RULES_STREAM], Retention(max_len=RULES_KEPT))
    await transport.publish([Record(RULES_STREAM, "rules", encode_rule_set(rule_set))])


async def confirm(transport: Transport, change_id: str, timeout_s: float) -> RuleSet:
    """Read the stream back until the entry of ``change_id`` is there; returns the rule set
    in force right after it: that entry if it won its version, else the one that beat it.
    Raises ``TimeoutError`` when it is not seen in time, ``BusUnavailable``."""
    async with asyncio.timeout(timeout_s):
        while True:
            decided = in_force_after(await kept(transport), change_id)
            if decided is not None:
                return decided
            await asyncio.sleep(0.05)
