"""Run a loadtest: tokens, users ramped in, runs driven, everything verified, one report.

``run_loadtest`` is the library entry point (await it in any event loop); ``run_cli`` is what
``corral loadtest`` calls: it adds the live progress display, the final tables, the JSON
file, and the exit status.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
from rich.console import Console
from rich.live import Live

from corral.errors import ConfigurationError
from corral.loadtest.config import LoadtestConfig
from corral.loadtest.connection import Shared
from corral.loadtest.metrics import ServerSampler, Stats, clock
from corral.loadtest.report import LoadtestReport, progress_view, render
from corral.loadtest.tokens import token_source
from corral.loadtest.user import SimulatedUser
from corral.loadtest.verify import Violations

T = TypeVar("T")
PROGRESS_INTERVAL_S = 0.25
HTTP_KEEPALIVE_S = 2.0
TOKEN_TTL_MIN_S = 3600
FD_MARGIN = 64  # files beyond the sockets: the HTTP pool, stdio, the event loop's own


def raise_open_file_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; returns the limit now in force.

    Each WebSocket is one file descriptor; 1,000 users x 2 connections pass the common
    default soft limit of 1,024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
    return target


async def run_loadtest(config: LoadtestConfig, *, stats: Stats | None = None) -> LoadtestReport:
    """Drive ``config``'s users against the server and verify every connection.

    ``stats`` may be passed to watch the counters while it runs. Every wait is bounded by
    ``config.timeout_s``, so this returns even against a server that stops answering.
    Cancelling it closes every connection before the cancellation propagates. Raises
    :class:`~corral.errors.ConfigurationError` when no token can be had.
    """
    stats = stats if stats is not None else Stats()
    violations = Violations()
    notes: list[str] = []
    nofile = raise_open_file_limit()
    needed = config.users * config.connections_per_user + config.http_connections + FD_MARGIN
    if needed > nofile:
        notes.append(
            f"the open-file limit is {nofile} but this load needs about {needed} descriptors; "
            "raise it (ulimit -Hn) or expect connection errors"
        )
    user_ids = config.user_ids()
    stats.users_total = len(user_ids)
    stats.runs_planned = config.total_runs
    ttl_s = int(max(TOKEN_TTL_MIN_S, config.ramp_s + config.timeout_s * (config.runs_per_user + 4)))
    source = token_source(config, ttl_s)
    tokens = await asyncio.gather(*(source.token_for(user_id) for user_id in user_ids))

    limits = httpx.Limits(
        max_connections=config.http_connections,
        max_keepalive_connections=config.http_connections,
        # Below uvicorn's 5 s keep-alive: reusing a connection the server is just closing
        # fails the request with a ReadError, which is the client's race, not the server's.
        keepalive_expiry=HTTP_KEEPALIVE_S,
    )
    began = clock()
    async with (
        httpx.AsyncClient(
            base_url=config.base_url, limits=limits, timeout=config.timeout_s, trust_env=False
        ) as http,
        ServerSampler(config.server_pid) as server,
    ):
        shared = Shared(
            config=config,
            http=http,
            stats=stats,
            violations=violations,
            connect_gate=asyncio.Semaphore(config.connect_concurrency),
        )
        users = [
            SimulatedUser(n, user_id, token, shared)
            for n, (user_id, token) in enumerate(zip(user_ids, tokens, strict=True))
        ]
        spacing = config.ramp_s / config.users
        try:
            await asyncio.gather(*(_life(user, n * spacing) for n, user in enumerate(users)))
            server.mark_loaded()
            for user in users:
                await user.verify()
        finally:
            await asyncio.gather(*(user.close() for user in users), return_exceptions=True)
    if config.server_pid is not None and server.before is None:
        notes.append(f"could not read /proc/{config.server_pid}/status: is the pid on this host?")
    if stats.runs_started < config.total_runs:
        notes.append(
            f"{config.total_runs - stats.runs_started} run(s) did not start; see the errors"
        )
    return LoadtestReport.build(
        config,
        stats,
        violations,
        server,
        clock() - began,
        source.description,
        nofile,
        notes,
    )


async def _life(user: SimulatedUser, delay_s: float) -> None:
    """One user's whole session: wait for its turn in the ramp, connect, run, settle."""
    if delay_s > 0:
        await asyncio.sleep(delay_s)  # the ramp: users arrive over time
    if await user.connect():
        await user.drive()
        await user.settle()


async def _with_progress(config: LoadtestConfig, console: Console) -> LoadtestReport:
    stats = Stats()
    task = asyncio.ensure_future(run_loadtest(config, stats=stats))
    # Refreshed from this event loop, not Rich's refresh thread: the counters are plain
    # attributes mutated by the loop, and reading them here needs no lock.
    with Live(progress_view(stats, config), console=console, auto_refresh=False) as live:
        while not task.done():
            await asyncio.wait({task}, timeout=PROGRESS_INTERVAL_S)
            live.update(progress_view(stats, config), refresh=True)
    return task.result()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on uvloop when it is installed (it is with uvicorn[standard])."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def run_cli(
    config: LoadtestConfig,
    *,
    json_path: Path | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> int:
    """``corral loadtest``: run, show progress on a terminal, print tables, write JSON.

    Returns the exit status: 0 passed, 1 violations (see :class:`LoadtestReport`), 2 when the
    loadtest could not run at all (no tokens, a file that cannot be written).
    """
    out = console or Console()
    err = Console(stderr=True)
    try:
        if progress and err.is_terminal:
            report = _run(_with_progress(config, err))
        else:
            report = _run(run_loadtest(config))
    except ConfigurationError as exc:
        err.print(f"corral: {exc}", style="red", markup=False, highlight=False)
        return 2
    render(report, out)
    if json_path is not None:
        try:
            json_path.write_bytes(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2))
        except OSError as exc:
            err.print(f"corral: cannot write {json_path}: {exc}", markup=False, highlight=False)
            return 2
    return report.exit_code
