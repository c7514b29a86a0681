"""Leases that divide a Redis consumer group's streams among its live members (``Sharing``).

Everything lives in Redis and runs on the server's clock (``TIME`` inside Lua scripts), so
members on different hosts need no synchronised clocks. The keys of group ``g``:

- ``g.members``: sorted set, member name → expiry (server ms); renewed every round.
- ``g.instances``: hash, member name → a random id of the process using that name (two
  live processes under one name are refused).
- ``g.owners``: hash, stream → ``<state>|<member>`` (``held``, ``closed``, ``rebalanced``,
  ``lapsed``): who held a stream last and how it let go, for the log's reason only.
- ``g.lease.<stream>``: the lease, ``SET NX PX lease_ms``, value ``<member>:<n>``;
- ``g.fence.<stream>``: the ``INCR`` counter giving ``n``, so every grant has its own value
  (the fencing token). It never expires; the other keys vanish when no member renews.

A member holds a stream while the lease key holds its token. It renews every
``lease_s / 5`` (at most every second) and judges by its own monotonic clock: a lease
counts until the renewal's *send* time + ``lease_s`` − a margin, so a member that stalls
stops owning before the key can expire on the server and another member take it. Writes
done for a stream (``fenced_publish``) are one script that checks the token first.

Shares: members sorted by name, ``quota`` below; a member above its quota releases its
last streams, one below takes the first free ones, so a change moves few streams.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as redis

from common.bus.contract import TransportConfigError

log = logging.getLogger(__name__)

MIN_MARGIN_S: Final = 0.2

# KEYS: members, instances, owners, the leases. ARGV: member, instance, lease_ms, then per
# stream its name, this member's token ('' for none) and '1' to let it go (it lapsed here).
# Returns {'dup', expiry} when another live process uses the name, else
# {'ok', now, members, values}: every lease's value after renewing this member's own.
_ROUND: Final = """
local member, instance, lease_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
local p = #KEYS - 3
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  redis.call('ZREM', KEYS[1], gone)
  redis.call('HDEL', KEYS[2], gone)
end
local user = redis.call('HGET', KEYS[2], member)
if user and user ~= instance then
  return {'dup', redis.call('ZSCORE', KEYS[1], member) or '0'}
end
redis.call('ZADD', KEYS[1], now + lease_ms, member)
redis.call('HSET', KEYS[2], member, instance)
for k = 1, 3 do redis.call('PEXPIRE', KEYS[k], 4 * lease_ms) end
local values = {}
for i = 1, p do
  local key, token, drop = KEYS[3 + i], ARGV[2 + 3 * i], ARGV[3 + 3 * i] == '1'
  local value = redis.call('GET', key)
  if token ~= '' and value == token then
    if drop then
      redis.call('DEL', key)
      redis.call('HSET', KEYS[3], ARGV[1 + 3 * i], 'lapsed|' .. member)
      value = false
    else
      redis.call('PEXPIRE', key, lease_ms)
    end
  end
  values[i] = value or ''
end
return {'ok', now, redis.call('ZRANGE', KEYS[1], 0, -1), values}
"""

# KEYS: owners, then per stream its lease and fence counter. ARGV: member, lease_ms, the
# streams' names. Returns per stream {token or '', the owners record before ('' if none)}.
_ACQUIRE: Final = """
local member, lease_ms = ARGV[1], tonumber(ARGV[2])
local out = {}
for i = 1, (#KEYS - 1) / 2 do
  local lease, fence, name = KEYS[2 * i], KEYS[2 * i + 1], ARGV[2 + i]
  local token = member .. ':' .. redis.call('INCR', fence)
  if redis.call('SET', lease, token, 'NX', 'PX', lease_ms) then
    local before = redis.call('HGET', KEYS[1], name) or ''
    redis.call('HSET', KEYS[1], name, 'held|' .. member)
    out[i] = {token, before}
  else
    out[i] = {'', ''}
  end
end
return out
"""

# KEYS: members, instances, owners, the leases. ARGV: member, reason, '1' to leave the
# group too, then per lease its stream's name and this member's token. Compare-and-delete.
_RELEASE: Final = """
local member, reason = ARGV[1], ARGV[2]
for i = 1, #KEYS - 3 do
  if redis.call('GET', KEYS[3 + i]) == ARGV[3 + 2 * i] then
    redis.call('DEL', KEYS[3 + i])
    redis.call('HSET', KEYS[3], ARGV[2 + 2 * i], reason .. '|' .. member)
  end
end
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[1], member)
  redis.call('HDEL', KEYS[2], member)
end
return 1
"""

# KEYS: the sources' leases, then each record's stream. ARGV: the payload field, the
# sources' tokens, then per record its payload, MAXLEN and MINID ('' for none). Returns
# the 1-based indexes of the sources whose lease is not this member's (nothing written).
_PUBLISH: Final = """
local n = tonumber(ARGV[2])
local lost = {}
for i = 1, n do
  if redis.call('GET', KEYS[i]) ~= ARGV[2 + i] then lost[#lost + 1] = i end
end
if #lost > 0 then return lost end
local a = 3 + n
for k = n + 1, #KEYS do
  local payload, maxlen, minid = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  a = a + 3
  if maxlen ~= '' then
    redis.call('XADD', KEYS[k], 'MAXLEN', '~', maxlen, '*', ARGV[1], payload)
  elseif minid ~= '' then
    redis.call('XADD', KEYS[k], 'MINID', '~', minid, '*', ARGV[1], payload)
  else
    redis.call('XADD', KEYS[k], '*', ARGV[1], payload)
  end
end
return {}
"""


def quota(streams: int, members: Sequence[str], member: str) -> int:
    """How many of ``streams`` ``member`` may hold among ``members`` (any order): sorted by
    name, the first ``streams mod n`` may hold ⌈streams / n⌉, the others ⌊streams / n⌋. The
    quotas add up to ``streams``, so a member that joins always gets its share and nobody
    needs more than ⌈streams / n⌉. A member not (yet) among them counts as one more."""
    ranked = sorted({*members, member})
    base, extra = divmod(streams, len(ranked))
    return base + (1 if ranked.index(member) < extra else 0)


def safety_margin(lease_s: float) -> float:
    """How long before its expiry on the server a lease stops counting here: room for the
    clocks' drift and a renewal's trip."""
    return max(MIN_MARGIN_S, lease_s / 10)


def renew_interval(lease_s: float) -> float:
    return min(lease_s / 5, 1.0)


@dataclass(frozen=True, slots=True)
class OwnershipChange:
    """A stream that came to this member (``gained``) or left it: ``released`` (it let go:
    closing, rebalancing, a lease that lapsed here) or ``lost`` (another took it, or the
    server had forgotten the lease). ``cause`` is a short word for metrics, ``reason`` the
    log's sentence."""

    stream: str
    change: str
    cause: str
    reason: str


@dataclass(frozen=True, slots=True)
class LeaseKeys:
    group: str

    @property
    def members(self) -> str:
        return f"{self.group}.members"

    @property
    def instances(self) -> str:
        return f"{self.group}.instances"

    @property
    def owners(self) -> str:
        return f"{self.group}.owners"

    def lease(self, stream: str) -> str:
        return f"{self.group}.lease.{stream}"

    def fence(self, stream: str) -> str:
        return f"{self.group}.fence.{stream}"


@dataclass(slots=True)
class _Held:
    token: str
    valid_until: float  # this process's monotonic clock


class Leases:
    """One member's leases on a group's streams: the round (renew, rebalance, take free
    streams), the view of what it holds now, the fenced write and the hand-over."""

    def __init__(self, client: redis.Redis, group: str, member: str, streams: Sequence[str],
                 lease_s: float) -> None:
        self._client = client
        self._group = group
        self._member = member
        self._streams = list(dict.fromkeys(streams))
        self._lease_ms = max(1, int(lease_s * 1000))
        self._valid_s = lease_s - safety_margin(lease_s)
        self._every_s = renew_interval(lease_s)
        self._instance = secrets.token_hex(8)
        self._keys = LeaseKeys(group)
        self._held: dict[str, _Held] = {}
        self._rounds = 0
        self._next_round = 0.0
        self._rival_expiry: float | None = None
        self._round = client.register_script(_ROUND)
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._publish = client.register_script(_PUBLISH)
        self.changes: Counter[tuple[str, str]] = Counter()
        self.listener: Callable[[OwnershipChange], None] | None = None

    @property
    def keys(self) -> LeaseKeys:
        return self._keys

    def owned(self) -> frozenset[str]:
        now = time.monotonic()
        return frozenset(s for s, held in self._held.items() if held.valid_until > now)

    def seconds_to_round(self) -> float:
        return max(0.0, self._next_round - time.monotonic())

    def due(self) -> bool:
        return time.monotonic() >= self._next_round

    async def round(self) -> list[OwnershipChange]:
        """Renew, then rebalance: what came and went. Redis errors propagate (the caller
        translates them); what is held here then lapses by this process's clock."""
        self._next_round = time.monotonic() + self._every_s
        changes: list[OwnershipChange] = []
        now = time.monotonic()
        lapsed = {s for s, held in self._held.items() if held.valid_until <= now}
        args: list[Any] = [self._member, self._instance, self._lease_ms]
        for stream in self._streams:
            held = self._held.get(stream)
            args += [stream, held.token if held else "", "1" if stream in lapsed else "0"]
        sent = time.monotonic()
        reply = await self._round(
            keys=[self._keys.members, self._keys.instances, self._keys.owners,
                  *(self._keys.lease(s) for s in self._streams)], args=args)
        self._rounds += 1
        if _text(reply[0]) == "dup":
            self._refuse_or_wait(float(reply[1]))
            return self._drop_all("lost", "name_in_use", "its name is in use by another process")
        self._rival_expiry = None
        members = [_text(m) for m in reply[2]]
        values = [_text(v) for v in reply[3]]
        for stream, value in zip(self._streams, values, strict=True):
            held = self._held.get(stream)
            if held is None:
                continue
            if stream in lapsed:
                del self._held[stream]
                changes.append(self._note(stream, "released", "lapsed",
                                          "its lease lapsed here (no renewal in time)"))
            elif value == held.token:
                held.valid_until = sent + self._valid_s
            else:
                del self._held[stream]
                owner = value.rsplit(":", 1)[0] if value else None
                changes.append(self._note(stream, "lost", "lease_expired",
                                          f"lease expired, now held by {owner}" if owner
                                          else "lease expired on the server"))
        share = quota(len(self._streams), members, self._member)
        mine = [s for s in self._streams if s in self._held]
        if len(mine) > share:
            changes += await self._let_go(mine[share:], "rebalanced",
                                          f"rebalanced: {len(members)} members, share {share}")
        elif len(mine) < share:
            free = [s for s, v in zip(self._streams, values, strict=True)
                    if not v and s not in self._held and s not in lapsed]
            if free:
                changes += await self._take(free[:share - len(mine)])
            if len(self._held) < share:
                # Others are still to let go of their extras: look again soon.
                self._next_round = time.monotonic() + self._every_s / 4
        return changes

    def _refuse_or_wait(self, expiry: float) -> None:
        """Another process uses this member name. A restarted member finds its own dead
        predecessor there until that one's lease runs out: wait for it; a name renewed
        meanwhile has a live user, and two members under one name is a config error."""
        if self._rival_expiry is not None and expiry > self._rival_expiry:
            setting = f"{self._group.upper()}_CONSUMER"  # the services' <GROUP>_CONSUMER
            raise TransportConfigError(
                f"{setting}: consumer name {self._member!r} is already in use by a live "
                f"member of group {self._group!r}; give every process its own name")
        if self._rival_expiry is None:
            log.warning("consumer name %r is held by another process of group %r; waiting "
                        "for it to expire (a restarted member's predecessor) or be renewed",
                        self._member, self._group)
        self._rival_expiry = expiry

    async def _take(self, streams: list[str]) -> list[OwnershipChange]:
        keys = [self._keys.owners]
        for stream in streams:
            keys += [self._keys.lease(stream), self._keys.fence(stream)]
        sent = time.monotonic()
        reply = await self._acquire(keys=keys, args=[self._member, self._lease_ms, *streams])
        changes = []
        for stream, (token, before) in zip(streams, reply, strict=True):
            if not token:
                continue
            self._held[stream] = _Held(_text(token), sent + self._valid_s)
            cause, reason = self._gain_reason(_text(before))
            changes.append(self._note(stream, "gained", cause, reason))
        return changes

    def _gain_reason(self, before: str) -> tuple[str, str]:
        state, _, who = before.partition("|")
        if state == "held":
            return "lease_expired", f"lease expired of {who}"
        if state == "closed":
            return "handed_over", f"handed over by {who}"
        if state == "rebalanced":
            return "rebalanced", f"rebalanced from {who}"
        if state == "lapsed":
            return "lapsed", f"let go by {who} after its lease lapsed"
        return "joined", "joined" if self._rounds <= 1 else "free"

    async def _let_go(self, streams: list[str], reason: str, sentence: str, *,
                      leave: bool = False) -> list[OwnershipChange]:
        args: list[Any] = [self._member, reason, "1" if leave else "0"]
        for stream in streams:
            args += [stream, self._held[stream].token]
        # Gone here before the script runs: a reply lost on the way changes nothing.
        changes = [self._note(s, "released", reason, sentence) for s in streams
                   if self._held.pop(s, None) is not None]
        await self._release(keys=[self._keys.members, self._keys.instances, self._keys.owners,
                                  *(self._keys.lease(s) for s in streams)], args=args)
        return changes

    async def hand_over(self) -> list[OwnershipChange]:
        """Release every lease and leave the group: the others take the streams at their
        next round."""
        self._next_round = math.inf
        streams = [s for s in self._streams if s in self._held]
        return await self._let_go(streams, "closed", "handed over (closing)", leave=True)

    def _drop_all(self, change: str, cause: str, sentence: str) -> list[OwnershipChange]:
        changes = [self._note(s, change, cause, sentence) for s in list(self._held)]
        self._held.clear()
        return changes

    def _note(self, stream: str, change: str, cause: str, reason: str) -> OwnershipChange:
        note = OwnershipChange(stream, change, cause, reason)
        self.changes[change, cause] += 1
        log.info("%s %s %s: %s", self._member, change, stream, reason)
        if self.listener is not None:
            self.listener(note)
        return note

    async def fenced_publish(self, sources: Sequence[str], streams: Sequence[str],
                             entries: Sequence[tuple[bytes, int | None, int | None]], *,
                             field: bytes) -> list[str]:
        """XADD to each ``streams[i]`` its ``entries[i]`` (payload under ``field``, MAXLEN,
        MINID) only if every source's lease still holds this member's token, in one script.
        Returns the sources found lost (then nothing was written)."""
        tokens = [self._held[s].token for s in sources]
        args: list[Any] = [field, len(sources), *tokens]
        for payload, maxlen, minid in entries:
            args += [payload, "" if maxlen is None else maxlen, "" if minid is None else minid]
        lost = await self._publish(keys=[*(self._keys.lease(s) for s in sources), *streams],
                                   args=args)
        gone = [sources[int(i) - 1] for i in lost]
        for stream in gone:
            self._held.pop(stream, None)
            self._note(stream, "lost", "fenced", "its lease is another's (found publishing)")
        return gone


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
