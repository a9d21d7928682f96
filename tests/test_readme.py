"""README.md's walkthrough and custom-agent example work exactly as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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
