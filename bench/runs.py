"""runs: ``echo`` with 1 step, 50 closed-loop users — runs/s and start latency.

Baseline, in the same run: the minimal Starlette app of ``baselines.py`` (same uvicorn,
httptools, uvloop and WebSocket protocol; the same POST and five events per run; no
validation, admission or database). It is the floor for this protocol on this stack and
this client, so corral/baseline says what corral's own work per run costs. A /healthz
closed loop against corral gives the bare HTTP round trip too.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from harness import (
    Result,
    Target,
    baseline_server,
    corral_serve,
    fmt,
    median,
    new_secret,
    running,
    table,
    workdir,
)
from load import closed_loop, http_floor, local

RUN_INPUT = {"message": "bench", "steps": 1}


async def main(args: argparse.Namespace) -> Result:
    users = args.users or (20 if args.quick else 50)
    duration = args.duration or (2.0 if args.quick else 10.0)
    reps = args.reps or (1 if args.quick else 3)
    warmup = 0.5 if args.quick else 2.0
    secret = new_secret()
    result = Result(
        "runs",
        {"users": users, "duration_s": duration, "repetitions": reps, "input": RUN_INPUT},
    )
    with workdir(args.keep) as work:
        corral, base = await asyncio.gather(
            asyncio.to_thread(corral_serve, secret, work),
            asyncio.to_thread(baseline_server, "runs", secret, work),
        )
        with running(corral, base):
            if args.profile:
                from profiling import Profiler

                prof = Profiler(corral.pid, "runs", duration + warmup)
            else:
                prof = None
            for rep in range(reps):
                for name, child in (("corral", corral), ("baseline", base)):
                    if prof is not None and name == "corral" and rep == reps - 1:
                        prof.start()
                    row = await closed_loop(
                        secret,
                        [local(child.port or 0)],
                        [local(child.port or 0)],
                        users=users,
                        duration_s=duration,
                        warmup_s=warmup,
                        run_input=RUN_INPUT,
                        server_pids=[child.pid],
                        user_prefix=f"u{rep}",
                    )
                    if prof is not None and name == "corral" and rep == reps - 1:
                        result.notes.append(prof.stop())
                    row.update(server=name, rep=rep + 1, rss_kib=child.rss_kib())
                    result.rows.append(row)
            floor = await http_floor(local(corral.port or 0), users=users, duration_s=duration / 2)
            floor["server"] = "corral /healthz"
            result.rows.append(floor)
    _summarize(result)
    return result


def _med(rows: list[dict[str, Any]], server: str, key: str) -> float | None:
    return median([r.get(key) for r in rows if r.get("server") == server])


def _summarize(result: Result) -> None:
    rows = result.rows
    keys = ("runs_per_s", "start_p50_ms", "start_p99_ms", "complete_p50_ms", "server_cpu_pct")
    summary: dict[str, Any] = {}
    for server in ("corral", "baseline"):
        summary[server] = {k: _med(rows, server, k) for k in keys}
    c, b = summary["corral"], summary["baseline"]
    if c["runs_per_s"] and b["runs_per_s"]:
        summary["corral_over_baseline_runs_per_s"] = round(c["runs_per_s"] / b["runs_per_s"], 3)
    floor = next((r for r in rows if r.get("server") == "corral /healthz"), {})
    summary["healthz"] = floor
    result.summary = summary
    p50_ratio = None
    if c["start_p50_ms"] and b["start_p50_ms"]:
        p50_ratio = round(c["start_p50_ms"] / b["start_p50_ms"], 2)
    summary["corral_over_baseline_start_p50"] = p50_ratio
    result.targets = [
        Target(
            "runs/s, corral / same-stack baseline",
            summary.get("corral_over_baseline_runs_per_s"),
            0.5,
            "×",
            True,
        ),
        Target("start p50, corral / same-stack baseline", p50_ratio, 3.0, "×", False),
    ]
    table(
        f"runs — medians of {result.params['repetitions']} repetition(s), "
        f"{result.params['users']} users, {result.params['duration_s']:g} s each",
        ("server", "runs/s", "start p50 ms", "start p99 ms", "complete p50 ms", "server CPU %"),
        [(name, *(fmt(summary[name][k]) for k in keys)) for name in ("corral", "baseline")],
    )
    if floor:
        table(
            "HTTP floor: GET /healthz on corral, same users",
            ("", "requests/s", "p50 ms", "p99 ms"),
            [
                (
                    "corral /healthz",
                    fmt(floor["requests_per_s"]),
                    fmt(floor["p50_ms"], 2),
                    fmt(floor["p99_ms"], 2),
                )
            ],
        )
