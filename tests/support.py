"""Helpers for tests: child-process servers, event checks."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.server.auth import issue_token

# The run object of contract §3: exactly these keys.
RUN_FIELDS = frozenset(
    {
        "run_id",
        "thread_id",
        "agent",
        "status",
        "input",
        "output",
        "error",
        "created_at",
        "started_at",
        "finished_at",
        "last_seq",
    }
)

# -- subprocess servers -----------------------------------------------------------------------


class Output:
    """The lines a child process printed, collected by a thread; waitable."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()

    def add(self, line: str) -> None:
        with self._cond:
            self.lines.append(line)
            self._cond.notify_all()

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        """The first line containing ``text``, waiting up to ``timeout`` s for it."""
        with self._cond:
            found = self._cond.wait_for(
                lambda: next((ln for ln in self.lines if text in ln), None), timeout
            )
        if found is None:
            raise TimeoutError(f"no line with {text!r} within {timeout} s")
        return found


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str]
    url: str
    data_dir: Path
    secret: str
    output: Output

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/v1/ws"

    def token(self, user: str) -> str:
        return issue_token(self.secret, user)

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}"}

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


def spawn_server(
    data_dir: Path,
    database_url: str,
    *args: str,
    preexec_fn: Callable[[], None] | None = None,
    **env: str,
) -> ServerProcess:
    """``corral serve --port 0`` as a child process; returns once it listens.

    ``preexec_fn`` runs in the child before corral starts (resource limits)."""
    secret = env.pop("CORRAL_JWT_SECRET", None) or secrets.token_hex(32)
    cmd = ["serve", "--port", "0", "--data-dir", str(data_dir), *args]
    proc, line, output = spawn(
        cmd,
        "corral listening on ",
        preexec_fn=preexec_fn,
        CORRAL_JWT_SECRET=secret,
        CORRAL_DATABASE_URL=database_url,
        **env,
    )
    return ServerProcess(proc, line.split(" on ", 1)[1].strip(), data_dir, secret, output)


def spawn(
    args: list[str],
    ready_prefix: str,
    preexec_fn: Callable[[], None] | None = None,
    **env: str,
) -> tuple[subprocess.Popen[str], str, Output]:
    """``corral ARGS`` as a child process; returns it and its line starting ``ready_prefix``."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=full_env,
        preexec_fn=preexec_fn,
    )
    assert proc.stdout is not None
    output = Output()
    for line in proc.stdout:
        output.add(line)
        if line.startswith(ready_prefix):
            _drain(proc, output)
            return proc, line, output
    proc.wait(10)
    proc.stdout.close()
    raise RuntimeError(f"corral {args[0]} did not start:\n" + "".join(output.lines))


def _drain(proc: subprocess.Popen[str], output: Output) -> None:
    """Keep reading the child's output so it never blocks on a full pipe."""

    def pump() -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                output.add(line)

    threading.Thread(target=pump, daemon=True).start()


def check_run_events(events: list[dict[str, Any]]) -> None:
    """Assert the contract's rules for one run's events, in the order received."""
    assert events, "no events"
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(events) + 1)), f"seq not contiguous: {seqs}"
    terminal = {"agent_completed", "agent_error", "agent_cancelled"}
    types = [e["type"] for e in events]
    assert types[-1] in terminal, f"last event is {types[-1]}"
    assert sum(t in terminal for t in types) == 1, f"terminal events: {types}"
    if len(events) > 1:
        assert types[0] == "agent_started", f"first event is {types[0]}"
    open_calls: set[str] = set()
    for e in events:
        if e["type"] == "tool_executing":
            open_calls.add(e["data"]["call_id"])
        elif e["type"] == "tool_completed":
            open_calls.remove(e["data"]["call_id"])
    assert not open_calls, f"tool calls never completed: {open_calls}"
