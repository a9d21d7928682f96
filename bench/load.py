"""Closed-loop users: POST a run, wait for its terminal event on the user's socket, repeat.

Used by the runs, scaling and cluster suites. Start latency is measured from just before the
POST is written to the arrival of the run's ``agent_started`` frame on the user's socket (it
may arrive before the POST's answer has been read; frames are matched by ``run_id``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from harness import HOST, CpuMeter, percentile, rss_kib, token
from wire import HttpClient, WsClient, connect_many

STARTED = b'{"type":"agent_started"'
TERMINAL = (b'{"type":"agent_completed"', b'{"type":"agent_error"', b'{"type":"agent_cancelled"')


class Countdown:
    """Set once ``tick`` was called ``n`` times: waiting for many sockets without polling."""

    def __init__(self, n: int) -> None:
        self.left = n
        self.event = asyncio.Event()
        if n <= 0:
            self.event.set()

    def tick(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.event.set()

    async def wait(self, timeout_s: float) -> bool:
        """True once done; False if ``timeout_s`` passed first."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.event.wait()
        except TimeoutError:
            return False
        return True


@dataclass
class _Run:
    started: float | None = None
    done: asyncio.Future[float] | None = None


@dataclass
class Endpoint:
    host: str
    port: int


class Watcher:
    """Matches one socket's frames to runs by ``run_id``."""

    def __init__(self, ready: Countdown | None = None) -> None:
        self.runs: dict[str, _Run] = {}
        self.frames = 0
        self.ready = ready  # ticked by the first frame ("ready")

    def run(self, run_id: str) -> _Run:
        entry = self.runs.get(run_id)
        if entry is None:
            entry = self.runs[run_id] = _Run()
        if entry.done is None:
            entry.done = asyncio.get_running_loop().create_future()
        return entry

    def on_message(self, payload: bytes, now: float) -> None:
        self.frames += 1
        if self.frames == 1 and self.ready is not None:
            self.ready.tick()
        if payload.startswith(STARTED):
            self.run(orjson.loads(payload)["run_id"]).started = now
        elif payload.startswith(TERMINAL):
            entry = self.run(orjson.loads(payload)["run_id"])
            if entry.done is not None and not entry.done.done():
                entry.done.set_result(now)


@dataclass
class LoopStats:
    starts: list[float] = field(default_factory=list)  # seconds
    completes: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    runs: int = 0


async def _user_loop(
    http: HttpClient,
    watcher: Watcher,
    tok: str,
    body: dict[str, Any],
    window: tuple[float, float],
    stats: LoopStats,
    think_s: float,
    run_timeout_s: float,
) -> None:
    begin, end = window
    while True:
        t0 = time.perf_counter()
        if t0 >= end:
            return
        try:
            status, run = await http.post_json("/v1/runs", body, tok)
        except (OSError, asyncio.IncompleteReadError) as exc:
            stats.errors[type(exc).__name__] += 1
            http.close()
            await asyncio.sleep(0.05)
            continue
        if status != 202 or run is None:
            stats.errors[f"http {status}"] += 1
            await asyncio.sleep(0.05)
            continue
        entry = watcher.run(str(run["run_id"]))
        assert entry.done is not None
        try:
            finished = await asyncio.wait_for(entry.done, run_timeout_s)
        except TimeoutError:
            stats.errors["run timed out"] += 1
            watcher.runs.pop(str(run["run_id"]), None)
            continue
        watcher.runs.pop(str(run["run_id"]), None)
        if t0 >= begin:
            stats.runs += 1
            if entry.started is not None:
                stats.starts.append(entry.started - t0)
            stats.completes.append(finished - t0)
        if think_s:
            await asyncio.sleep(think_s * random.uniform(0.5, 1.5))


async def closed_loop(
    secret: str,
    ws_endpoints: list[Endpoint],
    post_endpoints: list[Endpoint],
    *,
    users: int,
    duration_s: float,
    warmup_s: float,
    run_input: dict[str, Any],
    think_s: float = 0.0,
    server_pids: list[int] | None = None,
    user_prefix: str = "bench",
    connect_concurrency: int = 100,
    on_connected: Any = None,
) -> dict[str, Any]:
    """``users`` users, each with one socket and one kept-alive HTTP connection.

    User ``i`` holds its socket on ``ws_endpoints[i % n]`` and posts to
    ``post_endpoints[i % m]`` (pass them rotated to start runs on another node). Returns the
    measured numbers of the window after ``warmup_s``.
    """
    tokens = [token(secret, f"{user_prefix}-{i}") for i in range(users)]
    ready = Countdown(users)
    watchers = [Watcher(ready) for _ in range(users)]

    async def open_socket(i: int) -> WsClient:
        ep = ws_endpoints[i % len(ws_endpoints)]
        return await WsClient.connect(
            ep.host, ep.port, token=tokens[i], on_message=watchers[i].on_message
        )

    sockets = await connect_many(users, open_socket, concurrency=connect_concurrency)
    # Every socket must be subscribed ("ready" seen) before its user's first run starts.
    await ready.wait(30.0)
    if on_connected is not None:
        on_connected()
    https = [
        HttpClient(
            post_endpoints[i % len(post_endpoints)].host,
            post_endpoints[i % len(post_endpoints)].port,
        )
        for i in range(users)
    ]
    body = {"agent": "echo", "input": run_input}
    stats = LoopStats()
    now = time.perf_counter()
    window = (now + warmup_s, now + warmup_s + duration_s)
    meter = CpuMeter(server_pids or [])
    tasks = [
        asyncio.ensure_future(
            _user_loop(https[i], watchers[i], tokens[i], body, window, stats, think_s, 30.0)
        )
        for i in range(users)
    ]
    await asyncio.sleep(max(0.0, window[0] - time.perf_counter()))
    meter.start()
    await asyncio.sleep(max(0.0, window[1] - time.perf_counter()))
    meter.stop()
    done, pending = await asyncio.wait(tasks, timeout=40.0)
    for task in pending:
        task.cancel()
        stats.errors["user loop still running at the end"] += 1
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            stats.errors[type(task.exception()).__name__] += 1
    rss_end = sum(rss_kib(p) for p in server_pids or [])
    for http in https:
        http.close()
    await asyncio.gather(*(s.close(2.0) for s in sockets), return_exceptions=True)
    ms = [s * 1000 for s in stats.starts]
    cs = [s * 1000 for s in stats.completes]
    return {
        "users": users,
        "runs": stats.runs,
        "runs_per_s": round(stats.runs / duration_s, 1),
        "start_p50_ms": _r(percentile(ms, 50)),
        "start_p95_ms": _r(percentile(ms, 95)),
        "start_p99_ms": _r(percentile(ms, 99)),
        "start_max_ms": _r(max(ms) if ms else None),
        "complete_p50_ms": _r(percentile(cs, 50)),
        "complete_p99_ms": _r(percentile(cs, 99)),
        "errors": dict(stats.errors),
        "rss_end_kib": rss_end,
        **meter.as_dict(),
    }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


async def http_floor(
    endpoint: Endpoint, *, users: int, duration_s: float, path: str = "/healthz"
) -> dict[str, Any]:
    """``users`` closed-loop GETs of ``path``: the bare HTTP round trip of the same stack."""
    latencies: list[float] = []
    end = time.perf_counter() + duration_s

    async def one() -> None:
        http = HttpClient(endpoint.host, endpoint.port)
        try:
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                await http.request("GET", path)
                latencies.append(time.perf_counter() - t0)
        finally:
            http.close()

    await asyncio.gather(*(one() for _ in range(users)))
    ms = [x * 1000 for x in latencies]
    return {
        "requests_per_s": round(len(ms) / duration_s, 1),
        "p50_ms": _r(percentile(ms, 50)),
        "p99_ms": _r(percentile(ms, 99)),
    }


def local(port: int) -> Endpoint:
    return Endpoint(HOST, port)
