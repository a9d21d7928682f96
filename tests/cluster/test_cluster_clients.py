"""Clients across a cluster (PostgreSQL + Redis, API nodes and a worker as processes): a
``client_ref`` names one start on every node, an AG-UI ``threadId`` one thread, and a Python
client's session on one node gets the runs started through another, whole."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import websockets

from corral.client import AsyncClient
from support import check_run_events
from support_agui import post_agui, run_input
from support_cluster import Cluster, user

pytestmark = pytest.mark.slow
TERMINAL = {"agent_completed", "agent_error", "agent_cancelled"}


async def accepted(url: str, token: str, message: dict[str, Any]) -> dict[str, Any]:
    """Send ``message`` (a start_run) on a new socket to ``url``; its run_accepted or error."""
    async with websockets.connect(url) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": token}))
        assert orjson.loads(await ws.recv())["type"] == "ready"
        await ws.send(orjson.dumps(message))
        while True:
            doc: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), 20))
            if doc["type"] in ("run_accepted", "error"):
                return doc


async def test_one_client_ref_is_one_start_on_every_node(cluster: Cluster) -> None:
    """The same start_run (one client_ref) sent to two API nodes at once, then again to each,
    then as POST /v1/runs with that Idempotency-Key: one run, executed once by the worker."""
    a, b = await asyncio.gather(
        cluster.add_node("--no-executor"), cluster.add_node("--no-executor")
    )
    await cluster.add_worker()
    name = user("ref")
    token = cluster.token(name)
    start = {
        "type": "start_run",
        "agent": "echo",
        "input": {"message": "once", "steps": 2},
        "client_ref": "cluster-ref",
    }
    answers = await asyncio.gather(
        accepted(a.ws_url, token, start),
        accepted(b.ws_url, token, start),
        accepted(a.ws_url, token, start),
        accepted(b.ws_url, token, start),
    )
    assert {doc["type"] for doc in answers} == {"run_accepted"}, answers
    run_ids = {doc["run"]["run_id"] for doc in answers}
    assert len(run_ids) == 1
    (run_id,) = run_ids
    async with cluster.client(b, name) as http:
        body = {"agent": "echo", "input": {"message": "once", "steps": 2}}
        again = await http.post("/v1/runs", json=body, headers={"Idempotency-Key": "cluster-ref"})
        assert (again.status_code, again.json()["run_id"]) == (200, run_id)
        async with asyncio.timeout(45):
            while (await http.get(f"/v1/runs/{run_id}")).json()["status"] != "succeeded":
                await asyncio.sleep(0.1)  # polling another process's stored state
        assert [r["run_id"] for r in (await http.get("/v1/runs")).json()["runs"]] == [run_id]
        events = (await http.get(f"/v1/runs/{run_id}/events")).json()["events"]
    check_run_events(events)
    assert [e["type"] for e in events].count("agent_started") == 1


async def test_an_ag_ui_thread_id_is_one_thread_on_every_node(cluster: Cluster) -> None:
    """The first use of a threadId, at once on two nodes, makes one thread; later runs on
    either node continue it."""
    a, b = await asyncio.gather(cluster.add_node(), cluster.add_node("--no-executor"))
    name = user("agui")
    async with cluster.client(a, name) as on_a, cluster.client(b, name) as on_b:
        body = run_input("hello", thread_id="one-thread")
        first = await asyncio.gather(post_agui(on_a, "echo", body), post_agui(on_b, "echo", body))
        later = await post_agui(on_b, "echo", run_input("again", thread_id="one-thread"))
        threads = {
            events[0].event["metadata"]["corral"]["thread_id"]
            for _status, events, _error in [*first, later]
        }
        assert len(threads) == 1
        assert [e[-1].event["type"] for _s, e, _r in [*first, later]] == ["RUN_FINISHED"] * 3


async def test_a_session_on_one_node_gets_runs_started_through_another(cluster: Cluster) -> None:
    """A corral.client session on node B; runs started with AsyncClient on node A and with
    session.start_run on B, executed by a worker: each arrives whole, once."""
    a, b = await asyncio.gather(
        cluster.add_node("--no-executor"), cluster.add_node("--no-executor")
    )
    await cluster.add_worker()
    token = cluster.token(user("sess"))
    async with (
        AsyncClient(a.url, token=token) as on_a,
        AsyncClient(b.url, token=token) as on_b,
        on_b.session() as session,
    ):
        runs = {
            (await on_a.start_run("echo", {"message": f"a{n}", "steps": 3}))["run_id"]
            for n in range(3)
        }
        runs.add((await session.start_run("echo", {"message": "b", "steps": 3}))["run_id"])
        got: dict[str, list[dict[str, Any]]] = {}
        async with asyncio.timeout(60):
            while not all(r in got and got[r][-1]["type"] in TERMINAL for r in runs):
                event = dict(await anext(session))
                got.setdefault(event["run_id"], []).append(event)
        assert set(got) == runs
        for run_id, events in got.items():
            check_run_events(events)
            assert events == [dict(e) for e in await on_a.events(run_id)]
