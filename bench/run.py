"""Run corral's benchmarks: ``python bench/run.py [--quick] [--only runs,fanout,...]``.

Each suite starts the servers it needs as child processes (corral, and its baseline), runs,
compares against the baseline in the same run, prints a table and writes
``bench/results/<suite>.json``. See bench/README.md for what each one measures.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from harness import Result, Target, console, raise_fd_limit, targets_table

SUITES = ("runs", "fanout", "idle", "scaling", "cluster", "peers")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="corral benchmarks (see bench/README.md)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run, < 1 min")
    parser.add_argument(
        "--only", default=",".join(SUITES), help=f"comma-separated suites ({','.join(SUITES)})"
    )
    parser.add_argument("--reps", type=int, default=0, help="repetitions (default 3; quick 1)")
    parser.add_argument("--duration", type=float, default=0, help="seconds per measurement")
    parser.add_argument("--users", type=int, default=0, help="runs, cluster, peers: users")
    parser.add_argument("--sockets", type=int, default=0, help="idle: sockets to hold")
    parser.add_argument("--clients", type=int, default=0, help="idle: client processes")
    parser.add_argument(
        "--processes", type=int, default=2, help="cluster: API nodes and as many workers"
    )
    parser.add_argument(
        "--levels", default="", help="scaling: comma-separated user counts (1,10,100,1000)"
    )
    parser.add_argument(
        "--think", type=float, default=None, help="scaling: seconds between a user's runs (5)"
    )
    parser.add_argument("--profile", action="store_true", help="sample corral with py-spy")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    parser.add_argument(
        "--results", default="", help="write the JSON here instead of bench/results/"
    )
    args = parser.parse_args(argv)
    args.suites = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.suites) - set(SUITES)
    if unknown:
        parser.error(f"unknown suite(s): {', '.join(sorted(unknown))}")
    return args


async def run_all(args: argparse.Namespace) -> list[Result]:
    results = []
    for name in args.suites:
        module: Any = importlib.import_module(name)
        console.rule(f"[bold]{name}")
        started = time.perf_counter()
        result: Result = await module.main(args)
        result.params["seconds"] = round(time.perf_counter() - started, 1)
        path = result.write()
        console.print(f"{name}: {result.params['seconds']} s → {path}")
        results.append(result)
    return results


def main() -> None:
    args = parse()
    if args.results:
        harness.RESULTS = Path(args.results).resolve()
    raise_fd_limit()
    import uvloop

    results = uvloop.run(run_all(args))
    targets: list[Target] = [t for r in results for t in r.targets]
    if targets:
        console.rule("[bold]against the targets")
        targets_table(targets)


if __name__ == "__main__":
    main()
