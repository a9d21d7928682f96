"""Several processes on PostgreSQL + Redis: isolation, limits, cancellation and faults."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections import defaultdict
from typing import Any

import httpx
import orjson
import pytest
import websockets

from support import ServerProcess, check_run_events
from support_cluster import Cluster, user

pytestmark = pytest.mark.slow
TERMINAL = {"agent_completed", "agent_error", "agent_cancelled"}


async def wait_finished(client: httpx.AsyncClient, run_id: str, timeout: float = 45) -> dict:
    """Poll the run until it is finished (bounded)."""
    async with asyncio.timeout(timeout):
        while True:
            run = (await client.get(f"/v1/runs/{run_id}")).json()
            if run["status"] not in ("queued", "running"):
                return run
            await asyncio.sleep(0.1)


async def stored_events(client: httpx.AsyncClient, run_id: str) -> list[dict]:
    resp = await client.get(f"/v1/runs/{run_id}/events", params={"limit": 10000})
    assert resp.status_code == 200, resp.text
    return resp.json()["events"]


class Socket:
    """A WebSocket client that keeps every frame and can resume after a drop."""

    def __init__(self, node: ServerProcess, token: str) -> None:
        self.node = node
        self.token = token
        self.raw: list[bytes] = []
        self.events: dict[str, dict[int, dict]] = defaultdict(dict)
        self.ws: Any = None

    async def open(self) -> None:
        self.ws = await websockets.connect(self.node.ws_url)
        await self.ws.send(orjson.dumps({"type": "auth", "token": self.token}))
        ready = orjson.loads(await self.ws.recv())
        assert ready["type"] == "ready", ready

    async def read_until(self, run_ids: set[str], timeout: float = 60) -> None:
        """Read until every run in ``run_ids`` has its terminal event; resume after drops."""
        async with asyncio.timeout(timeout):
            while not all(self._finished(r) for r in run_ids):
                try:
                    frame = await self.ws.recv()
                except websockets.ConnectionClosed:
                    await self.open()
                    for run_id in run_ids:
                        have = self.events[run_id]
                        after = max(
                            (s for s in have if all(i in have for i in range(1, s))), default=0
                        )
                        await self.ws.send(
                            orjson.dumps({"type": "resume", "run_id": run_id, "after": after})
                        )
                    continue
                raw = frame.encode() if isinstance(frame, str) else frame
                self.raw.append(raw)
                doc = orjson.loads(raw)
                if "seq" in doc:
                    self.events[doc["run_id"]].setdefault(doc["seq"], doc)

    def _finished(self, run_id: str) -> bool:
        return any(e["type"] in TERMINAL for e in self.events[run_id].values())

    def run_events(self, run_id: str) -> list[dict]:
        have = self.events[run_id]
        return [have[s] for s in sorted(have)]

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


async def test_two_nodes_two_workers_fifty_users_isolated_and_complete(cluster: Cluster) -> None:
    """50 users, a socket on each of 2 API nodes, runs started through both nodes (HTTP and
    WebSocket), executed by 2 workers: no foreign byte, every run complete and in order."""
    a, b = await asyncio.gather(
        cluster.add_node("--no-executor"), cluster.add_node("--no-executor")
    )
    await asyncio.gather(cluster.add_worker(), cluster.add_worker())
    users = [user("iso") for _ in range(50)]
    canary = {u: uuid.uuid4().hex for u in users}
    sockets = {u: (Socket(a, cluster.token(u)), Socket(b, cluster.token(u))) for u in users}
    await asyncio.gather(*(s.open() for pair in sockets.values() for s in pair))

    async def start(u: str) -> set[str]:
        msg = {"message": f"secret {canary[u]}", "steps": 3, "delay_ms": 20}
        async with cluster.client(a, u) as http:
            first = (await http.post("/v1/runs", json={"agent": "echo", "input": msg})).json()
        ws = sockets[u][1].ws
        await ws.send(
            orjson.dumps({"type": "start_run", "agent": "echo", "input": msg, "client_ref": "r2"})
        )
        return {first["run_id"]}

    firsts = await asyncio.gather(*(start(u) for u in users))
    runs_of = {u: set(f) for u, f in zip(users, firsts, strict=True)}
    # The WebSocket-started run id arrives as run_accepted on node B's socket; read it there.
    for u in users:
        sock = sockets[u][1]
        async with asyncio.timeout(30):
            while True:
                doc = orjson.loads(await sock.ws.recv())
                if doc["type"] == "run_accepted":
                    runs_of[u].add(doc["run"]["run_id"])
                    break
                if "seq" in doc:
                    sock.events[doc["run_id"]].setdefault(doc["seq"], doc)
    await asyncio.gather(*(s.read_until(runs_of[u]) for u in users for s in sockets[u]))
    for u in users:
        foreign = [canary[o].encode() for o in users if o != u]
        for sock in sockets[u]:
            assert set(sock.events) <= runs_of[u], "a foreign run reached this socket"
            for raw in sock.raw:
                assert not any(f in raw for f in foreign), "a foreign canary reached this socket"
            for run_id in runs_of[u]:
                events = sock.run_events(run_id)
                check_run_events(events)
                assert events[-1]["type"] == "agent_completed"
                assert len(events) == 1 + 3 * 3 + 1
    await asyncio.gather(*(s.close() for pair in sockets.values() for s in pair))


async def test_per_user_limit_holds_across_the_cluster(cluster: Cluster) -> None:
    """With a limit of 2, six runs sent through two nodes never overlap more than two."""
    env = {"CORRAL_MAX_RUNNING_PER_USER": "2"}
    a, b = await asyncio.gather(cluster.add_node(**env), cluster.add_node(**env))
    await cluster.add_worker(**env)
    u = user("lim")
    ids = []
    for i in range(6):
        async with cluster.client(a if i % 2 else b, u) as http:
            resp = await http.post(
                "/v1/runs",
                json={"agent": "echo", "input": {"message": "x", "steps": 3, "delay_ms": 60}},
            )
            assert resp.status_code == 202
            ids.append(resp.json()["run_id"])
    spans = []
    async with cluster.client(a, u) as http:
        for run_id in ids:
            run = await wait_finished(http, run_id)
            assert run["status"] == "succeeded", run
            spans.append((run["started_at"], run["finished_at"]))
    points = sorted([(s, 1) for s, _ in spans] + [(f, -1) for _, f in spans])
    level = peak = 0
    for _ts, step in points:
        level += step
        peak = max(peak, level)
    assert peak <= 2
    assert peak == 2, "the runs should have used both slots"


async def test_cancel_reaches_the_run_through_another_node(cluster: Cluster) -> None:
    """A run started on node A and running on some worker is cancelled through node B; a
    queued run cancelled through B ends with agent_cancelled as its only event."""
    env = {"CORRAL_MAX_RUNNING_PER_USER": "1"}
    a, b = await asyncio.gather(
        cluster.add_node("--no-executor", **env), cluster.add_node("--no-executor", **env)
    )
    await cluster.add_worker(**env)
    u = user("cxl")
    async with cluster.client(a, u) as ha, cluster.client(b, u) as hb:
        body = {"agent": "echo", "input": {"message": "m", "steps": 100, "delay_ms": 100}}
        running = (await ha.post("/v1/runs", json=body)).json()
        queued = (await ha.post("/v1/runs", json=body)).json()
        async with asyncio.timeout(30):
            while (await ha.get(f"/v1/runs/{running['run_id']}")).json()["status"] != "running":
                await asyncio.sleep(0.05)
        resp = await hb.post(f"/v1/runs/{queued['run_id']}/cancel")
        assert resp.status_code == 202
        assert (await stored_events(hb, queued["run_id"]))[0]["type"] == "agent_cancelled"
        assert len(await stored_events(hb, queued["run_id"])) == 1
        resp = await hb.post(f"/v1/runs/{running['run_id']}/cancel")
        assert resp.status_code == 202
        run = await wait_finished(ha, running["run_id"], timeout=15)
        assert run["status"] == "cancelled"
        events = await stored_events(ha, running["run_id"])
        check_run_events(events)
        assert events[-1]["type"] == "agent_cancelled"


async def test_killed_worker_runs_end_interrupted_and_nothing_is_lost(cluster: Cluster) -> None:
    """kill -9 of a worker mid-run: its runs become failed/interrupted within 30 s with a
    terminal event, the other worker's runs succeed, stored events stay contiguous."""
    node = await cluster.add_node("--no-executor")
    w1 = await cluster.add_worker(CORRAL_LEASE_S="3")
    users = [user("k9") for _ in range(6)]
    ids = {}
    for u in users:
        async with cluster.client(node, u) as http:
            ids[u] = (
                await http.post(
                    "/v1/runs",
                    json={
                        "agent": "echo",
                        "input": {"message": "k", "steps": 100, "delay_ms": 100},
                    },
                )
            ).json()["run_id"]
    async with cluster.client(node, users[0]) as http:
        async with asyncio.timeout(30):
            while (await http.get(f"/v1/runs/{ids[users[0]]}")).json()["last_seq"] < 3:
                await asyncio.sleep(0.05)
    w1.kill()
    await cluster.add_worker()
    loop = asyncio.get_running_loop()
    killed_at = loop.time()
    for u in users:
        async with cluster.client(node, u) as http:
            run = await wait_finished(http, ids[u], timeout=40)
            assert loop.time() - killed_at < 30
            assert run["status"] == "failed"
            assert run["error"]["type"] == "interrupted"
            events = await stored_events(http, ids[u])
            check_run_events(events)
            assert run["last_seq"] == events[-1]["seq"]


async def test_paused_worker_cannot_append_after_losing_its_lease(cluster: Cluster) -> None:
    """SIGSTOP past the lease: the run is reaped as interrupted; after SIGCONT the old worker
    is fenced — not one more event of that run is stored."""
    node = await cluster.add_node("--no-executor", CORRAL_LEASE_S="2")
    worker = await cluster.add_worker(CORRAL_LEASE_S="2")
    u = user("stop")
    async with cluster.client(node, u) as http:
        run_id = (
            await http.post(
                "/v1/runs",
                json={"agent": "echo", "input": {"message": "p", "steps": 100, "delay_ms": 100}},
            )
        ).json()["run_id"]
        async with asyncio.timeout(30):
            while (await http.get(f"/v1/runs/{run_id}")).json()["last_seq"] < 5:
                await asyncio.sleep(0.05)
        os.kill(worker.proc.pid, signal.SIGSTOP)
        try:
            run = await wait_finished(http, run_id, timeout=30)
        finally:
            os.kill(worker.proc.pid, signal.SIGCONT)
        assert run["status"] == "failed"
        assert run["error"]["type"] == "interrupted"
        reaped = await stored_events(http, run_id)
        # The resumed worker notices (a write refused or a lease renewal lost) ...
        await asyncio.to_thread(worker.output.wait_for, "lease", 30)
        # ... and whatever it had in flight was refused: the stored run is unchanged.
        assert await stored_events(http, run_id) == reaped
        check_run_events(reaped)
        assert reaped[-1]["data"]["error"]["type"] == "interrupted"


async def test_redis_restart_under_load_loses_no_stored_event(cluster: Cluster) -> None:
    """Redis restarted while runs stream: nodes and workers reconnect on their own, sockets
    resume, every run completes, and the stored events are complete."""
    node = await cluster.add_node()
    await cluster.add_worker()
    users = [user("rr") for _ in range(8)]
    sockets = {u: Socket(node, cluster.token(u)) for u in users}
    await asyncio.gather(*(s.open() for s in sockets.values()))
    ids = {}
    for u in users:
        async with cluster.client(node, u) as http:
            ids[u] = (
                await http.post(
                    "/v1/runs",
                    json={"agent": "echo", "input": {"message": "r", "steps": 40, "delay_ms": 50}},
                )
            ).json()["run_id"]
    readers = [asyncio.create_task(sockets[u].read_until({ids[u]}, timeout=90)) for u in users]
    async with cluster.client(node, users[0]) as http:
        async with asyncio.timeout(30):
            while (await http.get(f"/v1/runs/{ids[users[0]]}")).json()["last_seq"] < 5:
                await asyncio.sleep(0.05)
    cluster.redis.stop()
    cluster.redis.start()
    await asyncio.gather(*readers)
    for u in users:
        async with cluster.client(node, u) as http:
            run = await wait_finished(http, ids[u])
            assert run["status"] == "succeeded", run
            stored = await stored_events(http, ids[u])
            check_run_events(stored)
            assert sockets[u].run_events(ids[u]) == stored
    async with httpx.AsyncClient(base_url=node.url) as http:
        assert (await http.get("/readyz")).status_code == 200
    await asyncio.gather(*(s.close() for s in sockets.values()))


async def test_postgres_unreachable_gives_503_and_recovers(cluster: Cluster) -> None:
    """PostgreSQL cut off: /readyz 503 and new runs 503 unavailable, nothing half-written;
    back again: ready and runs succeed, without restarting corral."""
    from sqlalchemy.engine import make_url

    from support_cluster import TcpProxy

    real = make_url(cluster.database_url)
    proxy = TcpProxy(real.host or "127.0.0.1", real.port or 5432)
    await proxy.start()
    proxied = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    cluster.database_url = proxied
    node = await cluster.add_node()
    u = user("pg")
    body = {"agent": "echo", "input": {"message": "pg", "steps": 2}}
    async with cluster.client(node, u) as http:
        before = (await http.post("/v1/runs", json=body)).json()
        await wait_finished(http, before["run_id"])
        await proxy.cut()
        assert (await http.get("/readyz")).status_code == 503
        resp = await http.post("/v1/runs", json=body)
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "unavailable"
        await proxy.start()
        async with asyncio.timeout(30):
            while (await http.get("/readyz")).status_code != 200:
                await asyncio.sleep(0.1)
        runs = (await http.get("/v1/runs")).json()["runs"]
        assert [r["run_id"] for r in runs] == [before["run_id"]], "a refused run was stored"
        after = (await http.post("/v1/runs", json=body)).json()
        assert (await wait_finished(http, after["run_id"]))["status"] == "succeeded"
    await proxy.cut()
