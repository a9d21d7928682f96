"""What a loadtest measures: counters, latencies, errors by kind, and the server's memory."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections import Counter
from pathlib import Path

PERCENTILES = (50, 95, 99)
RSS_SAMPLE_INTERVAL_S = 0.25
MAX_ERROR_EXAMPLES = 3


def clock() -> float:
    """Monotonic seconds; every timestamp of a loadtest comes from here."""
    return time.perf_counter()


class Stats:
    """Live counters of one loadtest, shared by all its users (one event loop, no locks).

    The progress display reads them while the loadtest runs; the report reads them after.
    """

    def __init__(self) -> None:
        self.users_total = 0
        self.users_connected = 0
        self.users_done = 0
        self.connections_open = 0
        self.runs_planned = 0
        self.runs_started = 0
        self.runs_completed = 0
        self.frames = 0
        self.events = 0
        self.bytes = 0
        self.reconnects = 0
        self.drops = 0  # sockets dropped on purpose (--drop-every-s)
        self.starts_retried = 0  # WS starts retried with their key after a lost socket
        self.starts_over_http = 0  # WS starts made over HTTP: every socket of the user was down
        self.duplicates = 0  # the same (run_id, seq) twice outside a resume: a violation
        self.duplicates_tolerated = 0  # ... after a resume, which the contract allows
        self.errors: Counter[str] = Counter()
        self.error_examples: dict[str, list[str]] = {}
        self.outcomes: Counter[str] = Counter()
        self.start_latency_s: list[float] = []
        self.completion_latency_s: list[float] = []
        self.first_start: float | None = None
        self.last_completion: float | None = None
        self.began = clock()

    def error(self, kind: str, detail: str | None = None) -> None:
        """Count one error of ``kind``; keep ``detail`` for the first few of each kind."""
        self.errors[kind] += 1
        if detail:
            examples = self.error_examples.setdefault(kind, [])
            if len(examples) < MAX_ERROR_EXAMPLES:
                examples.append(detail[:300])

    def run_started(self, t0: float) -> None:
        self.runs_started += 1
        if self.first_start is None or t0 < self.first_start:
            self.first_start = t0

    def run_completed(self, t0: float, started: float | None, done: float, outcome: str) -> None:
        self.runs_completed += 1
        self.outcomes[outcome] += 1
        self.completion_latency_s.append(done - t0)
        if started is not None:
            self.start_latency_s.append(started - t0)
        if self.last_completion is None or done > self.last_completion:
            self.last_completion = done

    @property
    def run_window_s(self) -> float:
        """From the first run's start to the last run's completion (0 before any)."""
        if self.first_start is None or self.last_completion is None:
            return 0.0
        return max(self.last_completion - self.first_start, 1e-9)

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())


def percentiles(samples: list[float]) -> dict[str, float | None]:
    """p50/p95/p99/max in milliseconds (nearest rank); None for each when there are none."""
    keys = [f"p{p}" for p in PERCENTILES] + ["max"]
    if not samples:
        return dict.fromkeys(keys)
    ordered = sorted(samples)
    out: dict[str, float | None] = {}
    for p in PERCENTILES:
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        out[f"p{p}"] = round(ordered[rank - 1] * 1000, 2)
    out["max"] = round(ordered[-1] * 1000, 2)
    return out


def read_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) ``pid`` has used so far, None if unreadable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which is in parentheses and may contain spaces.
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_rss(pid: int) -> int | None:
    """The resident memory of ``pid`` in bytes (``VmRSS`` of /proc), None if unreadable."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


class ServerSampler:
    """Samples a local server process's RSS every ``interval_s`` while running; keeps the
    peak, and the CPU time it used between entry and :meth:`mark_loaded`.

    ``async with ServerSampler(pid) as sampler`` samples on entry and on exit; the task it
    starts is cancelled on exit (cancellation-safe: it only sleeps and reads /proc). With
    ``pid`` None it measures nothing.
    """

    def __init__(self, pid: int | None, interval_s: float = RSS_SAMPLE_INTERVAL_S) -> None:
        self.pid = pid
        self.before: int | None = None
        self.after: int | None = None
        self.peak: int | None = None
        self.loaded: int | None = None
        self.cpu_s: float | None = None
        self.wall_s: float | None = None
        self._cpu_before: float | None = None
        self._began = 0.0
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> int | None:
        if self.pid is None:
            return None
        rss = read_rss(self.pid)
        if rss is not None and (self.peak is None or rss > self.peak):
            self.peak = rss
        return rss

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            self.sample()

    def mark_loaded(self) -> None:
        """The load is over: take the loaded RSS and the CPU time used since entry."""
        self.loaded = self.sample()
        if self.pid is not None and self._cpu_before is not None:
            cpu = read_cpu_s(self.pid)
            if cpu is not None:
                self.cpu_s = round(cpu - self._cpu_before, 2)
                self.wall_s = round(clock() - self._began, 2)

    async def __aenter__(self) -> ServerSampler:
        self.before = self.sample()
        self._began = clock()
        if self.pid is not None:
            self._cpu_before = read_cpu_s(self.pid)
        if self.pid is not None:
            self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.after = self.sample()

    def as_dict(self, users: int) -> dict[str, object] | None:
        if self.pid is None:
            return None
        per_user = None
        if self.before is not None and self.peak is not None and users:
            per_user = max(self.peak - self.before, 0) // users
        return {
            "pid": self.pid,
            "before_bytes": self.before,
            "loaded_bytes": self.loaded,
            "peak_bytes": self.peak,
            "after_bytes": self.after,
            "per_user_bytes": per_user,
            "cpu_s": self.cpu_s,
            "wall_s": self.wall_s,
        }
