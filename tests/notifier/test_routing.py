"""Routing: which channels an alert goes to, field by field and in combination."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.config import Route
from notifier.routing import Router
from tests.support.notify import kind_alert, make_alert


def route(*channels: str, **fields: Any) -> Route:
    return Route(channels=list(channels), **fields)


def test_a_route_with_only_channels_takes_every_alert() -> None:
    router = Router([route("desk")])
    assert router.channels_for(make_alert()) == ("desk",)
    assert router.channels_for(make_alert("BTCUSDT", -0.1, rule="other", level=3)) == ("desk",)


def test_rules_name_the_rules_taken_and_no_rule_counts_as_default() -> None:
    router = Router([route("desk", rules=["default", "fast"])])
    assert router.channels_for(make_alert(rule="fast")) == ("desk",)
    assert router.channels_for(make_alert(rule="default")) == ("desk",)
    assert router.channels_for(make_alert(rule=None)) == ("desk",)
    assert router.channels_for(make_alert(rule="slow")) == ()
    only_slow = Router([route("desk", rules=["slow"])])
    assert only_slow.channels_for(make_alert(rule=None)) == ()


def test_directions() -> None:
    router = Router([route("up", directions=["up"]), route("down", directions=["down"])])
    assert router.channels_for(make_alert(change_pct=3.1)) == ("up",)
    assert router.channels_for(make_alert(change_pct=-3.1)) == ("down",)
    both = Router([route("desk", directions=["up", "down"])])
    assert both.channels_for(make_alert(change_pct=-3.1)) == ("desk",)


def test_min_change_pct_is_on_the_size_of_the_move_either_way() -> None:
    router = Router([route("desk", min_change_pct=3.0)])
    assert router.channels_for(make_alert(change_pct=3.0)) == ("desk",)
    assert router.channels_for(make_alert(change_pct=-4.2)) == ("desk",)
    assert router.channels_for(make_alert(change_pct=2.99)) == ()
    assert router.channels_for(make_alert(change_pct=-2.99)) == ()


def test_kinds_name_the_kinds_taken_and_every_kind_is_taken_by_default() -> None:
    router = Router([route("desk"), route("liq", kinds=["liquidation"]),
                     route("market", kinds=["funding", "volume"])])
    assert router.channels_for(make_alert("BTCUSDT")) == ("desk",)
    assert router.channels_for(kind_alert("liquidation")) == ("desk", "liq")
    assert router.channels_for(kind_alert("funding")) == ("desk", "market")
    assert router.channels_for(kind_alert("volume")) == ("desk", "market")
    only_price = Router([route("desk", kinds=["price"])])
    assert only_price.channels_for(make_alert()) == ("desk",)
    assert only_price.channels_for(kind_alert("liquidation")) == ()


def test_min_change_pct_is_on_price_alerts_only_and_min_level_on_every_kind() -> None:
    big_moves = Router([route("desk", min_change_pct=3.0)])
    assert big_moves.channels_for(make_alert(change_pct=2.5)) == ()
    # Another kind's change_pct is not the move it fired on: a small one does not hold it.
    for kind in ("liquidation", "funding", "volume"):
        alert = kind_alert(kind)
        assert abs(alert.change_pct) < 3.0
        assert big_moves.channels_for(alert) == ("desk",), kind
    escalations = Router([route("desk", min_level=2)])
    assert escalations.channels_for(kind_alert("liquidation")) == ()
    assert escalations.channels_for(kind_alert("liquidation", level=2)) == ("desk",)
    assert escalations.channels_for(kind_alert("funding")) == ()


def test_min_level_takes_escalations_only() -> None:
    router = Router([route("desk", min_level=2)])
    assert router.channels_for(make_alert(level=1)) == ()
    assert router.channels_for(make_alert(level=2)) == ("desk",)
    assert router.channels_for(make_alert(level=5)) == ("desk",)


def test_symbols_are_case_sensitive_allow_globs() -> None:
    router = Router([route("desk", symbols=["*USDT", "BTC?", "ETH[AB]*"])])
    assert router.channels_for(make_alert("SOLUSDT")) == ("desk",)
    assert router.channels_for(make_alert("BTCX")) == ("desk",)
    assert router.channels_for(make_alert("ETHBUSD")) == ("desk",)
    assert router.channels_for(make_alert("ETHCUSD")) == ()
    assert router.channels_for(make_alert("SOLUSDC")) == ()
    assert router.channels_for(make_alert("solusdt")) == ()


def test_deny_wins_over_symbols_and_applies_without_them() -> None:
    router = Router([route("desk", symbols=["*USDT"], deny=["BTC*", "ETHUSDT"])])
    assert router.channels_for(make_alert("SOLUSDT")) == ("desk",)
    assert router.channels_for(make_alert("BTCUSDT")) == ()
    assert router.channels_for(make_alert("ETHUSDT")) == ()
    everything_but = Router([route("desk", deny=["*BUSD"])])
    assert everything_but.channels_for(make_alert("SOLUSDT")) == ("desk",)
    assert everything_but.channels_for(make_alert("SOLBUSD")) == ()


def test_every_field_of_a_route_must_match() -> None:
    router = Router([route("desk", rules=["default"], directions=["up"], min_change_pct=3.0,
                           min_level=1, symbols=["*USDT"], deny=["BTCUSDT"])])
    good: dict[str, Any] = {"symbol": "SOLUSDT", "change_pct": 3.5, "rule": "default",
                            "level": 1}
    assert router.channels_for(make_alert(**good)) == ("desk",)
    for spoiled in ({"symbol": "BTCUSDT"}, {"symbol": "SOLBUSD"}, {"change_pct": -3.5},
                    {"change_pct": 2.5}, {"rule": "fast"}, {"level": 0}):
        assert router.channels_for(make_alert(**{**good, **spoiled})) == (), spoiled


def test_an_alert_matching_several_routes_goes_to_each_channel_once_in_order() -> None:
    router = Router([
        route("desk", "hooks"),
        route("phone", "desk", min_change_pct=5.0),
        route("hooks", "mail", directions=["down"]),
    ])
    assert router.channels_for(make_alert(change_pct=3.0)) == ("desk", "hooks")
    assert router.channels_for(make_alert(change_pct=6.0)) == ("desk", "hooks", "phone")
    assert router.channels_for(make_alert(change_pct=-6.0)) == ("desk", "hooks", "phone",
                                                                 "mail")


def test_the_order_can_be_the_channels_order_of_the_file() -> None:
    router = Router([route("hooks", "desk"), route("mail", "desk")],
                    order=["mail", "desk", "hooks", "unrouted"])
    assert router.channels_for(make_alert()) == ("mail", "desk", "hooks")


def test_a_channel_named_twice_in_one_route_is_sent_once() -> None:
    assert Router([route("desk", "desk")]).channels_for(make_alert()) == ("desk",)


def test_no_route_matching_gives_no_channel() -> None:
    assert Router([route("desk", min_level=2)]).channels_for(make_alert()) == ()
    assert Router([]).channels_for(make_alert()) == ()


def test_a_symbol_verdict_is_remembered_but_the_other_fields_are_checked_per_alert() -> None:
    router = Router([route("desk", symbols=["SOL*"], min_change_pct=3.0)])
    assert router.channels_for(make_alert("SOLUSDT", 2.0)) == ()
    assert router.channels_for(make_alert("SOLUSDT", 3.5)) == ("desk",)
    assert router.channels_for(make_alert("BTCUSDT", 3.5)) == ()


_symbols = st.text(alphabet="ABCSTU01_.-", min_size=1, max_size=8)
_globs = st.text(alphabet="ABCSTU01_.-*?[]!", min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(symbol=_symbols, allow=st.none() | st.lists(_globs, min_size=1, max_size=4),
       deny=st.lists(_globs, max_size=3))
def test_the_compiled_globs_agree_with_fnmatchcase(symbol: str, allow: list[str] | None,
                                                    deny: list[str]) -> None:
    expected = (not any(fnmatchcase(symbol, p) for p in deny)
                and (allow is None or any(fnmatchcase(symbol, p) for p in allow)))
    router = Router([route("desk", symbols=allow, deny=deny)])
    assert router.channels_for(make_alert(symbol)) == (("desk",) if expected else ())
