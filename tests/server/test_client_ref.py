"""``client_ref`` on a WebSocket ``start_run`` is an idempotency key (contract §5): one key space
per user with HTTP's ``Idempotency-Key``; a refused ``start_run`` never creates a run."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import websockets

from conftest import LiveServer
from support_ws import Raw, recv, recv_type, socket_of, start

TIMEOUT = 10.0
protocol_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def runs_of(server: LiveServer, user: str) -> list[dict[str, Any]]:
    async with server.client(user) as http:
        response = await http.get("/v1/runs", params={"limit": 200})
        assert response.status_code == 200
        runs: list[dict[str, Any]] = response.json()["runs"]
        return runs


def user() -> str:
    return f"ref-{uuid.uuid4().hex[:8]}"


async def test_a_repeated_start_run_with_one_client_ref_starts_one_run(server: LiveServer) -> None:
    """The same start_run (same client_ref) three times, also on a second socket: one run; each
    answer is run_accepted with that client_ref and the first run."""
    alice = user()
    async with socket_of(server, alice) as ws:
        await ws.send(start("one-start"))
        first = await recv_type(ws, "run_accepted")
        await ws.send(start("one-start"))
        again = await recv_type(ws, "run_accepted")
    async with socket_of(server, alice) as other:
        await other.send(start("one-start"))
        third = await recv_type(other, "run_accepted")
    assert first["client_ref"] == again["client_ref"] == third["client_ref"] == "one-start"
    assert first["run"]["run_id"] == again["run"]["run_id"] == third["run"]["run_id"]
    assert [r["run_id"] for r in await runs_of(server, alice)] == [first["run"]["run_id"]]


async def test_client_ref_and_idempotency_key_are_one_key_space(server: LiveServer) -> None:
    """A start over the socket retried over HTTP with Idempotency-Key = client_ref (and the
    other way round) is one start: the HTTP retry answers 200 with the socket's run."""
    alice = user()
    async with socket_of(server, alice) as ws, server.client(alice) as http:
        await ws.send(start("shared-key"))
        accepted = await recv_type(ws, "run_accepted")
        body = {"agent": "echo", "input": {"message": "hello", "steps": 1}}
        retried = await http.post("/v1/runs", json=body, headers={"Idempotency-Key": "shared-key"})
        assert retried.status_code == 200, retried.text
        assert retried.json()["run_id"] == accepted["run"]["run_id"]

        made = await http.post("/v1/runs", json=body, headers={"Idempotency-Key": "http-first"})
        assert made.status_code == 202
        await ws.send(start("http-first"))
        replay = await recv_type(ws, "run_accepted")
        assert replay["run"]["run_id"] == made.json()["run_id"]
    assert len(await runs_of(server, alice)) == 2


async def test_one_client_ref_with_another_start_is_a_conflict_and_starts_nothing(
    server: LiveServer,
) -> None:
    """The same client_ref with a different input: error conflict echoing the client_ref; the
    socket stays usable and no second run exists."""
    alice = user()
    async with socket_of(server, alice) as ws:
        await ws.send(start("reused", "first input"))
        first = await recv_type(ws, "run_accepted")
        await ws.send(start("reused", "another input"))
        error = await recv_type(ws, "error")
        assert (error["code"], error["client_ref"]) == ("conflict", "reused")
        await ws.send(b'{"type": "ping"}')
        assert (await recv_type(ws, "pong"))["type"] == "pong"
    assert [r["run_id"] for r in await runs_of(server, alice)] == [first["run"]["run_id"]]


async def test_client_refs_are_per_user(server: LiveServer) -> None:
    """Two users with the same client_ref (and input) get two runs, each their own."""
    alice, bob = user(), user()
    async with socket_of(server, alice) as a, socket_of(server, bob) as b:
        await a.send(start("same"))
        await b.send(start("same"))
        run_a = (await recv_type(a, "run_accepted"))["run"]["run_id"]
        run_b = (await recv_type(b, "run_accepted"))["run"]["run_id"]
    assert run_a != run_b
    assert [r["run_id"] for r in await runs_of(server, alice)] == [run_a]
    assert [r["run_id"] for r in await runs_of(server, bob)] == [run_b]


def nested(depth: int) -> Raw:
    return Raw("[" * depth + '"x"' + "]" * depth)


@protocol_only
@pytest.mark.parametrize(
    "ref",
    [
        pytest.param(nested(300), id="nested-300-deep"),
        pytest.param({"a": 1}, id="object"),
        pytest.param(7, id="number"),
        pytest.param(True, id="bool"),
        pytest.param("", id="empty"),
        pytest.param("r" * 129, id="129-characters"),
        pytest.param("bad\nref", id="control-character"),
        pytest.param("nul\x00", id="nul"),
    ],
)
async def test_a_bad_client_ref_is_a_validation_error_and_creates_no_run(
    server: LiveServer, ref: Any
) -> None:
    """A client_ref that is not a string of 1-128 characters without control characters is
    refused with validation_error naming client_ref (issue 11: a deeply nested one used to start
    the run and answer unavailable); nothing is created and the socket stays usable."""
    alice = user()
    async with socket_of(server, alice) as ws:
        await ws.send(start(ref))
        error = await recv(ws)
        assert (error["type"], error["code"]) == ("error", "validation_error"), error
        assert error["details"][0]["field"] == "client_ref"
        assert "client_ref" not in error  # a bad one is never echoed back
        await ws.send(start(f"good-{uuid.uuid4().hex}"))
        assert (await recv(ws))["type"] == "run_accepted"
    assert len(await runs_of(server, alice)) == 1


@protocol_only
async def test_a_start_run_without_client_ref_or_with_null_starts_each_time(
    server: LiveServer,
) -> None:
    """No client_ref (or null) is no key: two starts, two runs; run_accepted says null."""
    alice = user()
    async with socket_of(server, alice) as ws:
        await ws.send(start(...))
        first = await recv_type(ws, "run_accepted")
        await ws.send(start(None))
        second = await recv_type(ws, "run_accepted")
    assert first["client_ref"] is None
    assert second["client_ref"] is None
    assert first["run"]["run_id"] != second["run"]["run_id"]


async def test_a_start_run_retried_after_its_socket_dropped_starts_one_run(
    server: LiveServer,
) -> None:
    """A start_run whose socket is cut before run_accepted is read — the server had already
    stored the run — sent again on a new socket gets the same run: one run."""
    alice = user()
    ref = f"dropped-{uuid.uuid4().hex}"
    headers = {"Authorization": f"Bearer {server.token(alice)}"}
    ws = await websockets.connect(server.ws_url, additional_headers=headers)
    assert (await recv(ws))["type"] == "ready"
    await ws.send(start(ref, "through a drop", steps=3))
    async with asyncio.timeout(TIMEOUT):
        while not await runs_of(server, alice):
            await asyncio.sleep(0.01)  # polling the server's stored state for the first start
    ws.transport.abort()  # the answer is lost with the connection
    async with socket_of(server, alice) as again:
        await again.send(start(ref, "through a drop", steps=3))
        accepted = await recv_type(again, "run_accepted")
    runs = await runs_of(server, alice)
    assert [r["run_id"] for r in runs] == [accepted["run"]["run_id"]]


@protocol_only
async def test_a_start_run_whose_socket_closes_at_once_runs_or_was_never_stored(
    server: LiveServer,
) -> None:
    """start_run, then the socket is aborted at once, thirty times — the handler is cancelled
    somewhere in the start — then each start is sent again with its client_ref: thirty runs,
    and every one runs to its end (none is left stored as queued with no queue knowing it)."""
    alice = user()
    headers = {"Authorization": f"Bearer {server.token(alice)}"}
    refs = [f"abort-{n}-{uuid.uuid4().hex}" for n in range(30)]
    for ref in refs:
        ws = await websockets.connect(server.ws_url, additional_headers=headers)
        assert (await recv(ws))["type"] == "ready"
        await ws.send(start(ref))
        ws.transport.abort()
    async with socket_of(server, alice) as ws:
        for ref in refs:
            await ws.send(start(ref))
            assert (await recv_type(ws, "run_accepted"))["client_ref"] == ref
    runs: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(20):
            while True:
                runs = await runs_of(server, alice)
                if all(r["status"] == "succeeded" for r in runs):
                    break
                await asyncio.sleep(0.05)  # polling the server's stored state
    except TimeoutError:
        stuck = [r["run_id"] for r in runs if r["status"] != "succeeded"]
        raise AssertionError(f"runs that never ran: {stuck}") from None
    assert len(runs) == len(refs)
