"""peers: corral next to LangGraph's own server, loaded the same way in one run.

LangGraph: ``langgraph dev`` (the in-memory runtime of LangGraph Platform) serving the
deterministic graph of ../shared/peers/lg_app (four custom events and a 20 ms wait per run),
with ``--n-jobs-per-worker 10`` (its best setting here, see ../shared/peers/README.md). corral:
``corral serve`` with the ``peer`` agent of ``peer_agent.py`` — the same four events and the
same 20 ms wait. Both are loaded by one client (httpx, the same code path): U closed-loop users,
each starting a run and streaming it to its end over HTTP, again and again — LangGraph with
``POST /threads/{id}/runs/stream``; corral with ``POST /v1/runs/stream`` when the server has it,
else ``POST /v1/runs`` then ``GET /v1/runs/{id}/stream`` (the table says which). Measured:
runs/s, first-agent-event latency (request sent → first agent event) and completion latency,
p50/p99, server CPU. LangGraph lives in a venv of its own, made once under
``~/.cache/corral-bench/langgraph`` (pip; a few minutes the first time).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from harness import (
    BENCH,
    HOST,
    Child,
    CpuMeter,
    Result,
    Target,
    console,
    corral_serve,
    fmt,
    free_port,
    median,
    new_secret,
    percentile,
    running,
    table,
    token,
    workdir,
)

PEERS = BENCH.parent.parent / "shared" / "peers"
LG_HOME = Path(os.environ.get("CORRAL_BENCH_CACHE", Path.home() / ".cache" / "corral-bench"))
LG_VENV = LG_HOME / "langgraph"
LG_PACKAGES = ("langgraph-cli[inmem]", "langgraph", "httpx")
# From ../shared/peers/lg_app/env.sh: keep the LangGraph CLI and server offline.
LG_ENV = {
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    "LANGGRAPH_NO_VERSION_CHECK": "true",
    "LANGSMITH_TRACING": "false",
    "LANGCHAIN_TRACING_V2": "false",
    "LANGSMITH_API_KEY": "",
    "LANGCHAIN_API_KEY": "",
    "OTEL_ENABLED": "false",
    "LANGGRAPH_METRICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}
AGENT_EVENTS = 4


# -- the servers --------------------------------------------------------------------------------


def ensure_langgraph() -> Path:
    """The ``langgraph`` executable of the cached venv; made (pip) when missing."""
    exe = LG_VENV / "bin" / "langgraph"
    if exe.exists():
        return exe
    console.print(f"peers: installing LangGraph into {LG_VENV} (once; a few minutes)…")
    LG_HOME.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(LG_VENV)], check=True)
    subprocess.run(
        [str(LG_VENV / "bin" / "pip"), "install", "-q", *LG_PACKAGES], check=True, timeout=1800
    )
    return exe


def langgraph_server(work: Path) -> Child:
    exe = ensure_langgraph()
    app = work / "lg_app"
    shutil.copytree(PEERS / "lg_app", app)
    port = free_port()
    log_path = work / "langgraph.log"
    log = log_path.open("wb")
    argv = [str(exe), "dev", "--no-browser", "--no-reload", "--host", HOST, "--port", str(port)]
    argv += ["--n-jobs-per-worker", "10"]
    proc = subprocess.Popen(
        argv,
        cwd=app,
        env={**os.environ, **LG_ENV},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    child = Child("langgraph", proc, log_path, port)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if httpx.get(f"http://{HOST}:{port}/ok", timeout=1).status_code == 200:
                return child
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    child.stop()
    raise RuntimeError(f"langgraph dev did not start:\n{child.log_tail()}")


# -- one client for both ------------------------------------------------------------------------


async def sse(resp: httpx.Response) -> Any:
    """(event, data) of each Server-Sent Event of ``resp``."""
    event, data = None, []
    async for line in resp.aiter_lines():
        if line == "":
            if event is not None or data:
                yield event or "message", "\n".join(data)
            event, data = None, []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


class Peer:
    """How one server starts and streams a run; ``run`` returns (first event s, done s)."""

    name = ""
    mode = ""

    async def prepare(self, http: httpx.AsyncClient, user: str) -> Any:
        return None

    async def run(
        self, http: httpx.AsyncClient, user: str, state: Any, n: int
    ) -> tuple[float, float]:
        raise NotImplementedError


class LangGraphPeer(Peer):
    name = "langgraph"
    mode = "POST /threads/{id}/runs/stream (stream_mode=custom)"

    async def prepare(self, http: httpx.AsyncClient, user: str) -> Any:
        resp = await http.post("/threads", json={"metadata": {"user": user}})
        resp.raise_for_status()
        return resp.json()["thread_id"]

    async def run(
        self, http: httpx.AsyncClient, user: str, state: Any, n: int
    ) -> tuple[float, float]:
        body = {
            "assistant_id": "agent",
            "input": {"user": user, "run_no": n},
            "stream_mode": "custom",
        }
        t0 = time.perf_counter()
        first = None
        seen = 0
        async with http.stream("POST", f"/threads/{state}/runs/stream", json=body) as resp:
            resp.raise_for_status()
            async for event, data in sse(resp):
                if event == "custom":
                    doc = orjson.loads(data)
                    if doc.get("seq") != seen or doc.get("user") != user:
                        raise RuntimeError(f"langgraph: unexpected event {doc}")
                    seen += 1
                    if first is None:
                        first = time.perf_counter() - t0
                elif event == "error":
                    raise RuntimeError(f"langgraph: {data}")
        if seen != AGENT_EVENTS or first is None:
            raise RuntimeError(f"langgraph: {seen} custom events")
        return first, time.perf_counter() - t0


class CorralPeer(Peer):
    name = "corral"

    def __init__(self, secret: str, one_request: bool) -> None:
        self.secret = secret
        self.one_request = one_request
        self.mode = (
            "POST /v1/runs/stream"
            if one_request
            else "POST /v1/runs, then GET /v1/runs/{id}/stream"
        )

    async def prepare(self, http: httpx.AsyncClient, user: str) -> Any:
        return {"Authorization": f"Bearer {token(self.secret, user)}"}

    async def run(
        self, http: httpx.AsyncClient, user: str, state: Any, n: int
    ) -> tuple[float, float]:
        body = {"agent": "peer", "input": {"user": user, "run_no": n}}
        t0 = time.perf_counter()
        if self.one_request:
            request = http.stream("POST", "/v1/runs/stream", json=body, headers=state)
        else:
            resp = await http.post("/v1/runs", json=body, headers=state)
            resp.raise_for_status()
            run_id = resp.json()["run_id"]
            request = http.stream("GET", f"/v1/runs/{run_id}/stream", headers=state)
        first = None
        seen = 0
        terminal = None
        async with request as stream:
            stream.raise_for_status()
            async for event, data in sse(stream):
                if event == "agent_update":
                    doc = orjson.loads(data)["data"]
                    if doc.get("seq") != seen or doc.get("user") != user:
                        raise RuntimeError(f"corral: unexpected event {doc}")
                    seen += 1
                    if first is None:
                        first = time.perf_counter() - t0
                elif event in ("agent_completed", "agent_error", "agent_cancelled"):
                    terminal = event
        if seen != AGENT_EVENTS or terminal != "agent_completed" or first is None:
            raise RuntimeError(f"corral: {seen} updates, ended {terminal}")
        return first, time.perf_counter() - t0


async def closed_loop(
    peer: Peer, url: str, *, users: int, duration_s: float, warmup_s: float, pid: int, tag: str
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=users * 2, max_keepalive_connections=users * 2)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        names = [f"{tag}-{i}" for i in range(users)]
        states = await asyncio.gather(*(peer.prepare(http, u) for u in names))
        loop = asyncio.get_running_loop()
        measuring = loop.time() + warmup_s
        stop = measuring + duration_s
        firsts: list[float] = []
        dones: list[float] = []
        errors: list[str] = []
        meter = CpuMeter([pid])

        async def user(name: str, state: Any) -> None:
            n = 0
            while loop.time() < stop:
                n += 1
                counted = loop.time() >= measuring
                try:
                    first, done = await peer.run(http, name, state, n)
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    continue
                if counted and loop.time() <= stop:
                    firsts.append(first)
                    dones.append(done)

        async def start_meter() -> None:
            await asyncio.sleep(warmup_s)
            meter.start()

        await asyncio.gather(
            start_meter(), *(user(u, s) for u, s in zip(names, states, strict=True))
        )
        meter.stop()
    return {
        "runs": len(dones),
        "runs_per_s": round(len(dones) / duration_s, 1),
        "first_event_p50_ms": _ms(percentile(firsts, 50)),
        "first_event_p99_ms": _ms(percentile(firsts, 99)),
        "complete_p50_ms": _ms(percentile(dones, 50)),
        "complete_p99_ms": _ms(percentile(dones, 99)),
        "errors": len(errors),
        "error_sample": errors[:3],
        **meter.as_dict(),
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


async def _has_start_and_stream(url: str, secret: str) -> bool:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        resp = await http.post(
            "/v1/runs/stream",
            json={"agent": "no-such-agent", "input": {}},
            headers={"Authorization": f"Bearer {token(secret, 'probe')}"},
        )
    return (
        resp.status_code == 404
        and resp.json().get("error", {}).get("code") == "not_found"
        and ("agent" in resp.json()["error"]["message"])
    )


async def main(args: argparse.Namespace) -> Result:
    users = args.users or (10 if args.quick else 50)
    duration = args.duration or (3.0 if args.quick else 10.0)
    reps = args.reps or (1 if args.quick else 3)
    warmup = 1.0 if args.quick else 3.0
    secret = new_secret()
    result = Result(
        "peers", {"users": users, "duration_s": duration, "repetitions": reps, "warmup_s": warmup}
    )
    with workdir(args.keep) as work:
        lg = await asyncio.to_thread(langgraph_server, work)
        corral = await asyncio.to_thread(
            corral_serve,
            secret,
            work,
            extra_args=["--agents", "peer_agent"],
            env={"PYTHONPATH": str(BENCH)},
        )
        with running(corral, lg):
            corral_url = f"http://{HOST}:{corral.port}"
            peers: list[tuple[Peer, Child, str]] = [
                (
                    CorralPeer(secret, await _has_start_and_stream(corral_url, secret)),
                    corral,
                    corral_url,
                ),
                (LangGraphPeer(), lg, f"http://{HOST}:{lg.port}"),
            ]
            for rep in range(reps):
                for peer, child, url in peers:
                    row = await closed_loop(
                        peer,
                        url,
                        users=users,
                        duration_s=duration,
                        warmup_s=warmup,
                        pid=child.pid,
                        tag=f"u{rep}",
                    )
                    row.update(server=peer.name, mode=peer.mode, rep=rep + 1)
                    result.rows.append(row)
                    console.print(
                        f"  {peer.name} rep {rep + 1}: {row['runs_per_s']} runs/s, first event "
                        f"p50 {row['first_event_p50_ms']} ms, errors {row['errors']}"
                    )
    _summarize(result)
    return result


def _summarize(result: Result) -> None:
    keys = (
        "runs_per_s",
        "first_event_p50_ms",
        "first_event_p99_ms",
        "complete_p50_ms",
        "complete_p99_ms",
        "server_cpu_pct",
        "errors",
    )
    summary: dict[str, Any] = {}
    for name in ("corral", "langgraph"):
        rows = [r for r in result.rows if r["server"] == name]
        summary[name] = {k: median([r.get(k) for r in rows]) for k in keys}
        summary[name]["mode"] = rows[0]["mode"] if rows else ""
    c, lg = summary["corral"], summary["langgraph"]
    ratio = (
        round(c["runs_per_s"] / lg["runs_per_s"], 2)
        if c["runs_per_s"] and lg["runs_per_s"]
        else None
    )
    summary["corral_over_langgraph_runs_per_s"] = ratio
    result.summary = summary
    result.targets = [
        Target("peers: corral / LangGraph runs/s (HTTP start + stream)", ratio, 5, "×", True),
        Target(
            "peers: corral / LangGraph first-event p50",
            _ratio(c["first_event_p50_ms"], lg["first_event_p50_ms"]),
            1,
            "×",
            False,
        ),
        Target(
            "peers: corral / LangGraph first-event p99",
            _ratio(c["first_event_p99_ms"], lg["first_event_p99_ms"]),
            1,
            "×",
            False,
        ),
    ]
    table(
        f"peers — medians of {result.params['repetitions']} repetition(s), "
        f"{result.params['users']} users, {result.params['duration_s']:g} s each",
        (
            "server",
            "runs/s",
            "first p50 ms",
            "first p99 ms",
            "done p50 ms",
            "done p99 ms",
            "server CPU %",
            "errors",
        ),
        [(name, *(fmt(summary[name][k]) for k in keys)) for name in ("corral", "langgraph")],
    )
    console.print(f"  corral: {c['mode']}; langgraph: {lg['mode']}")


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)
