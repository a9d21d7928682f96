"""Shared bench plumbing: child servers, tokens, process stats, percentiles, results."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from rich.console import Console
from rich.table import Table

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
HOST = "127.0.0.1"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379"
console = Console()


# --- identity ---------------------------------------------------------------------------------


def new_secret() -> str:
    return secrets.token_hex(32)


def token(secret: str, user: str, ttl_s: int = 3600) -> str:
    return jwt.encode({"sub": user, "exp": int(time.time()) + ttl_s}, secret, algorithm="HS256")


_issued_ports: set[int] = set()  # servers may be started side by side: never hand one out twice


def free_port() -> int:
    for _ in range(100):
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
        if port not in _issued_ports:
            _issued_ports.add(port)
            return port
    raise RuntimeError("no free port")


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- process stats ----------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB (from /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds used by ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuMeter:
    """CPU used by some processes (and this client) between ``start`` and ``stop``."""

    pids: Sequence[int]
    wall: float = 0.0
    server: float = 0.0
    client: float = 0.0
    _t0: float = 0.0
    _s0: float = 0.0
    _c0: float = 0.0

    def start(self) -> CpuMeter:
        self._t0 = time.perf_counter()
        self._s0 = sum(cpu_s(p) for p in self.pids)
        self._c0 = self_cpu_s()
        return self

    def stop(self) -> CpuMeter:
        self.wall = time.perf_counter() - self._t0
        self.server = sum(cpu_s(p) for p in self.pids) - self._s0
        self.client = self_cpu_s() - self._c0
        return self

    def as_dict(self) -> dict[str, float]:
        wall = self.wall or 1e-9
        return {
            "server_cpu_pct": round(100 * self.server / wall, 1),
            "client_cpu_pct": round(100 * self.client / wall, 1),
        }


# --- child servers ----------------------------------------------------------------------------


@dataclass
class Child:
    """A child process whose stdout is scanned for a readiness line; stderr goes to a file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    port: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _unlimited_fds() -> None:  # runs in the child before exec
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def spawn(
    name: str,
    argv: list[str],
    *,
    env: dict[str, str],
    ready: bytes,
    log_dir: Path,
    port: int | None = None,
    timeout_s: float = 60.0,
) -> Child:
    """Start ``argv`` and wait (bounded) until a stdout line contains ``ready``."""
    log_path = log_dir / f"{name}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        argv,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
        preexec_fn=_unlimited_fds,
        cwd=log_dir,
    )
    child = Child(name, proc, log_path, port)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    os.set_blocking(proc.stdout.fileno(), False)
    seen = b""
    while time.monotonic() < deadline:
        chunk = proc.stdout.read()
        if chunk:
            seen += chunk
            if ready in seen:
                # Keep draining stdout so the child never blocks on a full pipe.
                threading_drain(proc)
                return child
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    child.stop()
    raise RuntimeError(f"{name} did not start:\n{seen.decode(errors='replace')}{child.log_tail()}")


def threading_drain(proc: subprocess.Popen[bytes]) -> None:
    import threading

    def drain() -> None:
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), True)
        for _ in iter(lambda: proc.stdout.read(65536) if proc.stdout else b"", b""):
            pass

    threading.Thread(target=drain, daemon=True).start()


def corral_serve(
    secret: str,
    work: Path,
    *,
    name: str = "corral",
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Child:
    port = free_port()
    argv = [sys.executable, "-m", "corral.cli", "serve", "--port", str(port)]
    argv += ["--data-dir", str(work / name), *extra_args]
    # Every benchmark client connects from 127.0.0.1 (10,000 idle sockets in one suite): the
    # per-address cap, which is for strangers, is off here.
    limits = {"CORRAL_MAX_CONNECTIONS_PER_IP": "0"}
    return spawn(
        name,
        argv,
        env={"CORRAL_JWT_SECRET": secret, **limits, **(env or {})},
        ready=b"corral listening on",
        log_dir=work,
        port=port,
    )


def corral_worker(secret: str, work: Path, *, name: str, env: dict[str, str]) -> Child:
    argv = [sys.executable, "-m", "corral.cli", "worker"]
    return spawn(
        name,
        argv,
        env={"CORRAL_JWT_SECRET": secret, **env},
        ready=b"ready",
        log_dir=work,
    )


def baseline_server(kind: str, secret: str, work: Path) -> Child:
    port = free_port()
    argv = [sys.executable, str(BENCH / "baselines.py"), kind, "--port", str(port)]
    return spawn(
        f"baseline-{kind}",
        argv,
        env={"CORRAL_JWT_SECRET": secret},
        ready=b"listening",
        log_dir=work,
        port=port,
    )


@contextlib.contextmanager
def workdir(keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="corral-bench-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def running(*children: Child) -> Iterator[None]:
    try:
        yield
    finally:
        for child in children:
            child.stop()


# --- cluster dependencies ---------------------------------------------------------------------


@contextlib.asynccontextmanager
async def fresh_postgres() -> AsyncIterator[str]:
    """A new, empty PostgreSQL database for this run; dropped afterwards."""
    import asyncpg

    name = f"corral_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@contextlib.asynccontextmanager
async def fresh_redis_db() -> AsyncIterator[str]:
    """An empty logical Redis database (15 down to 8, the first empty one); flushed after."""
    import redis.asyncio as aioredis

    for db in range(15, 7, -1):
        client = aioredis.Redis.from_url(f"{REDIS_URL}/{db}")
        try:
            if await client.dbsize() == 0:
                break
        finally:
            await client.aclose()
    else:
        raise RuntimeError("no empty Redis database among 8..15 on 127.0.0.1:6379")
    try:
        yield f"{REDIS_URL}/{db}"
    finally:
        client = aioredis.Redis.from_url(f"{REDIS_URL}/{db}")
        try:
            await client.flushdb()
        finally:
            await client.aclose()


# --- numbers ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Sequence[float | None]) -> float | None:
    present = sorted(v for v in values if v is not None)
    if not present:
        return None
    mid = len(present) // 2
    return present[mid] if len(present) % 2 else (present[mid - 1] + present[mid]) / 2


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


@dataclass
class Target:
    """A goal from the issue: ``value`` against ``goal``; ``higher`` says which way is better."""

    name: str
    value: float | None
    goal: float
    unit: str
    higher: bool

    @property
    def ratio(self) -> float | None:
        """How far it stands: ≥ 1.0 means met (value/goal, or goal/value for "lower")."""
        if self.value is None or self.value == 0:
            return None
        return self.value / self.goal if self.higher else self.goal / self.value

    def as_dict(self) -> dict[str, Any]:
        ratio = self.ratio
        return {
            "name": self.name,
            "value": self.value,
            "goal": self.goal,
            "unit": self.unit,
            "direction": ">=" if self.higher else "<=",
            "ratio_to_target": None if ratio is None else round(ratio, 3),
            "met": ratio is not None and ratio >= 1.0,
        }


@dataclass
class Result:
    name: str
    params: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def write(self) -> Path:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{self.name}.json"
        doc = {
            "suite": self.name,
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": machine(),
            "params": self.params,
            "summary": self.summary,
            "targets": [t.as_dict() for t in self.targets],
            "rows": self.rows,
            "notes": self.notes,
        }
        path.write_text(json.dumps(doc, indent=2) + "\n")
        return path


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    t = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        t.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        t.add_row(*row)
    console.print(t)


def targets_table(targets: Sequence[Target]) -> None:
    rows = []
    for t in targets:
        ratio = t.ratio
        mark = "—" if ratio is None else ("met" if ratio >= 1 else f"{ratio:.2f}× of target")
        direction = "≥" if t.higher else "≤"
        rows.append((t.name, f"{fmt(t.value, 2)} {t.unit}", f"{direction} {t.goal:g}", mark))
    table("targets", ("target", "measured", "goal", "standing"), rows)


async def wait_all(tasks: Sequence[asyncio.Future[Any]], timeout_s: float) -> None:
    """Wait for ``tasks`` at most ``timeout_s``; cancel the stragglers; re-raise a failure."""
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        task.result()
