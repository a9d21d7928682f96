"""Integers past what the store holds, and headers that are not plain digits: 422, on SQLite
and PostgreSQL alike — never a 500, and never a 503 that sends a client into retries."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import orjson
import pytest
import websockets

MAX = 2**31 - 1
TOO_BIG = ("2147483648", str(2**63), str(2**64), "9" * 40, "9" * 5000)
NOT_DIGITS = ("²", "１", "-1", "1.0", "0x10", " 1", "1e3", "", "٣")


async def a_run(http: httpx.AsyncClient) -> str:
    resp = await http.post("/v1/runs", json={"agent": "echo", "input": {"message": "n"}})
    assert resp.status_code == 202, resp.text
    run_id = str(resp.json()["run_id"])
    async with http.stream("GET", f"/v1/runs/{run_id}/stream") as stream:
        await stream.aread()  # to its end: the run is finished
    return run_id


def assert_422(resp: httpx.Response, field: str) -> None:
    assert resp.status_code == 422, (resp.status_code, resp.text[:300])
    body = resp.json()
    assert body["error"]["code"] == "validation_error"
    assert [d["field"] for d in body["error"]["details"]] == [field], body


async def test_integer_query_parameters_past_the_stored_range_are_422(server) -> None:
    """events?after=, events?limit=, runs?limit=, stream?after= at 2^31 and beyond (and far
    beyond): 422 naming the parameter; the largest stored value itself is accepted."""
    async with server.client("numbers") as http:
        run_id = await a_run(http)
        for value in TOO_BIG:
            assert_422(await http.get(f"/v1/runs/{run_id}/events?after={value}"), "query.after")
            assert_422(await http.get(f"/v1/runs/{run_id}/stream?after={value}"), "query.after")
            assert_422(await http.get(f"/v1/runs?limit={value}"), "query.limit")
            assert_422(await http.get(f"/v1/runs/{run_id}/events?limit={value}"), "query.limit")
        resp = await http.get(f"/v1/runs/{run_id}/events?after={MAX}")
        assert resp.status_code == 200
        assert resp.json() == {"events": []}
        async with http.stream("GET", f"/v1/runs/{run_id}/stream?after={MAX}") as stream:
            assert stream.status_code == 200
            assert await stream.aread() == b""  # resumed past the end of a finished run
        for value in NOT_DIGITS:
            assert_422(await http.get(f"/v1/runs/{run_id}/events", params={"after": value}),
                       "query.after")  # fmt: skip


async def test_cursors_that_this_server_did_not_give_out_are_422(server) -> None:
    async with server.client("cursors") as http:
        for cursor in ("r" + "9" * 40, "r2147483648", "x1", "r0", "r-1", "r²", "cjE="):
            resp = await http.get("/v1/runs", params={"cursor": cursor})
            assert_422(resp, "query.cursor")
        assert (await http.get("/v1/runs", params={"cursor": "r999999999"})).status_code == 200


async def test_last_event_id_is_ascii_digits_in_range_else_422(server) -> None:
    """Last-Event-ID of 5,000 digits, past 2^31, or with a superscript or full-width digit."""
    async with server.client("lei") as http:
        run_id = await a_run(http)
        raw_values = [v.encode() for v in (*TOO_BIG, "１", "1 2", "-3", "3.0")]
        raw_values.append(b"\xb2")  # Latin-1 superscript two: str.isdigit() says yes
        for value in raw_values:
            resp = await http.get(f"/v1/runs/{run_id}/stream", headers={"Last-Event-ID": value})
            assert_422(resp, "header.Last-Event-ID")
        async with http.stream(
            "GET", f"/v1/runs/{run_id}/stream", headers={"Last-Event-ID": "3"}
        ) as stream:
            body = (await stream.aread()).decode()
        assert body.startswith("id: 4\n"), body[:80]


async def test_websocket_resume_after_out_of_range_is_an_error_and_the_socket_stays(
    server,
) -> None:
    async with server.client("wsnum") as http:
        run_id = await a_run(http)
    async with websockets.connect(server.ws_url, additional_headers=server.headers("wsnum")) as ws:
        assert orjson.loads(await ws.recv())["type"] == "ready"
        for after in (2**31, 2**63, 2**64, -1, 1.5, "3", True, None):
            # The standard library writes integers of any size (orjson stops at 64 bits).
            await ws.send(json.dumps({"type": "resume", "run_id": run_id, "after": after}))
            reply: dict[str, Any] = orjson.loads(await ws.recv())
            assert reply["type"] == "error", reply
            assert reply["code"] == "validation_error", reply
        await ws.send(b'{"type": "ping"}')
        assert orjson.loads(await ws.recv()) == {"type": "pong"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_close_during_a_long_replay_is_answered_at_once(server) -> None:
    """The client asks for a replay far larger than its socket buffers, reads nothing, then
    closes: the server answers the close handshake at once (its reader never waits on the
    replay) rather than after a timeout."""
    async with server.client("replayer") as http:
        resp = await http.post(
            "/v1/runs", json={"agent": "echo", "input": {"message": "x" * 8000, "steps": 100}}
        )
        run_id = resp.json()["run_id"]
        async with http.stream("GET", f"/v1/runs/{run_id}/stream") as stream:
            await stream.aread()
    ws = await websockets.connect(
        server.ws_url,
        additional_headers=server.headers("replayer"),
        max_size=2**24,
        max_queue=1,
    )
    assert orjson.loads(await ws.recv())["type"] == "ready"
    for _ in range(40):  # more than uvicorn queues before it stops reading; MBs of replay
        await ws.send(orjson.dumps({"type": "resume", "run_id": run_id, "after": 0}))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(ws.close(), 8)
    assert loop.time() - started < 5, "the close handshake waited for the replay"
    assert ws.close_code == 1000
