"""The client against a real gateway: publish and publish_many, sync and asyncio, errors, and
tokens a gateway accepts."""

import asyncio
import json

import pytest
import websockets

from herald_client import AsyncHerald, Herald, HeraldError, Result, make_token

from conftest import API_KEY, SECRET, history


def test_publish_and_publish_many(gateway):
    with Herald(gateway, api_key=API_KEY) as herald:
        herald.publish("feed.sync", {"n": 1})
        results = herald.publish_many([("feed.sync", {"n": 2}), {"group": "feed.sync", "data": {"n": 3}}])
    assert results == [Result(True), Result(True)]
    assert history(gateway, "feed.sync") == [{"n": 1}, {"n": 2}, {"n": 3}]



def test_refused_messages_fail_alone_and_refused_requests_raise(gateway):
    with Herald(gateway, api_key=API_KEY) as herald:
        results = herald.publish_many([("feed.partly", 1), ("not valid", 2), ("feed.partly", 3)])
        assert [r.ok for r in results] == [True, False, True]
        assert results[1].code == "invalid_group"
        with pytest.raises(HeraldError) as refused:
            herald.publish("no spaces allowed", 1)
        assert (refused.value.status, refused.value.code) == (400, "invalid_group")
    assert history(gateway, "feed.partly") == [1, 3]
    with Herald(gateway, api_key="wrong") as herald:
        with pytest.raises(HeraldError) as refused:
            herald.publish("feed.x", 1)
        assert refused.value.status == 401
    with Herald("http://127.0.0.1:1") as nowhere:
        with pytest.raises(HeraldError) as refused:
            nowhere.publish("feed.x", 1)
        assert (refused.value.status, refused.value.code) == (0, "unavailable")


def test_asyncio(gateway):
    async def run():
        async with AsyncHerald(gateway, api_key=API_KEY) as herald:
            await herald.publish("feed.async", "a")
            results = await herald.publish_many([("feed.async", "b"), ("feed.async", "c")])
            assert all(r.ok for r in results)
            with pytest.raises(HeraldError):
                await herald.publish("bad group", 1)

    asyncio.run(run())
    assert history(gateway, "feed.async") == ["a", "b", "c"]


def test_tokens_are_accepted_and_their_claims_enforced(gateway):
    token = make_token(SECRET, sub="ann", groups=["feed.*"], publish=[], info={"name": "Ann"}, ttl=60)

    async def run():
        ws_url = gateway.replace("http://", "ws://") + f"/ws?token={token}"
        async with websockets.connect(ws_url) as ws:
            assert json.loads(await ws.recv())["type"] == "welcome"
            await ws.send(json.dumps({"type": "subscribe", "group": "feed.tokens", "id": 1}))
            assert json.loads(await ws.recv())["type"] == "reply"
            await ws.send(json.dumps({"type": "subscribe", "group": "secret.room", "id": 2}))
            assert json.loads(await ws.recv())["code"] == "forbidden"
        forged = make_token("another-secret-of-32-bytes-length", sub="ann")
        async with websockets.connect(gateway.replace("http://", "ws://") + f"/ws?token={forged}") as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd.code == 4001

    asyncio.run(run())
    with pytest.raises(ValueError):
        make_token(SECRET, ttl=0)
