"""fan-out: many sockets, ``echo`` with 100 steps and no delay — events/s delivered.

corral: U users × S sockets each (default 100 × 10 = 1,000; S is at most the per-user cap
of 10); one run of ``echo`` (100 steps, 302 events) is started for every user at once, and
each event is stored before it is delivered to each of the user's S sockets. Events/s =
frames received across all sockets / wall time from the first POST to the last terminal
frame.

Baseline, in the same run: the bare ``websockets`` server of ``baselines.py`` with the same
sockets in the same groups, pushing the same number of frames of the same mean size (measured
on corral's frames just before) one frame per loop iteration, storing nothing. The ratio
corral/bare says what storing, routing and corral's per-connection queues cost.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import orjson
from harness import (
    HOST,
    Child,
    CpuMeter,
    Result,
    Target,
    baseline_server,
    corral_serve,
    fmt,
    median,
    new_secret,
    running,
    table,
    token,
    workdir,
)
from load import TERMINAL, Countdown
from wire import HttpClient, WsClient, connect_many

TIMEOUT_S = 180.0


class _Counter:
    """Counts one socket's frames and notes when its terminal frame arrived."""

    __slots__ = ("awaiting_ready", "done", "done_at", "frames", "nbytes")

    def __init__(self, ready: Countdown) -> None:
        self.frames = 0
        self.nbytes = 0
        self.done_at: float | None = None
        self.done = ready  # ticked by the "ready" frame, then (after reset) by the terminal one
        self.awaiting_ready = True

    def on_message(self, payload: bytes, now: float) -> None:
        self.frames += 1
        self.nbytes += len(payload)
        if self.awaiting_ready:
            self.awaiting_ready = False
            self.done.tick()
        elif payload.startswith(TERMINAL):
            self.done_at = now
            self.done.tick()

    def reset(self, done: Countdown) -> None:
        self.frames = self.nbytes = 0
        self.done_at = None
        self.done = done
        self.awaiting_ready = False


async def _open(
    port: int, users: int, per_user: int, tok: Any, path: Any
) -> tuple[list[WsClient], list[_Counter]]:
    ready = Countdown(users * per_user)
    counters = [_Counter(ready) for _ in range(users * per_user)]

    async def one(i: int) -> WsClient:
        user = i // per_user
        return await WsClient.connect(
            HOST, port, path=path(user), token=tok(user), on_message=counters[i].on_message
        )

    sockets = await connect_many(len(counters), one, concurrency=100)
    await ready.wait(60.0)
    return sockets, counters


def _reset(counters: list[_Counter]) -> Countdown:
    done = Countdown(len(counters))
    for c in counters:
        c.reset(done)
    return done


def _row(
    server: str, counters: list[_Counter], t0: float, complete: bool, meter: CpuMeter
) -> dict[str, Any]:
    frames = sum(c.frames for c in counters)
    nbytes = sum(c.nbytes for c in counters)
    ends = [c.done_at for c in counters if c.done_at is not None]
    wall = (max(ends) if ends else time.perf_counter()) - t0
    return {
        "server": server,
        "sockets": len(counters),
        "frames": frames,
        "mean_frame_bytes": round(nbytes / frames, 1) if frames else None,
        "seconds": round(wall, 3),
        "events_per_s": round(frames / wall, 1) if wall > 0 else None,
        "all_terminal": complete,
        **meter.as_dict(),
    }


async def run_corral(
    child: Child, secret: str, users: int, per_user: int, steps: int, rep: int
) -> dict[str, Any]:
    tokens = [token(secret, f"f{rep}-{u}") for u in range(users)]
    port = child.port or 0
    sockets, counters = await _open(port, users, per_user, tokens.__getitem__, lambda _u: "/v1/ws")
    clients = [HttpClient(HOST, port) for _ in range(users)]
    body = {"agent": "echo", "input": {"message": "fan-out", "steps": steps}}
    done = _reset(counters)
    meter = CpuMeter([child.pid]).start()
    t0 = time.perf_counter()
    answers = await asyncio.gather(
        *(c.post_json("/v1/runs", body, tokens[u]) for u, c in enumerate(clients))
    )
    complete = await done.wait(TIMEOUT_S)
    meter.stop()
    row = _row("corral", counters, t0, complete, meter)
    row["rss_kib"] = child.rss_kib()
    # Stored first: the last run's stored events must be all there (302 for 100 steps).
    status, run = answers[-1]
    if status == 202 and run is not None:
        code, data = await clients[0].request(
            "GET", f"/v1/runs/{run['run_id']}", headers={"Authorization": f"Bearer {tokens[-1]}"}
        )
        row["stored_last_seq"] = orjson.loads(data).get("last_seq") if code == 200 else None
    row["expected_frames"] = len(counters) * (3 * steps + 2)
    for c in clients:
        c.close()
    await asyncio.gather(*(s.close(2.0) for s in sockets), return_exceptions=True)
    return row


async def run_bare(
    child: Child, users: int, per_user: int, frames: int, size: int, rep: int
) -> dict[str, Any]:
    port = child.port or 0
    sockets, counters = await _open(
        port, users, per_user, lambda _u: None, lambda u: f"/?user=b{rep}-{u}"
    )
    done = _reset(counters)
    meter = CpuMeter([child.pid]).start()
    t0 = time.perf_counter()
    for u in range(users):
        sockets[u * per_user].send_json({"frames": frames, "size": size})
    complete = await done.wait(TIMEOUT_S)
    meter.stop()
    row = _row("bare websockets", counters, t0, complete, meter)
    row["rss_kib"] = child.rss_kib()
    await asyncio.gather(*(s.close(2.0) for s in sockets), return_exceptions=True)
    return row


async def main(args: argparse.Namespace) -> Result:
    users, per_user, steps = (20, 5, 20) if args.quick else (100, 10, 100)
    reps = args.reps or (1 if args.quick else 3)
    secret = new_secret()
    result = Result(
        "fanout",
        {"users": users, "sockets_per_user": per_user, "steps": steps, "repetitions": reps},
    )
    with workdir(args.keep) as work:
        corral, bare = await asyncio.gather(
            asyncio.to_thread(corral_serve, secret, work),
            asyncio.to_thread(baseline_server, "fanout", secret, work),
        )
        with running(corral, bare):
            for rep in range(reps):
                prof = None
                if args.profile and rep == reps - 1:
                    from profiling import Profiler

                    prof = Profiler(corral.pid, "fanout", 15)
                    prof.start()
                row = await run_corral(corral, secret, users, per_user, steps, rep)
                if prof is not None:
                    result.notes.append(prof.stop())
                row["rep"] = rep + 1
                result.rows.append(row)
                size = int(row["mean_frame_bytes"] or 300)
                frames = 3 * steps + 2
                brow = await run_bare(bare, users, per_user, frames, size, rep)
                brow["rep"] = rep + 1
                result.rows.append(brow)
    _summarize(result)
    return result


def _summarize(result: Result) -> None:
    keys = ("events_per_s", "seconds", "mean_frame_bytes", "server_cpu_pct", "client_cpu_pct")
    summary: dict[str, Any] = {}
    for server in ("corral", "bare websockets"):
        rows = [r for r in result.rows if r["server"] == server]
        summary[server] = {k: median([r.get(k) for r in rows]) for k in keys}
        summary[server]["all_terminal"] = all(r["all_terminal"] for r in rows)
    ratios = []
    for c, b in zip(result.rows[::2], result.rows[1::2], strict=False):
        if c.get("events_per_s") and b.get("events_per_s"):
            ratios.append(c["events_per_s"] / b["events_per_s"])
    ratio = median(ratios)
    summary["ratio_corral_over_bare"] = None if ratio is None else round(ratio, 3)
    result.summary = summary
    result.targets = [Target("fan-out, corral / bare websockets", ratio, 0.8, "×", True)]
    p = result.params
    table(
        f"fan-out — {p['users']} users × {p['sockets_per_user']} sockets, echo {p['steps']} "
        f"steps; medians of {p['repetitions']}",
        ("server", "events/s", "seconds", "frame bytes", "server CPU %", "client CPU %"),
        [(name, *(fmt(summary[name][k]) for k in keys)) for name in ("corral", "bare websockets")],
    )
    console_ratio = "—" if ratio is None else f"{ratio:.3f}"
    table("fan-out ratio", ("", "corral / bare"), [("events/s", console_ratio)])
