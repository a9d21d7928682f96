"""scaling: 1, 10, 100, 1,000 users — p99 start latency and server memory per user.

Each user holds one socket and runs a closed loop: start an ``echo`` run (1 step, 50 ms
delay: a short agent), wait for its terminal event, pause ``--think`` seconds (default 15,
jittered ±50 %), repeat. So the offered load grows with the users (about users / 15 runs/s),
as it does when more people use a server; the table shows offered and achieved runs/s, so
a level where the server saturated is visible as such. Each level gets a fresh server:
memory per user = (RSS at the end of the window − RSS after a warm-up) / users.

This turns the seed's "performance degradation" (p99 at 1,000 users ≤ 2× p99 at 10 users)
and "memory scales linearly" checks into measurements. The baseline is the same run's 10-user
level.
"""

from __future__ import annotations

import argparse
from typing import Any

from harness import (
    Result,
    Target,
    corral_serve,
    fmt,
    new_secret,
    running,
    table,
    workdir,
)
from load import closed_loop, local

RUN_INPUT = {"message": "scaling", "steps": 1, "delay_ms": 50}


async def main(args: argparse.Namespace) -> Result:
    if args.levels:
        levels = [int(x) for x in args.levels.split(",") if x.strip()]
    else:
        levels = [10, 50] if args.quick else [1, 10, 100, 1000]
    think = args.think if args.think is not None else (0.5 if args.quick else 15.0)
    duration = args.duration or (3.0 if args.quick else 30.0)
    warmup = 0.5 if args.quick else max(3.0, think)
    secret = new_secret()
    result = Result(
        "scaling",
        {"levels": levels, "think_s": think, "duration_s": duration, "input": RUN_INPUT},
    )
    with workdir(args.keep) as work:
        for users in levels:
            child = corral_serve(secret, work, name=f"corral-{users}")
            with running(child):
                # Warm-up: a few runs so that first-use allocations are not charged to users.
                await closed_loop(
                    secret,
                    [local(child.port or 0)],
                    [local(child.port or 0)],
                    users=2,
                    duration_s=0.5 if args.quick else 1.0,
                    warmup_s=0.0,
                    run_input=RUN_INPUT,
                    user_prefix="warm",
                )
                rss0 = child.rss_kib()
                row = await closed_loop(
                    secret,
                    [local(child.port or 0)],
                    [local(child.port or 0)],
                    users=users,
                    duration_s=duration,
                    warmup_s=warmup,
                    run_input=RUN_INPUT,
                    think_s=think,
                    server_pids=[child.pid],
                    user_prefix=f"s{users}",
                )
            row["rss_start_kib"] = rss0
            row["kib_per_user"] = round((row["rss_end_kib"] - rss0) / users, 1)
            row["offered_runs_per_s"] = round(users / (think + 0.05), 1)
            result.rows.append(row)
    _summarize(result)
    return result


def _summarize(result: Result) -> None:
    by_users = {r["users"]: r for r in result.rows}
    low = by_users.get(10)
    high = by_users.get(1000) or by_users.get(max(by_users))
    summary: dict[str, Any] = {
        str(u): {
            "start_p99_ms": r["start_p99_ms"],
            "kib_per_user": r["kib_per_user"],
            "runs_per_s": r["runs_per_s"],
        }
        for u, r in by_users.items()
    }
    ratio = None
    if low and high and low["start_p99_ms"] and high["start_p99_ms"]:
        ratio = round(high["start_p99_ms"] / low["start_p99_ms"], 2)
    summary["p99_ratio_high_over_10_users"] = ratio
    result.summary = summary
    result.targets = [
        Target(f"p99 start at {high['users']} users / at 10 users", ratio, 2.0, "×", False),
        Target(
            f"memory per connected user at {high['users']} users",
            high["kib_per_user"],
            32,
            "KiB",
            False,
        ),
    ]
    table(
        f"scaling — think {result.params['think_s']:g} s, {result.params['duration_s']:g} s "
        "per level, a fresh server each",
        (
            "users",
            "offered runs/s",
            "runs/s",
            "runs",
            "start p50 ms",
            "start p99 ms",
            "KiB/user",
            "server CPU %",
            "errors",
        ),
        [
            (
                str(r["users"]),
                fmt(r["offered_runs_per_s"]),
                fmt(r["runs_per_s"]),
                str(r["runs"]),
                fmt(r["start_p50_ms"]),
                fmt(r["start_p99_ms"]),
                fmt(r["kib_per_user"]),
                fmt(r["server_cpu_pct"]),
                str(sum(r["errors"].values())),
            )
            for r in result.rows
        ],
    )
