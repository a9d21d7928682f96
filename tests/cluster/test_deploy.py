"""The deployment files, followed as written: 2 API nodes + 2 workers pass `corral loadtest`."""

from __future__ import annotations

import asyncio
import re
import shlex
import subprocess
import sys
from pathlib import Path

from support import ServerProcess, spawn
from support_cluster import Cluster, free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
BINARY = "/opt/corral/.venv/bin/corral"


def exec_start(unit: str) -> list[str]:
    """The corral arguments of a unit's ExecStart (the part after the binary)."""
    text = (DEPLOY / "systemd" / unit).read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("ExecStart="))
    argv = shlex.split(line.removeprefix("ExecStart="))
    assert argv[0] == BINARY
    return argv[1:]


def env_file() -> dict[str, str]:
    pairs = (
        ln.split("=", 1)
        for ln in (DEPLOY / "corral.env").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    )
    return {k.strip(): v.strip() for k, v in pairs}


def test_compose_commands_are_the_systemd_commands() -> None:
    """compose.yaml runs the same corral commands as the systemd units (ports aside)."""
    compose = (DEPLOY / "compose.yaml").read_text()
    commands = re.findall(r'command: \["corral", (.*)\]', compose)
    argvs = [[a.strip().strip('"') for a in c.split(",")] for c in commands]
    api = [a.replace("%i", "PORT") for a in exec_start("corral-api@.service")]
    worker = exec_start("corral-worker@.service")
    assert sum(argv == worker for argv in argvs) == 2
    apis = [["PORT" if a.isdigit() else a for a in argv] for argv in argvs if argv[0] == "serve"]
    assert apis == [api, api]


async def test_units_as_written_bring_up_a_cluster_that_passes_loadtest(cluster: Cluster) -> None:
    """ExecStart of corral-api@ (×2) and corral-worker@ (×2) with deploy/corral.env's keys,
    pointed at this machine's PostgreSQL and Redis; then `corral loadtest` on each node."""
    env = {
        **env_file(),
        "CORRAL_DATABASE_URL": cluster.database_url,
        "CORRAL_REDIS_URL": cluster.redis_url,
        "CORRAL_JWT_SECRET": cluster.secret,
        "CORRAL_DATA_DIR": str(cluster.data_dir),
    }
    assert set(env) >= {"CORRAL_DATABASE_URL", "CORRAL_REDIS_URL", "CORRAL_JWT_SECRET"}

    def start_api() -> ServerProcess:
        port = free_port()
        args = [a.replace("%i", str(port)) for a in exec_start("corral-api@.service")]
        proc, _line, output = spawn(args, "corral listening on ", **env)
        return ServerProcess(
            proc, f"http://127.0.0.1:{port}", cluster.data_dir, cluster.secret, output
        )

    def start_worker() -> ServerProcess:
        proc, _line, output = spawn(exec_start("corral-worker@.service"), "corral worker ", **env)
        return ServerProcess(proc, "", cluster.data_dir, cluster.secret, output)

    started = await asyncio.gather(
        asyncio.to_thread(start_api),
        asyncio.to_thread(start_api),
        asyncio.to_thread(start_worker),
        asyncio.to_thread(start_worker),
    )
    cluster.nodes.extend(started[:2])
    cluster.workers.extend(started[2:])
    for node in started[:2]:
        result = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "corral.cli",
                "loadtest",
                "--url",
                node.url,
                "--users",
                "20",
                "--runs-per-user",
                "2",
                "--connections-per-user",
                "2",
                "--agent",
                "echo",
                "--steps",
                "3",
                "--token-secret",
                cluster.secret,
                "--no-progress",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
