"""deploy/Dockerfile, checked without docker (it cannot build here): its instructions parsed,
what it copies present, and its CMD and HEALTHCHECK run as written against a real server."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from support import spawn
from support_cluster import free_port

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; comments dropped, continued lines joined."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        result.append((keyword.upper(), args.strip()))
    assert not pending, "a continued line never ends"
    return result


def only(name: str) -> str:
    found = [args for keyword, args in instructions() if keyword == name]
    assert len(found) == 1, f"{name}: {found}"
    return found[0]


def env_values() -> dict[str, str]:
    values: dict[str, str] = {}
    for keyword, args in instructions():
        if keyword == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                values[key] = value
    return values


def healthcheck_argv() -> list[str]:
    args = only("HEALTHCHECK")
    options, _, command = args.partition("CMD ")
    assert "--interval=" in options
    assert "--timeout=" in options
    argv: list[str] = json.loads(command)  # exec form: no shell needed in the image
    return argv


def test_the_image_runs_corral_serve_as_a_non_root_user_with_port_and_healthcheck() -> None:
    """FROM a Python 3.11+ image; CMD `corral serve` (exec form); EXPOSE the port corral
    listens on; HEALTHCHECK asks /readyz; the last USER is a created, non-root user."""
    base = only("FROM")
    assert base.startswith("python:3.1"), base
    assert json.loads(only("CMD")) == ["corral", "serve"]
    env = env_values()
    assert only("EXPOSE") == env["CORRAL_PORT"] == "8000"
    assert env["CORRAL_HOST"] == "0.0.0.0"  # reachable from outside the container
    assert "/readyz" in " ".join(healthcheck_argv())
    users = [args for keyword, args in instructions() if keyword == "USER"]
    assert users
    assert users[-1] not in ("root", "0", "0:0")
    runs = " ".join(args for keyword, args in instructions() if keyword == "RUN")
    assert "useradd" in runs
    assert users[-1] in runs.split()
    keywords = [k for k, _ in instructions()]
    assert keywords.index("USER") < keywords.index("CMD")


def test_everything_it_copies_exists_and_nothing_else_is_copied() -> None:
    """Each COPY source exists in the build context (the repository root); the context is
    never copied whole (no virtualenv, .corral data or secret of the build machine)."""
    copies = [shlex.split(args) for keyword, args in instructions() if keyword in ("COPY", "ADD")]
    assert copies
    for argv in copies:
        sources = [a for a in argv[:-1] if not a.startswith("--")]
        assert sources
        for source in sources:
            assert source not in (".", "./", "*"), f"COPY {source} copies the whole context"
            assert (REPO / source).exists(), f"COPY {source}: no such file in the repository"
    assert (REPO / "pyproject.toml").exists()


@pytest.mark.slow
def test_cmd_and_healthcheck_as_written_work_against_a_real_server(tmp_path: Path) -> None:
    """The CMD run with the image's environment (bound to loopback here) starts corral; the
    HEALTHCHECK command then exits 0, and non-zero once the server has stopped."""
    port = free_port()
    env = {
        **env_values(),
        "CORRAL_HOST": "127.0.0.1",  # tests listen on loopback only
        "CORRAL_PORT": str(port),
        "CORRAL_DATA_DIR": str(tmp_path),
    }
    cmd = json.loads(only("CMD"))
    assert cmd[0] == "corral"
    proc, _line, _output = spawn(cmd[1:], "corral listening on ", **env)
    check = healthcheck_argv()
    assert check[0] == "python"
    run_env = {**os.environ, "CORRAL_PORT": str(port)}
    try:
        healthy = subprocess.run(
            [sys.executable, *check[1:]], env=run_env, capture_output=True, timeout=30
        )
        assert healthy.returncode == 0, healthy.stderr
    finally:
        proc.terminate()
        proc.wait(30)
    down = subprocess.run(
        [sys.executable, *check[1:]], env=run_env, capture_output=True, timeout=30
    )
    assert down.returncode != 0
