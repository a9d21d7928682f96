"""cluster: runs/s and start latency, 1 process vs N API nodes + N workers (issue 6).

Each configuration gets a fresh PostgreSQL database of its own (created and dropped here);
the cluster also gets an empty logical Redis database. "1 process" is ``corral serve`` on
PostgreSQL with no Redis: API, bus and executor in one process. The cluster is
``--processes N`` API nodes (``--no-executor``) and N ``corral worker`` processes; user ``i``
holds its socket on node ``i % N`` and POSTs to node ``(i + 1) % N``, so with N > 1 every run
is started on one node, executed by a worker and delivered through Redis to another node.
The load is the runs suite's (``echo`` 1 step, closed-loop users); repetitions alternate
between the two configurations. CPU is reported per role — corral processes, PostgreSQL,
Redis and this client — to show where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

from harness import (
    CLK_TCK,
    Child,
    Result,
    Target,
    corral_serve,
    corral_worker,
    cpu_s,
    fmt,
    fresh_postgres,
    fresh_redis_db,
    median,
    new_secret,
    running,
    self_cpu_s,
    table,
    workdir,
)
from load import Endpoint, closed_loop, local

RUN_INPUT = {"message": "cluster", "steps": 1}


def _cpu_of(comm: str) -> float:
    """CPU seconds of every process named ``comm`` (PostgreSQL backends, redis-server)."""
    total = 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            raw = Path(entry.path, "stat").read_text()
            name = raw[raw.index("(") + 1 : raw.rindex(")")]
            if name.startswith(comm):
                fields = raw.rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def _cpu_snapshot(api: list[Child], workers: list[Child]) -> dict[str, float]:
    return {
        "api": sum(cpu_s(c.pid) for c in api),
        "workers": sum(cpu_s(c.pid) for c in workers),
        "postgres": _cpu_of("postgres"),
        "redis": _cpu_of("redis-server"),
        "client": self_cpu_s(),
    }


async def _measure(
    name: str,
    secret: str,
    api: list[Child],
    workers: list[Child],
    users: int,
    duration: float,
    warmup: float,
    rep: int,
) -> dict[str, Any]:
    ws_eps: list[Endpoint] = [local(c.port or 0) for c in api]
    post_eps = ws_eps[1:] + ws_eps[:1]
    before = _cpu_snapshot(api, workers)
    row = await closed_loop(
        secret,
        ws_eps,
        post_eps,
        users=users,
        duration_s=duration,
        warmup_s=warmup,
        run_input=RUN_INPUT,
        server_pids=[c.pid for c in api + workers],
        user_prefix=f"{name[:1]}{rep}",
    )
    after = _cpu_snapshot(api, workers)
    wall = duration + warmup  # the CPU window includes the warm-up and the drain
    row["cpu_pct_by_role"] = {k: round(100 * (after[k] - before[k]) / wall, 1) for k in before}
    # CPU of every server-side process (corral's, PostgreSQL's, Redis's) per run, in ms.
    server_s = sum(after[k] - before[k] for k in before if k != "client")
    runs = (row.get("runs_per_s") or 0) * wall
    row["server_cpu_ms_per_run"] = round(1000 * server_s / runs, 3) if runs else None
    row.update(config=name, rep=rep + 1)
    return row


async def main(args: argparse.Namespace) -> Result:
    n = max(1, args.processes)
    users = args.users or (20 if args.quick else 50)
    duration = args.duration or (2.0 if args.quick else 10.0)
    warmup = 0.5 if args.quick else 2.0
    reps = args.reps or (1 if args.quick else 3)
    secret = new_secret()
    result = Result(
        "cluster",
        {
            "processes": n,
            "users": users,
            "duration_s": duration,
            "repetitions": reps,
            "input": RUN_INPUT,
            "cpus": os.cpu_count(),
        },
    )
    cluster_name = f"{n} API + {n} workers"
    # A database each: cluster workers claim every queued run of the database they serve, so
    # a single node sharing the cluster's database would have its runs taken from it.
    async with (
        fresh_postgres() as single_db,
        fresh_postgres() as db_url,
        fresh_redis_db() as redis_url,
    ):
        with workdir(args.keep) as work:
            env = {"CORRAL_DATABASE_URL": db_url, "CORRAL_REDIS_URL": redis_url}
            # Started side by side (each waits for its readiness line in a thread).
            single, *rest = await asyncio.gather(
                asyncio.to_thread(
                    corral_serve,
                    secret,
                    work,
                    name="single",
                    env={"CORRAL_DATABASE_URL": single_db},
                ),
                *(
                    asyncio.to_thread(
                        corral_serve,
                        secret,
                        work,
                        name=f"api-{i}",
                        extra_args=["--no-executor"],
                        env=env,
                    )
                    for i in range(n)
                ),
                *(
                    asyncio.to_thread(corral_worker, secret, work, name=f"worker-{i}", env=env)
                    for i in range(n)
                ),
            )
            api, workers = rest[:n], rest[n:]
            with running(single, *api, *workers):
                for rep in range(reps):
                    result.rows.append(
                        await _measure(
                            "1 process", secret, [single], [], users, duration, warmup, rep
                        )
                    )
                    # --profile: one API node and one worker, the last cluster repetition.
                    profs = []
                    if args.profile and rep == reps - 1:
                        from profiling import Profiler

                        profs = [
                            Profiler(api[0].pid, "cluster-api", duration + warmup),
                            Profiler(workers[0].pid, "cluster-worker", duration + warmup),
                        ]
                        for prof in profs:
                            prof.start()
                    result.rows.append(
                        await _measure(
                            cluster_name, secret, api, workers, users, duration, warmup, rep
                        )
                    )
                    for prof in profs:
                        result.notes.append(prof.stop())
    _summarize(result, cluster_name)
    return result


def _summarize(result: Result, cluster_name: str) -> None:
    keys = (
        "runs_per_s",
        "start_p50_ms",
        "start_p99_ms",
        "complete_p50_ms",
        "server_cpu_ms_per_run",
    )
    summary: dict[str, Any] = {}
    for name in ("1 process", cluster_name):
        rows = [r for r in result.rows if r["config"] == name]
        summary[name] = {k: median([r.get(k) for r in rows]) for k in keys}
        roles = rows[-1]["cpu_pct_by_role"] if rows else {}
        summary[name]["cpu_pct_by_role"] = {
            role: median([r["cpu_pct_by_role"][role] for r in rows]) for role in roles
        }
        summary[name]["errors"] = sum(sum(r["errors"].values()) for r in rows)
    one, many = summary["1 process"], summary[cluster_name]
    speed = cpu = None
    if one["runs_per_s"] and many["runs_per_s"]:
        speed = round(many["runs_per_s"] / one["runs_per_s"], 3)
    if one["server_cpu_ms_per_run"] and many["server_cpu_ms_per_run"]:
        cpu = round(many["server_cpu_ms_per_run"] / one["server_cpu_ms_per_run"], 3)
    summary["cluster_over_single_runs_per_s"] = speed
    summary["cluster_over_single_cpu_per_run"] = cpu
    result.summary = summary
    result.targets = [
        Target(f"cluster runs/s, {cluster_name} / 1 process (PostgreSQL)", speed, 0.8, "×", True),
        Target("CPU per run, every process: cluster / 1 process", cpu, 1.5, "×", False),
    ]
    table(
        f"cluster — {result.params['users']} users, echo 1 step, medians of "
        f"{result.params['repetitions']}, on {result.params['cpus']} CPUs",
        (
            "config",
            "runs/s",
            "start p50 ms",
            "start p99 ms",
            "complete p50 ms",
            "CPU ms/run",
            "errors",
        ),
        [
            (name, *(fmt(summary[name][k]) for k in keys), str(summary[name]["errors"]))
            for name in ("1 process", cluster_name)
        ],
    )
    roles = ("api", "workers", "postgres", "redis", "client")
    table(
        "where the CPU goes (% of one core, medians)",
        ("config", *roles),
        [
            (name, *(fmt(summary[name]["cpu_pct_by_role"].get(r)) for r in roles))
            for name in ("1 process", cluster_name)
        ],
    )
