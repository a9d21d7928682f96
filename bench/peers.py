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
from wire import HttpClient

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


class Peer:
    """How one server starts and streams a run over one kept-alive connection (the lean client
    of wire.py, so that the client's CPU does not cap what is measured); ``run`` returns
    (first agent event s, done s)."""

    name = ""
    mode = ""

    async def prepare(self, http: HttpClient, user: str) -> Any:
        return None

    async def run(self, http: HttpClient, user: str, state: Any, n: int) -> tuple[float, float]:
        raise NotImplementedError


class _Collector:
    """Checks a run's four agent events as they arrive, in order, for the right user."""

    def __init__(self, who: str, user: str, t0: float) -> None:
        self.who, self.user, self.t0 = who, user, t0
        self.seen = 0
        self.first: float | None = None
        self.terminal: str | None = None

    def agent_event(self, doc: dict[str, Any]) -> None:
        if doc.get("seq") != self.seen or doc.get("user") != self.user:
            raise RuntimeError(f"{self.who}: unexpected event {doc}")
        self.seen += 1
        if self.first is None:
            self.first = time.perf_counter() - self.t0

    def check(self) -> tuple[float, float]:
        if self.seen != AGENT_EVENTS or self.first is None:
            raise RuntimeError(f"{self.who}: {self.seen} agent events, ended {self.terminal}")
        return self.first, time.perf_counter() - self.t0


class LangGraphPeer(Peer):
    name = "langgraph"
    mode = "POST /threads/{id}/runs/stream (stream_mode=custom)"

    async def prepare(self, http: HttpClient, user: str) -> Any:
        status, doc = await http.request(
            "POST", "/threads", orjson.dumps({"metadata": {"user": user}})
        )
        if status != 200:
            raise RuntimeError(f"langgraph: POST /threads answered {status}")
        return orjson.loads(doc)["thread_id"]

    async def run(self, http: HttpClient, user: str, state: Any, n: int) -> tuple[float, float]:
        body = {
            "assistant_id": "agent",
            "input": {"user": user, "run_no": n},
            "stream_mode": "custom",
        }
        got = _Collector("langgraph", user, time.perf_counter())

        def on_event(event: str, data: bytes) -> None:
            if event == "custom":
                got.agent_event(orjson.loads(data))
            elif event == "error":
                raise RuntimeError(f"langgraph: {data!r}")

        status = await http.stream(
            "POST", f"/threads/{state}/runs/stream", on_event, orjson.dumps(body)
        )
        if status != 200:
            raise RuntimeError(f"langgraph: runs/stream answered {status}")
        return got.check()


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

    async def prepare(self, http: HttpClient, user: str) -> Any:
        return {"Authorization": f"Bearer {token(self.secret, user)}"}

    async def run(self, http: HttpClient, user: str, state: Any, n: int) -> tuple[float, float]:
        body = orjson.dumps({"agent": "peer", "input": {"user": user, "run_no": n}})
        got = _Collector("corral", user, time.perf_counter())

        def on_event(event: str, data: bytes) -> None:
            if event == "agent_update":
                got.agent_event(orjson.loads(data)["data"])
            elif event in ("agent_completed", "agent_error", "agent_cancelled"):
                got.terminal = event

        if self.one_request:
            status = await http.stream("POST", "/v1/runs/stream", on_event, body, state)
        else:
            status, doc = await http.request("POST", "/v1/runs", body, state)
            if status != 202:
                raise RuntimeError(f"corral: POST /v1/runs answered {status}: {doc!r}")
            run_id = orjson.loads(doc)["run_id"]
            status = await http.stream("GET", f"/v1/runs/{run_id}/stream", on_event, b"", state)
        if status != 200 or got.terminal != "agent_completed":
            raise RuntimeError(f"corral: stream answered {status}, ended {got.terminal}")
        return got.check()


async def closed_loop(
    peer: Peer,
    url: tuple[str, int],
    *,
    users: int,
    duration_s: float,
    warmup_s: float,
    pid: int,
    tag: str,
) -> dict[str, Any]:
    clients = [HttpClient(*url) for _ in range(users)]
    names = [f"{tag}-{i}" for i in range(users)]
    try:
        states = await asyncio.gather(
            *(peer.prepare(c, u) for c, u in zip(clients, names, strict=True))
        )
        loop = asyncio.get_running_loop()
        measuring = loop.time() + warmup_s
        stop = measuring + duration_s
        firsts: list[float] = []
        dones: list[float] = []
        errors: list[str] = []
        meter = CpuMeter([pid])

        async def user(http: HttpClient, name: str, state: Any) -> None:
            n = 0
            while loop.time() < stop:
                n += 1
                counted = loop.time() >= measuring
                try:
                    first, done = await peer.run(http, name, state, n)
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    http.close()
                    continue
                if counted and loop.time() <= stop:
                    firsts.append(first)
                    dones.append(done)

        async def start_meter() -> None:
            await asyncio.sleep(warmup_s)
            meter.start()

        await asyncio.gather(
            start_meter(),
            *(user(c, u, s) for c, u, s in zip(clients, names, states, strict=True)),
        )
        meter.stop()
    finally:
        for client in clients:
            client.close()
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
            one_request = await _has_start_and_stream(corral_url, secret)
            peers: list[tuple[Peer, Child]] = [
                (CorralPeer(secret, one_request), corral),
                (LangGraphPeer(), lg),
            ]
            for rep in range(reps):
                for peer, child in peers:
                    row = await closed_loop(
                        peer,
                        (HOST, child.port or 0),
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
