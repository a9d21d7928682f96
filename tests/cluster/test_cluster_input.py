"""Human in the loop and threads on a real cluster: API nodes and workers as processes on
PostgreSQL and a private Redis. The answer reaches the worker that runs the agent whichever
node received it; a waiting run holds no slot anywhere; a dead worker's waiting run ends
interrupted."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets

from support import check_run_events
from support_cluster import Cluster, user

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parents[1]
TIMEOUT = 40.0


def agents_env(**extra: str) -> dict[str, str]:
    """Every process serves the built-in agents and tests/hitl_agents.py."""
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    return {"CORRAL_AGENTS": "corral.agents,hitl_agents", "PYTHONPATH": path, **extra}


async def start(http: httpx.AsyncClient, agent: str, input: dict[str, Any], **body: Any) -> str:
    resp = await http.post("/v1/runs", json={"agent": agent, "input": input, **body})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["run_id"])


async def wait_status(http: httpx.AsyncClient, run_id: str, *statuses: str) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT):
        while True:
            run = (await http.get(f"/v1/runs/{run_id}")).json()
            if run["status"] in statuses:
                return dict(run)
            await asyncio.sleep(0.05)


async def finished(http: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    return await wait_status(http, run_id, "succeeded", "failed", "cancelled", "timed_out")


async def question(http: httpx.AsyncClient, run_id: str, nth: int = 1) -> str:
    """The request id of the run's ``nth`` input_requested (polled: another process asks)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            events = (await http.get(f"/v1/runs/{run_id}/events")).json()["events"]
            asked = [e for e in events if e["type"] == "input_requested"]
            if len(asked) >= nth:
                return str(asked[nth - 1]["data"]["request_id"])
            await asyncio.sleep(0.05)


async def answer(http: httpx.AsyncClient, run_id: str, request_id: str, value: Any) -> int:
    resp = await http.post(
        f"/v1/runs/{run_id}/input", json={"request_id": request_id, "value": value}
    )
    return resp.status_code


async def test_an_answer_sent_to_another_node_reaches_the_worker_running_the_agent(
    cluster: Cluster,
) -> None:
    """Two API-only nodes and one worker: a run started on node A asks; the answer over HTTP
    to node B, then over a WebSocket on node B, reaches the worker; the run completes."""
    env = agents_env(CORRAL_LEASE_S="90")  # renewals every 30 s: the hint is what is timed
    a, b = await asyncio.gather(
        cluster.add_node("--no-executor", **env), cluster.add_node("--no-executor", **env)
    )
    await cluster.add_worker(**env)
    u = user("hitl")
    async with cluster.client(a, u) as on_a, cluster.client(b, u) as on_b:
        run_id = await start(on_a, "asker", {"questions": 2})
        first = await question(on_a, run_id)
        assert (await on_b.get(f"/v1/runs/{run_id}")).json()["status"] == "waiting"
        loop = asyncio.get_running_loop()
        sent_at = loop.time()
        assert await answer(on_b, run_id, first, "over http to B") == 202
        second = await question(on_a, run_id, nth=2)
        # The control channel carried the hint: a lease renewal would take up to 30 s.
        assert loop.time() - sent_at < 5.0
        async with websockets.connect(
            b.ws_url, additional_headers={"Authorization": f"Bearer {cluster.token(u)}"}
        ) as ws:
            assert orjson.loads(await ws.recv())["type"] == "ready"
            message = {"type": "send_input", "run_id": run_id, "request_id": second}
            await ws.send(orjson.dumps({**message, "value": "over the socket on B"}))
            async with asyncio.timeout(TIMEOUT):
                while True:
                    doc = orjson.loads(await ws.recv())
                    assert doc["type"] != "error", doc
                    if doc.get("run_id") == run_id and doc["type"] == "agent_completed":
                        break
        run = await finished(on_a, run_id)
        assert run["status"] == "succeeded", run
        assert run["output"] == {"answers": ["over http to B", "over the socket on B"]}
        events = (await on_b.get(f"/v1/runs/{run_id}/events")).json()["events"]
        check_run_events(events)
        assert [e["type"] for e in events].count("input_received") == 2


async def test_waiting_runs_hold_no_slot_across_the_cluster(cluster: Cluster) -> None:
    """MAX_RUNNING_PER_USER=1 and a worker of capacity 1: while alice's run waits, her next run
    on another thread executes (and a run of another user too), her run on the waiting run's
    thread stays queued; answered, the waiting run resumes first, then the queued one runs."""
    env = agents_env(CORRAL_MAX_RUNNING_PER_USER="1", CORRAL_MAX_RUNNING_TOTAL="1")
    node = await cluster.add_node("--no-executor", **env)
    await cluster.add_worker(**env)
    alice, bob = user("al"), user("bo")
    async with cluster.client(node, alice) as http, cluster.client(node, bob) as other:
        asking = await start(http, "asker", {})
        request_id = await question(http, asking)
        await wait_status(http, asking, "waiting")
        thread_id = (await http.get(f"/v1/runs/{asking}")).json()["thread_id"]
        behind = await start(http, "echo", {"message": "behind"}, thread_id=thread_id)
        elsewhere = await start(http, "echo", {"message": "elsewhere", "steps": 2})
        assert (await finished(http, elsewhere))["status"] == "succeeded"
        bobs = await start(other, "echo", {"message": "bob"})
        assert (await finished(other, bobs))["status"] == "succeeded"
        assert (await http.get(f"/v1/runs/{behind}")).json()["status"] == "queued"
        assert await answer(http, asking, request_id, "go") == 202
        first = await finished(http, asking)
        after = await finished(http, behind)
        assert (first["status"], after["status"]) == ("succeeded", "succeeded")
        assert after["started_at"] >= first["finished_at"]


async def test_a_worker_killed_while_its_run_waits_leaves_it_interrupted(cluster: Cluster) -> None:
    """kill -9 of the worker whose run waits: its lease lapses, the run ends failed with
    agent_error interrupted, and an answer afterwards is 409."""
    node = await cluster.add_node("--no-executor", **agents_env(CORRAL_LEASE_S="2"))
    worker = await cluster.add_worker(**agents_env(CORRAL_LEASE_S="2"))
    u = user("k9w")
    async with cluster.client(node, u) as http:
        run_id = await start(http, "asker", {})
        request_id = await question(http, run_id)
        await wait_status(http, run_id, "waiting")
        # Waiting outlives several leases while the worker lives: its lease is renewed.
        await asyncio.sleep(4.5)  # the scenario: more than two lease periods pass
        assert (await http.get(f"/v1/runs/{run_id}")).json()["status"] == "waiting"
        worker.kill()
        run = await finished(http, run_id)
        assert run["status"] == "failed", run
        assert run["error"]["type"] == "interrupted"
        events = (await http.get(f"/v1/runs/{run_id}/events")).json()["events"]
        check_run_events(events)
        assert [e["type"] for e in events][-2:] == ["input_requested", "agent_error"]
        assert await answer(http, run_id, request_id, "too late") == 409


async def test_cancel_and_timeout_of_a_waiting_run_through_another_node(cluster: Cluster) -> None:
    """A waiting run cancelled through the node that did not start it ends cancelled; one
    left unanswered ends with input_timeout."""
    env = agents_env()
    a, b = await asyncio.gather(
        cluster.add_node("--no-executor", **env), cluster.add_node("--no-executor", **env)
    )
    await cluster.add_worker(**env)
    u = user("cx")
    async with cluster.client(a, u) as on_a, cluster.client(b, u) as on_b:
        waiting = await start(on_a, "asker", {})
        await question(on_a, waiting)
        await wait_status(on_a, waiting, "waiting")
        resp = await on_b.post(f"/v1/runs/{waiting}/cancel")
        assert resp.status_code == 202
        run = await finished(on_a, waiting)
        assert run["status"] == "cancelled", run
        timing = await start(on_a, "asker", {"timeout_s": 0.5})
        run = await finished(on_b, timing)
        assert run["error"]["type"] == "input_timeout", run


async def test_thread_state_and_delete_across_nodes(cluster: Cluster) -> None:
    """State saved by a worker is read by the next run and shown by any node; deleting the
    thread through node B while its run waits cancels it and removes everything."""
    env = agents_env()
    a, b = await asyncio.gather(
        cluster.add_node("--no-executor", **env), cluster.add_node("--no-executor", **env)
    )
    await cluster.add_worker(**env)
    u = user("st")
    async with cluster.client(a, u) as on_a, cluster.client(b, u) as on_b:
        thread = (await on_a.post("/v1/threads", json={"title": "t"})).json()
        tid = thread["thread_id"]
        for item in ("x", "y"):
            run = await finished(on_a, await start(on_a, "stateful", {"add": item}, thread_id=tid))
            assert run["status"] == "succeeded"
        assert (await on_b.get(f"/v1/threads/{tid}")).json()["state"] == {"items": ["x", "y"]}
        waiting = await start(on_a, "asker", {}, thread_id=tid)
        await wait_status(on_a, waiting, "waiting")
        resp = await on_b.delete(f"/v1/threads/{tid}")
        assert resp.status_code == 204, resp.text
        assert (await on_a.get(f"/v1/runs/{waiting}")).status_code == 404
        assert (await on_a.get(f"/v1/threads/{tid}")).status_code == 404
        assert (await on_a.get("/v1/threads")).json()["threads"] == []
