"""The server as a process: fresh start, kill -9 and restart, graceful SIGTERM."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
import websockets

from support import check_run_events, spawn_server

pytestmark = pytest.mark.slow


async def _wait_status(client: httpx.AsyncClient, run_id: str, wanted: set[str]) -> dict:
    """Poll the run until its status is one of ``wanted`` (bounded: 30 s)."""
    async with asyncio.timeout(30):
        while True:
            run = (await client.get(f"/v1/runs/{run_id}")).json()
            if run["status"] in wanted:
                return run
            await asyncio.sleep(0.05)


async def _read_until_closed(ws: websockets.ClientConnection) -> None:
    while True:
        await ws.recv()


async def _events(client: httpx.AsyncClient, run_id: str) -> list[dict]:
    resp = await client.get(f"/v1/runs/{run_id}/events")
    assert resp.status_code == 200
    return resp.json()["events"]


def test_fresh_start_creates_data_dir_database_and_private_secret(tmp_path: Path) -> None:
    """`corral serve` with no options in an empty folder makes ./.corral/ with a 0600 secret."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral.cli", "serve", "--port", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("corral listening on "):
                url = line.split(" on ", 1)[1].strip()
                break
        else:
            pytest.fail("corral serve did not start")
        assert url.startswith("http://127.0.0.1:")
        data = tmp_path / ".corral"
        assert (data / "corral.db").exists()
        mode = stat.S_IMODE((data / "secret").stat().st_mode)
        assert mode == 0o600
        token = subprocess.run(
            [sys.executable, "-m", "corral.cli", "token", "alice"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        resp = httpx.get(f"{url}/v1/agents", headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 200, "corral token and corral serve must share the secret"
        assert {a["name"] for a in resp.json()} >= {"echo", "research"}
        assert httpx.get(f"{url}/").status_code == 200
    finally:
        proc.terminate()
        proc.wait(30)
        assert proc.stdout is not None
        proc.stdout.close()


async def test_kill_9_mid_run_then_restart_marks_the_cut_run_interrupted(
    tmp_path: Path, database_url: str, server_processes: list
) -> None:
    """Finished runs keep their events; the run cut by kill -9 ends failed/interrupted."""
    first = spawn_server(tmp_path / "d", database_url)
    server_processes.append(first)
    async with httpx.AsyncClient(base_url=first.url, headers=first.headers("alice")) as http:
        done = (
            await http.post(
                "/v1/runs", json={"agent": "echo", "input": {"message": "keep", "steps": 2}}
            )
        ).json()
        await _wait_status(http, done["run_id"], {"succeeded"})
        kept = await _events(http, done["run_id"])
        cut = (
            await http.post(
                "/v1/runs",
                json={"agent": "echo", "input": {"message": "cut", "steps": 100, "delay_ms": 50}},
            )
        ).json()
        run = await _wait_status(http, cut["run_id"], {"running"})
        assert run["status"] == "running"
    first.kill()

    second = spawn_server(tmp_path / "d", database_url, CORRAL_JWT_SECRET=first.secret)
    server_processes.append(second)
    async with httpx.AsyncClient(base_url=second.url, headers=second.headers("alice")) as http:
        assert await _events(http, done["run_id"]) == kept
        run = (await http.get(f"/v1/runs/{cut['run_id']}")).json()
        assert run["status"] == "failed"
        assert run["error"]["type"] == "interrupted"
        events = await _events(http, cut["run_id"])
        check_run_events(events)
        assert events[-1]["type"] == "agent_error"
        assert events[-1]["data"]["error"]["type"] == "interrupted"
        assert run["last_seq"] == events[-1]["seq"]
    assert second.terminate() == 0


async def test_sigterm_closes_sockets_with_1001_and_lets_short_runs_finish(
    tmp_path: Path, sqlite_url: str, server_processes: list
) -> None:
    """On SIGTERM sockets close with 1001, a short run still succeeds, a long one is interrupted."""
    proc = spawn_server(tmp_path / "d", sqlite_url, CORRAL_SHUTDOWN_GRACE_S="3")
    server_processes.append(proc)
    ws_url = proc.url.replace("http://", "ws://") + "/v1/ws"
    async with (
        httpx.AsyncClient(base_url=proc.url, headers=proc.headers("bob")) as http,
        websockets.connect(ws_url, additional_headers=proc.headers("bob")) as ws,
    ):
        assert orjson.loads(await ws.recv())["type"] == "ready"
        short = (
            await http.post(
                "/v1/runs",
                json={"agent": "echo", "input": {"message": "s", "steps": 5, "delay_ms": 200}},
            )
        ).json()
        long = (
            await http.post(
                "/v1/runs",
                json={"agent": "echo", "input": {"message": "l", "steps": 100, "delay_ms": 200}},
            )
        ).json()
        await _wait_status(http, short["run_id"], {"running"})
        await _wait_status(http, long["run_id"], {"running"})
        proc.proc.send_signal(15)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(_read_until_closed(ws), 10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1001
    assert await asyncio.to_thread(proc.proc.wait, 30) == 0

    again = spawn_server(tmp_path / "d", sqlite_url, CORRAL_JWT_SECRET=proc.secret)
    server_processes.append(again)
    async with httpx.AsyncClient(base_url=again.url, headers=again.headers("bob")) as http:
        s = (await http.get(f"/v1/runs/{short['run_id']}")).json()
        assert s["status"] == "succeeded"
        lr = (await http.get(f"/v1/runs/{long['run_id']}")).json()
        assert lr["status"] == "failed"
        assert lr["error"]["type"] == "interrupted"
        check_run_events(await _events(http, long["run_id"]))


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--agents", "no_such_agents_module"], "no_such_agents_module"),
        (["--no-executor"], "--no-executor"),
        (["--redis-url", "redis://127.0.0.1:1/0"], "PostgreSQL"),
    ],
)
def test_serve_refuses_settings_that_cannot_work_with_exit_2(
    tmp_path: Path, args: list[str], named: str
) -> None:
    """An --agents module that does not load, --no-executor without a cluster, or Redis with
    SQLite: `corral serve` stops before it binds, with one message naming it and status 2
    (not a start-up traceback and status 3)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    result = subprocess.run(
        [sys.executable, "-m", "corral.cli", "serve", "--port", "0", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    assert "listening" not in result.stdout
