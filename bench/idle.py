"""idle: many authenticated sockets held open and idle — server memory per socket.

Server VmRSS is read before the sockets open (after a warm-up that opens and closes a few
hundred, so first-use allocations are not charged to the sockets) and again once all are
open and settled; per socket = difference / sockets. The sockets are opened by client
processes (``--clients``, default 2: one process per core), each holding its share, with
handshakes paced (at most 50 in flight per process). Baselines, in the same run: the same
sockets on the minimal Starlette app of ``baselines.py`` (the same uvicorn stack, nothing of
corral) and on the bare ``websockets`` server.

``python bench/idle.py hold PORT SECRET PREFIX FIRST COUNT PER_USER PATH`` is the holder process.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from typing import Any

from harness import (
    BENCH,
    HOST,
    Child,
    Result,
    Target,
    baseline_server,
    corral_serve,
    cpu_s,
    fmt,
    new_secret,
    raise_fd_limit,
    running,
    table,
    token,
    workdir,
)
from load import Countdown
from wire import WsClient, connect_many

PACE = 50


async def hold(
    port: int, secret: str, prefix: str, first: int, count: int, per_user: int, path: str
) -> None:
    """Open ``count`` sockets (users ``first // per_user`` on), report, hold until stdin ends."""
    ready = [False] * count
    all_ready = Countdown(count)

    def marker(i: int) -> Any:
        def on_message(_payload: bytes, _now: float) -> None:
            if not ready[i]:
                ready[i] = True
                all_ready.tick()

        return on_message

    async def one(i: int) -> WsClient | None:
        n = first + i
        user = f"{prefix}-{n // per_user}"
        p = path.replace("{user}", user)
        tok = token(secret, user, 7200) if "{user}" not in path else None
        try:
            return await WsClient.connect(HOST, port, path=p, token=tok, on_message=marker(i))
        except (OSError, TimeoutError):
            return None

    started = time.perf_counter()
    sockets = await connect_many(count, one, concurrency=PACE)
    for s in sockets:
        if s is None:  # a socket that failed to open will never say "ready"
            all_ready.tick()
    await all_ready.wait(60.0)
    held = sum(1 for i, s in enumerate(sockets) if s is not None and ready[i])
    print(f"held {held} of {count} in {time.perf_counter() - started:.1f} s", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    closes = [s.close(2.0) for s in sockets if s is not None]
    for i in range(0, len(closes), 500):
        await asyncio.gather(*closes[i : i + 500], return_exceptions=True)


def _holders(
    child: Child,
    secret: str,
    prefix: str,
    sockets: int,
    clients: int,
    per_user: int,
    path: str,
) -> tuple[list[subprocess.Popen[bytes]], int, float]:
    share = -(-sockets // clients)
    procs = []
    t0 = time.perf_counter()
    for k in range(clients):
        first, count = k * share, min(share, sockets - k * share)
        if count <= 0:
            break
        argv = [sys.executable, str(BENCH / "idle.py"), "hold", str(child.port), secret, prefix]
        argv += [str(first), str(count), str(per_user), path]
        procs.append(
            subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=BENCH)
        )
    held = 0
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()  # bounded: the holder gives up after 60 s
        if line.startswith("held "):
            held += int(line.split()[1])
    return procs, held, time.perf_counter() - t0


def _release(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.close()
    for proc in procs:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


async def measure(
    name: str,
    child: Child,
    secret: str,
    sockets: int,
    clients: int,
    per_user: int,
    path: str,
    settle_s: float = 2.0,
) -> dict[str, Any]:
    # Warm-up: open and close a few hundred sockets so first-use costs are not counted.
    warm, _, _ = await asyncio.to_thread(
        _holders, child, secret, "warm", min(300, sockets), 1, per_user, path
    )
    await asyncio.to_thread(_release, warm)
    await asyncio.sleep(settle_s / 2)
    before = child.rss_kib()
    procs, held, seconds = await asyncio.to_thread(
        _holders, child, secret, "idle", sockets, clients, per_user, path
    )
    try:
        await asyncio.sleep(settle_s)
        after = child.rss_kib()
        c0 = cpu_s(child.pid)
        await asyncio.sleep(2 * settle_s)
        idle_cpu = (cpu_s(child.pid) - c0) / (2 * settle_s)
    finally:
        await asyncio.to_thread(_release, procs)
    per = (after - before) / held if held else None
    return {
        "server": name,
        "sockets": sockets,
        "held": held,
        "connect_seconds": round(seconds, 1),
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_socket": None if per is None else round(per, 2),
        "idle_cpu_pct": round(100 * idle_cpu, 1),
    }


async def main(args: argparse.Namespace) -> Result:
    sockets = args.sockets or (300 if args.quick else 10_000)
    clients = args.clients or (1 if args.quick else 2)
    per_user = 10
    limit = raise_fd_limit()
    secret = new_secret()
    result = Result(
        "idle",
        {"sockets": sockets, "client_processes": clients, "sockets_per_user": per_user},
    )
    result.notes.append(f"RLIMIT_NOFILE raised to {limit} for the servers and the clients")
    with workdir(args.keep) as work:
        corral, base, bare = await asyncio.gather(
            asyncio.to_thread(corral_serve, secret, work),
            asyncio.to_thread(baseline_server, "runs", secret, work),
            asyncio.to_thread(baseline_server, "fanout", secret, work),
        )
        with running(corral, base, bare):
            for name, child, path in (
                ("corral", corral, "/v1/ws"),
                ("starlette", base, "/v1/ws"),
                ("bare ws", bare, "/?user={user}"),
            ):
                row = await measure(
                    name,
                    child,
                    secret,
                    sockets,
                    clients,
                    per_user,
                    path,
                    0.4 if args.quick else 2.0,
                )
                result.rows.append(row)
    c = result.rows[0]
    result.summary = {r["server"]: r["kib_per_socket"] for r in result.rows}
    if c["held"] < sockets:
        result.notes.append(f"corral held {c['held']} of {sockets} sockets")
    result.targets = [Target("memory per idle socket", c["kib_per_socket"], 30, "KiB", False)]
    table(
        f"idle — {sockets:,} sockets from {clients} client process(es)",
        (
            "server",
            "held",
            "connect s",
            "RSS before MiB",
            "RSS after MiB",
            "KiB/socket",
            "idle CPU %",
        ),
        [
            (
                r["server"],
                f"{r['held']:,}",
                fmt(r["connect_seconds"]),
                fmt(r["rss_before_kib"] / 1024),
                fmt(r["rss_after_kib"] / 1024),
                fmt(r["kib_per_socket"]),
                fmt(r["idle_cpu_pct"]),
            )
            for r in result.rows
        ],
    )
    return result


def _main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["hold"])
    parser.add_argument("port", type=int)
    parser.add_argument("secret")
    parser.add_argument("prefix")
    parser.add_argument("first", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("per_user", type=int)
    parser.add_argument("path")
    a = parser.parse_args()
    raise_fd_limit()
    import uvloop

    uvloop.run(hold(a.port, a.secret, a.prefix, a.first, a.count, a.per_user, a.path))


if __name__ == "__main__":
    _main()
