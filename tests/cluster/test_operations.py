"""Operations in a real cluster: a trace across API node → PostgreSQL/Redis → worker, and the
log lines an operator relies on (membership, lease losses, outages logged once)."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time

import pytest

from support import Output, ServerProcess
from support_cluster import Cluster, TcpProxy, user
from support_otlp import ReceivedSpan, otel_env, otlp_receiver

pytestmark = pytest.mark.slow


async def wait_finished(cluster: Cluster, node: ServerProcess, u: str, run_id: str) -> dict:
    async with cluster.client(node, u) as http, asyncio.timeout(45):
        while True:
            run = (await http.get(f"/v1/runs/{run_id}")).json()
            if run["status"] not in ("queued", "running"):
                return dict(run)
            await asyncio.sleep(0.1)


def worker_id_of(worker: ServerProcess) -> str:
    """From the worker's machine-readable line: ``corral worker <id> ready``."""
    line = next(ln for ln in worker.output.lines if ln.startswith("corral worker "))
    return line.split()[2]


def count(output: Output, text: str) -> int:
    return sum(text in line for line in list(output.lines))


async def test_the_callers_trace_continues_on_the_worker_of_another_node(
    cluster: Cluster,
) -> None:
    """2 API nodes + 2 workers, each its own service: runs started on either node with the
    caller's traceparent get their corral.run and tool spans from a worker process, children of
    the API node's HTTP span, in the caller's trace."""
    async with otlp_receiver() as (otlp, endpoint):
        nodes = [
            await cluster.add_node("--no-executor", **otel_env(endpoint, f"api-{i}"))
            for i in range(2)
        ]
        for i in range(2):
            await cluster.add_worker(**otel_env(endpoint, f"worker-{i}"))
        started: dict[str, tuple[str, str, int]] = {}  # run_id -> (trace id, caller span, node)
        for i in range(6):
            trace_id, caller = secrets.token_hex(16), secrets.token_hex(8)
            u = user("tr")
            async with cluster.client(nodes[i % 2], u) as http:
                resp = await http.post(
                    "/v1/runs",
                    json={"agent": "echo", "input": {"message": "t", "steps": 2, "delay_ms": 20}},
                    headers={"traceparent": f"00-{trace_id}-{caller}-01"},
                )
                assert resp.status_code == 202, resp.text
            run_id = resp.json()["run_id"]
            started[run_id] = (trace_id, caller, i % 2)
            assert (await wait_finished(cluster, nodes[i % 2], u, run_id))["status"] == "succeeded"

        def complete(spans: list[ReceivedSpan]) -> bool:
            runs = {s.attributes.get("corral.run_id") for s in spans if s.name == "corral.run"}
            tools = [s for s in spans if s.name == "corral.tool"]
            return runs >= set(started) and len(tools) >= 2 * len(started)

        spans = await otlp.wait_for(complete, timeout=60)
    by_id = {s.span_id: s for s in spans}
    workers_used = set()
    for run_id, (trace_id, caller, node) in started.items():
        (run_span,) = [
            s for s in spans if s.name == "corral.run" and s.attributes["corral.run_id"] == run_id
        ]
        assert run_span.trace_id == trace_id
        assert run_span.service.startswith("worker-"), run_span.service
        workers_used.add(run_span.service)
        http_span = by_id[run_span.parent_span_id]
        assert http_span.name == "POST /v1/runs"
        assert http_span.service == f"api-{node}"
        assert (http_span.trace_id, http_span.parent_span_id) == (trace_id, caller)
        tools = [s for s in spans if s.name == "corral.tool" and s.trace_id == trace_id]
        assert len(tools) == 2
        assert all(t.parent_span_id == run_span.span_id for t in tools)
        assert all(t.service == run_span.service for t in tools)
    assert workers_used  # which workers took the runs is the cluster's choice


async def test_membership_and_a_lost_lease_are_logged_on_the_nodes(cluster: Cluster) -> None:
    """A node logs each worker joining and leaving; a worker stalled past its lease is named
    in a "lease lost" line with the run it held, by the node that reaped it."""
    node = await cluster.add_node("--no-executor", CORRAL_LEASE_S="2")
    worker = await cluster.add_worker(CORRAL_LEASE_S="2")
    worker_id = worker_id_of(worker)
    await asyncio.to_thread(node.output.wait_for, f"worker {worker_id} joined", 30)
    other = await cluster.add_worker(CORRAL_LEASE_S="2")
    other_id = worker_id_of(other)
    await asyncio.to_thread(node.output.wait_for, f"worker {other_id} joined", 30)
    assert other.terminate() == 0
    await asyncio.to_thread(node.output.wait_for, f"worker {other_id} left", 30)

    u = user("lease")
    async with cluster.client(node, u) as http:
        run_id = (
            await http.post(
                "/v1/runs",
                json={"agent": "echo", "input": {"message": "l", "steps": 100, "delay_ms": 100}},
            )
        ).json()["run_id"]
        async with asyncio.timeout(30):
            while (await http.get(f"/v1/runs/{run_id}")).json()["last_seq"] < 3:
                await asyncio.sleep(0.05)
    os.kill(worker.proc.pid, signal.SIGSTOP)
    try:
        run = await wait_finished(cluster, node, u, run_id)
        line = await asyncio.to_thread(node.output.wait_for, "lease lost", 30)
    finally:
        os.kill(worker.proc.pid, signal.SIGCONT)
    assert run["error"]["type"] == "interrupted"
    assert worker_id in line
    assert f"run_id={run_id}" in line
    assert f"user_id={u}" in line


async def test_a_redis_outage_is_logged_once_and_its_end_once(cluster: Cluster) -> None:
    """Redis down for a few seconds: each process logs one warning (not one per retry), and
    one line when it is back."""
    node = await cluster.add_node()
    worker = await cluster.add_worker()
    cluster.redis.stop()
    await asyncio.to_thread(node.output.wait_for, "Redis is unreachable", 30)
    await asyncio.to_thread(worker.output.wait_for, "Redis is unreachable", 30)
    # The readers retry every ~2 s at most: stay down long enough for several retries.
    until = time.monotonic() + 5
    async with cluster.client(node, user("r")) as http:
        while time.monotonic() < until:
            assert (await http.get("/readyz")).status_code == 503
            await asyncio.sleep(0.25)
    cluster.redis.start()
    await asyncio.to_thread(node.output.wait_for, "Redis is reachable again", 30)
    await asyncio.to_thread(worker.output.wait_for, "Redis is reachable again", 30)
    for proc in (node, worker):
        assert count(proc.output, "Redis is unreachable") == 1, proc.output.lines
        assert count(proc.output, "Redis is reachable again") == 1


async def test_a_postgres_outage_is_logged_once_and_its_end_once(cluster: Cluster) -> None:
    """PostgreSQL cut off while requests keep coming: one warning, then one "reachable again"
    line with how long it lasted — whatever the number of failed statements in between."""
    from sqlalchemy.engine import make_url

    real = make_url(cluster.database_url)
    proxy = TcpProxy(real.host or "127.0.0.1", real.port or 5432)
    await proxy.start()
    cluster.database_url = real.set(host="127.0.0.1", port=proxy.port).render_as_string(
        hide_password=False
    )
    node = await cluster.add_node()
    u = user("pg")
    try:
        async with cluster.client(node, u) as http:
            await proxy.cut()
            for _ in range(10):  # many failing requests, and the worker's claims fail too
                assert (await http.get("/v1/runs")).status_code == 503
            await asyncio.to_thread(node.output.wait_for, "PostgreSQL is unreachable", 30)
            await proxy.start()
            await asyncio.to_thread(node.output.wait_for, "PostgreSQL is reachable again", 30)
            assert (await http.get("/v1/runs")).status_code == 200
    finally:
        await proxy.cut()
    assert count(node.output, "PostgreSQL is unreachable") == 1, node.output.lines
    assert count(node.output, "PostgreSQL is reachable again") == 1
