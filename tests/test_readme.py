"""README.md's walkthrough and custom-agent example work exactly as written."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets

from support import spawn_server

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _block(after_heading: str, lang: str) -> str:
    section = README.split(after_heading, 1)[1]
    match = re.search(rf"```{lang}\n(.*?)```", section, re.S)
    assert match, f"no {lang} block after {after_heading!r}"
    return match.group(1)


def test_custom_agent_example_runs_through_the_factory(tmp_path: Path) -> None:
    """The 'Your own agent' example prints its events and a succeeded outcome."""
    script = tmp_path / "example.py"
    script.write_text(_block("## Your own agent", "python"))
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert '"type":"tool_completed"' in out.stdout
    assert "succeeded" in out.stdout
    assert "'total': 6.5" in out.stdout


@pytest.mark.slow
def test_walkthrough_commands_work_as_written(tmp_path: Path, server_processes: list) -> None:
    """`corral token`, curl POST, SSE stream and /events, then the WebSocket client."""
    proc = spawn_server(tmp_path / ".corral", f"sqlite+aiosqlite:///{tmp_path}/.corral/corral.db")
    server_processes.append(proc)
    env = {
        **os.environ,
        "CORRAL_JWT_SECRET": proc.secret,
        "CORRAL_DATA_DIR": str(tmp_path / ".corral"),
    }
    shell = _block("## Walkthrough", "sh").replace(
        "CORRAL=http://127.0.0.1:8000", f"CORRAL={proc.url}"
    )
    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", shell],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert '"status":"queued"' in out.stdout
    assert "event: agent_completed" in out.stdout
    assert out.stdout.rstrip().endswith("]}")  # the /events JSON document
    client = tmp_path / "client.py"
    client.write_text(_block("A WebSocket client", "python"))
    out = subprocess.run(
        [sys.executable, str(client)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**env, "CORRAL": proc.url},
    )
    assert out.returncode == 0, out.stderr
    assert "'user_id': 'alice'" in out.stdout
    assert "tool_executing" in out.stdout
    assert "agent_completed" in out.stdout


SESSIONS = """
import time
from dataclasses import dataclass


@dataclass
class Session:
    user_id: str
    roles: list
    expires_at: float


async def load_session(session_id):
    if session_id == "s-ann-42":
        return Session("ann", ["finance"], time.time() + 600)
    return None
"""


@pytest.mark.slow
async def test_the_cookie_hook_example_signs_in_over_http_and_websocket(
    tmp_path: Path, server_processes: list
) -> None:
    """The README's `myauth.py`, loaded by `corral serve --auth myauth:authenticate` next to
    an app whose session store knows one cookie: that cookie signs in, any other is a 401."""
    (tmp_path / "myauth.py").write_text(_block("## Use your own identity provider", "python"))
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "sessions.py").write_text(SESSIONS)
    proc = await asyncio.to_thread(
        spawn_server,
        tmp_path / ".corral",
        f"sqlite+aiosqlite:///{tmp_path}/.corral/corral.db",
        "--auth",
        "myauth:authenticate",
        PYTHONPATH=str(tmp_path),
    )
    server_processes.append(proc)
    cookie = {"Cookie": "session=s-ann-42"}
    async with httpx.AsyncClient(base_url=proc.url) as http:
        me = await http.get("/v1/me", headers=cookie)
        assert me.json() == {"user_id": "ann", "roles": ["finance"]}
        other = await http.get("/v1/me", headers={"Cookie": "session=s-nobody"})
        assert other.status_code == 401
        assert other.json()["error"]["code"] == "unauthorized"
    async with websockets.connect(proc.ws_url, additional_headers=cookie) as ws:
        assert orjson.loads(await ws.recv()) == {"type": "ready", "user_id": "ann"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_ask_and_state_example_serves_as_written(start_server: Any) -> None:
    """The 'Ask the user' example, served by a real server: the run waits with the model's
    schema, an approval completes it, and the thread's state keeps what was bought."""
    namespace: dict[str, Any] = {}
    exec(_block("## Ask the user, keep state per thread", "python"), namespace)
    server = await start_server(registry=namespace["registry"])
    async with server.client("alice") as http:
        thread_id = None
        for item in ("tea", "cake"):
            body: dict[str, Any] = {"agent": "buyer", "input": {"item": item}}
            if thread_id:
                body["thread_id"] = thread_id
            run = (await http.post("/v1/runs", json=body)).json()
            thread_id = run["thread_id"]
            asked = await _first_question(http, run["run_id"])
            assert asked["prompt"] == f"Buy {item}?"
            assert asked["schema"]["required"] == ["approved"]
            answer = {"request_id": asked["request_id"], "value": {"approved": True}}
            resp = await http.post(f"/v1/runs/{run['run_id']}/input", json=answer)
            assert resp.status_code == 202, resp.text
            done = await _finished(http, run["run_id"])
            assert done["status"] == "succeeded", done
        thread = (await http.get(f"/v1/threads/{thread_id}")).json()
    assert done["output"] == {"bought": True, "so_far": ["tea", "cake"]}
    assert thread["state"] == {"bought": ["tea", "cake"]}


async def _first_question(http: Any, run_id: str) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            events = (await http.get(f"/v1/runs/{run_id}/events")).json()["events"]
            asked = [e["data"] for e in events if e["type"] == "input_requested"]
            if asked:
                return dict(asked[0])
            await asyncio.sleep(0.02)


async def _finished(http: Any, run_id: str) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            run = (await http.get(f"/v1/runs/{run_id}")).json()
            if run["status"] not in ("queued", "running", "waiting"):
                return dict(run)
            await asyncio.sleep(0.02)


@pytest.mark.slow
def test_clients_python_example_works_as_written(tmp_path: Path, server_processes: list) -> None:
    """The 'Clients' Python example: a streamed research run, its answer, then a session."""
    proc = spawn_server(tmp_path / ".corral", f"sqlite+aiosqlite:///{tmp_path}/.corral/corral.db")
    server_processes.append(proc)
    env = {
        **os.environ,
        "CORRAL_JWT_SECRET": proc.secret,
        "CORRAL_DATA_DIR": str(tmp_path / ".corral"),
        "CORRAL": proc.url,
    }
    script = tmp_path / "clients.py"
    script.write_text(_block("## Clients", "python"))
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "1 agent_started"
    assert "12 * 7 = 84." in lines  # the answer, read back with get_run
    assert lines[-1] == "True 8 agent_completed"
