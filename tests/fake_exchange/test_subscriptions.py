"""Live subscriptions and the exchange's limits on a connection, over real sockets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from fake_exchange.subscriptions import MAX_STREAMS, canonical
from tests.support.exchange import ExchangeControl, trade_exchange


async def _reply(ws: ClientConnection, request: Any) -> Any:
    """Send one request and return its answer (trades in between are skipped)."""
    await ws.send(request if isinstance(request, str) else json.dumps(request))
    async with asyncio.timeout(3):
        while True:
            msg = json.loads(await ws.recv())
            if "result" in msg or "error" in msg:
                return msg


async def _read_until_closed(ws: ClientConnection) -> tuple[int, ConnectionClosed]:
    """How many messages came before the connection closed, and how it closed."""
    answered = 0
    try:
        async with asyncio.timeout(3):
            while True:
                await ws.recv()
                answered += 1
    except ConnectionClosed as exc:
        return answered, exc
    raise AssertionError("unreachable")


def test_stream_names_are_canonical_in_their_event_part() -> None:
    assert canonical("btcusdt@aggtrade") == "btcusdt@aggTrade"
    assert canonical("btcusdt@AGGTRADE") == "btcusdt@aggTrade"
    assert canonical("!forceorder@arr") == "!forceOrder@arr"
    assert canonical("!markprice@arr@1s") == "!markPrice@arr@1s"
    assert canonical("btcusdt@depth") == "btcusdt@depth"
    assert canonical("not a stream") == "not a stream"


async def test_subscribe_unsubscribe_and_list_as_the_exchange_answers() -> None:
    async with trade_exchange(4, trades_per_s=200) as fx, \
            connect(f"{fx.ws_base_url}/stream") as ws:
        assert await _reply(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1}) == \
            {"result": [], "id": 1}
        sub = {"method": "SUBSCRIBE", "params": ["sym001usdt@aggtrade", "!forceOrder@arr"],
               "id": 2}
        assert await _reply(ws, sub) == {"result": None, "id": 2}
        async with asyncio.timeout(3):
            while (msg := json.loads(await ws.recv())).get("stream") != "sym001usdt@aggTrade":
                pass
        assert msg["data"]["s"] == "SYM001USDT"
        assert await _reply(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 3}) == \
            {"result": ["sym001usdt@aggTrade", "!forceOrder@arr"], "id": 3}
        unsub = {"method": "UNSUBSCRIBE", "params": ["sym001usdt@aggTrade"], "id": 4}
        assert await _reply(ws, unsub) == {"result": None, "id": 4}
        assert await _reply(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 5}) == \
            {"result": ["!forceOrder@arr"], "id": 5}
        await asyncio.sleep(0.1)  # what was in flight before the unsubscribe
        while True:
            try:
                async with asyncio.timeout(0.3):
                    await ws.recv()
            except TimeoutError:
                break
        assert await _reply(ws, {"method": "GET_PROPERTY", "params": ["combined"], "id": 6}) \
            == {"result": True, "id": 6}
        async with ExchangeControl(fx.rest_url) as control:
            conn = (await control.stats()).connections[0]
        assert (conn.subscribe_messages, conn.unsubscribe_messages, conn.streams) == (1, 1, 1)
        assert conn.max_messages_per_s <= 6


@pytest.mark.parametrize(("request_", "code", "rid"), [
    ("{not json", 3, None),
    ({"method": "SUBSCRIBE", "params": ["x@aggTrade"]}, 2, None),
    ({"method": "SUBSCRIBE", "params": ["x@aggTrade"], "id": -1}, 2, -1),
    ({"method": "SUBSCRIBE", "params": ["x@aggTrade"], "id": "7"}, 2, "7"),
    ({"method": "SUBSCRIB", "params": [], "id": 8}, 2, 8),
    ({"method": "SUBSCRIBE", "params": "x@aggTrade", "id": 9}, 2, 9),
    ({"method": "UNSUBSCRIBE", "params": [1, 2], "id": 10}, 2, 10),
    ({"params": [], "id": 11}, 2, 11),
    ([1, 2], 2, None),
])
async def test_bad_requests_get_the_exchange_errors(request_: Any, code: int,
                                                   rid: object) -> None:
    async with trade_exchange(2) as fx, connect(f"{fx.ws_base_url}/ws") as ws:
        answer = await _reply(ws, request_)
        assert set(answer) == {"error", "id"}
        assert answer["id"] == rid
        assert answer["error"]["code"] == code
        assert isinstance(answer["error"]["msg"], str)
        assert answer["error"]["msg"]
        # The connection stays usable.
        assert await _reply(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1}) == \
            {"result": [], "id": 1}


async def test_the_eleventh_message_within_a_second_closes_the_connection() -> None:
    async with trade_exchange(2) as fx, ExchangeControl(fx.rest_url) as control:
        async with connect(f"{fx.ws_base_url}/ws") as calm:
            for k in range(10):
                await calm.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": k}))
            replies = [json.loads(await calm.recv()) for _ in range(10)]
            assert [r["id"] for r in replies] == list(range(10))
            await asyncio.sleep(1.05)
            assert await _reply(calm, {"method": "LIST_SUBSCRIPTIONS", "id": 99}) == \
                {"result": [], "id": 99}
        stats = await control.stats()
        assert (stats.max_messages_per_s, stats.rate_violations) == (10, 0)
        async with connect(f"{fx.ws_base_url}/ws") as eager:
            for k in range(11):
                await eager.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": k}))
            answered, closed = await _read_until_closed(eager)
        assert answered == 10  # the 11th is never answered
        assert closed.rcvd is not None
        assert closed.rcvd.code == 1008
        stats = await control.stats()
        assert stats.rate_violations == 1
        assert stats.max_messages_per_s == 11
        assert [c.violations for c in stats.connections] == [0, 1]
        assert stats.connections[1].closed_for == "too many messages"
        assert not stats.connections[1].open


async def test_at_most_1024_streams_per_connection() -> None:
    async with trade_exchange(2) as fx:
        names = [f"s{i}usdt@aggTrade" for i in range(MAX_STREAMS)]
        async with connect(f"{fx.ws_base_url}/stream") as ws:
            for k, start in enumerate(range(0, MAX_STREAMS, 400)):
                batch = {"method": "SUBSCRIBE", "params": names[start:start + 400], "id": k}
                assert await _reply(ws, batch) == {"result": None, "id": k}
            extra = {"method": "SUBSCRIBE", "params": ["one@aggTrade"], "id": 9}
            assert (await _reply(ws, extra))["error"]["code"] == 2
            listed = await _reply(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 10})
            assert len(listed["result"]) == MAX_STREAMS
        too_many = "/".join(f"{i}@t" for i in range(MAX_STREAMS + 1))  # short: a URL is short
        with pytest.raises(InvalidStatus) as err:
            async with connect(f"{fx.ws_base_url}/stream?streams={too_many}"):
                pass
        assert err.value.response.status_code == 400
        async with httpx.AsyncClient() as http:
            r = await http.get(f"{fx.rest_url}/control/stats")
        assert r.json()["rejected_handshakes"] == 1
