"""The admin API's side of the gateway tests: the token the tests' gateways take, its
header, and a rules stream seeded as a detector seeds it."""

from __future__ import annotations

import time

from common.bus import Record
from common.bus.redis_streams import RedisTransport
from common.partitioning import RULES_STREAM
from common.rule_model import Rule
from common.schemas import RuleSet, encode_rule_set

TOKEN = "s3cret-admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def seed(bus: RedisTransport, *rules: Rule, version: int = 1) -> None:
    """What a detector writes on an empty stream."""
    rule_set = RuleSet(rules=list(rules) or [Rule()], updated_at_ms=int(time.time() * 1000),
                       updated_by="detector detector-1", version=version, change="seeded")
    await bus.publish([Record(RULES_STREAM, "rules", encode_rule_set(rule_set))])
