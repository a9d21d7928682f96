"""``corral loadtest`` against real servers: a correct one passes, a broken one is caught.

The command runs as a child process (``python -m corral.cli loadtest``) against real servers
in this test's event loop, so what is tested is the tool a user runs, exit status included;
one test awaits the library entry point against a ``corral serve`` child process instead.
The broken servers are in ``conftest.py`` beside this file.
"""

from __future__ import annotations

import ast
import asyncio
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

import corral.loadtest
from conftest import LiveServer
from corral.cli import app
from corral.loadtest import ConnectionVerifier, Kind, LoadtestConfig, Violations, run_loadtest
from support import ServerProcess, spawn_server

SMALL = ("--users", "20", "--connections-per-user", "2", "--runs-per-user", "2", "--steps", "3")
# Enough users that a misrouted frame has somewhere to go, few enough to stay fast.
FAULTY = ("--users", "8", "--connections-per-user", "2", "--runs-per-user", "2", "--steps", "3")
ECHO_EVENTS = 1 + 3 * 3 + 1


async def loadtest(
    url: str, tmp_path: Path, *args: str, **env: str
) -> tuple[int, str, dict[str, Any]]:
    """Run ``corral loadtest`` as a child process; its exit status, output and JSON report."""
    report = tmp_path / f"report-{uuid.uuid4().hex[:8]}.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "corral.cli",
        "loadtest",
        "--url",
        url,
        "--json",
        str(report),
        "--timeout-s",
        "20",
        "--no-progress",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "250", **env},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    doc = orjson.loads(report.read_bytes()) if report.exists() else {}
    return proc.returncode, out.decode(), doc


def counts(report: dict[str, Any]) -> dict[str, int]:
    return {kind: entry["count"] for kind, entry in report["violations"].items()}


# -- a correct server -------------------------------------------------------------------------


async def test_small_loadtest_passes_against_a_correct_server(
    server: LiveServer, tmp_path: Path
) -> None:
    """20 users x 2 connections x 2 echo runs: exit 0, every run complete on every connection."""
    code, out, report = await loadtest(
        server.url, tmp_path, *SMALL, CORRAL_JWT_SECRET=server.secret
    )
    assert code == 0, out
    assert "PASSED" in out
    assert report["passed"] is True
    assert report["violations"] == {}
    assert report["errors"] == {}
    assert report["runs"]["started"] == report["runs"]["completed"] == 40
    assert report["runs"]["outcomes"] == {"agent_completed": 40}
    # Every run's events reached both connections of its user, each exactly once.
    assert report["events"]["delivered"] == 40 * 2 * ECHO_EVENTS
    assert report["events"]["duplicates"] == 0
    assert report["users_connected"] == 20
    for name in ("start", "completion"):
        latency = report["latency_ms"][name]
        assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert report["runs"]["per_s"] > 0
    assert report["events"]["per_s"] > 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_runner_in_process_measures_a_child_servers_memory_and_cpu(
    tmp_path: Path, database_url: str, server_processes: list[ServerProcess]
) -> None:
    """The library entry point, awaited in-process against ``corral serve``, reads its /proc."""
    child = await asyncio.to_thread(spawn_server, tmp_path / "data", database_url)
    server_processes.append(child)
    config = LoadtestConfig(
        url=child.url,
        users=5,
        runs_per_user=2,
        connections_per_user=3,
        steps=2,
        token_secret=child.secret,
        server_pid=child.proc.pid,
        timeout_s=20,
    )
    report = await run_loadtest(config)
    assert report.passed, report.failures
    assert report.runs_completed == 10
    assert report.events == 10 * 3 * (2 + 3 * 2)
    assert report.server is not None
    assert report.server["before_bytes"] > 0
    assert report.server["peak_bytes"] >= report.server["before_bytes"]
    assert report.server["per_user_bytes"] is not None
    assert report.server["cpu_s"] is not None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_tokens_can_come_from_a_command(server: LiveServer, tmp_path: Path) -> None:
    """``--token-command 'corral token {user}'`` runs once per user; its tokens are accepted."""
    command = f"{sys.executable} -m corral.cli token {{user}} --ttl 600"
    code, out, report = await loadtest(
        server.url,
        tmp_path,
        "--users",
        "2",
        "--runs-per-user",
        "1",
        "--token-command",
        command,
        CORRAL_JWT_SECRET=server.secret,  # read by `corral token`, not by the loadtest
    )
    assert code == 0, out
    assert report["token_source"].startswith("from the command")
    assert report["runs"]["completed"] == 2


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_rerun_with_the_same_users_passes_again(server: LiveServer) -> None:
    """Two runs with one user_prefix (the same user ids) both pass: every invocation's starts
    carry idempotency keys of their own, never an earlier run's (which would be a conflict)."""
    config = LoadtestConfig(
        url=server.url,
        users=3,
        runs_per_user=2,
        token_secret=server.secret,
        timeout_s=20,
        user_prefix=f"rerun-{uuid.uuid4().hex[:6]}",
    )
    for _ in range(2):
        report = await run_loadtest(config)
        assert report.passed, report.failures
        assert report.to_dict()["errors"] == {}
        assert report.runs_completed == 6


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sockets_dropped_again_and_again_lose_nothing(server: LiveServer) -> None:
    """The disconnect-and-resume soak, small: every connection aborts its own socket about every
    0.3 s while runs stream; the loadtest reconnects, resumes and retries lost starts by key —
    and still every run is complete, in order, exactly once (duplicates only after a resume),
    with no error and nothing foreign."""
    config = LoadtestConfig(
        url=server.url,
        users=10,
        connections_per_user=2,
        runs_per_user=4,
        steps=15,
        delay_ms=20,
        token_secret=server.secret,
        timeout_s=30,
        drop_every_s=0.3,
        fail_on_errors=True,
    )
    report = await run_loadtest(config)
    doc = report.to_dict()
    assert report.passed, report.failures
    assert doc["errors"] == {}
    assert doc["violations"] == {}
    assert report.runs_completed == 40
    assert doc["drops"] > 10, "the chaos did not happen"
    assert doc["reconnects"] >= doc["drops"]


# -- a broken server --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "expected", "detail"),
    [
        (
            "misroute",
            {"isolation.foreign_canary": 1, "isolation.foreign_run": 1},
            "received another user's canary ltcanary",
        ),
        # echo's seq 3 is its first tool_executing, the frame the injector drops.
        ("drop", {"completeness.missing_events": 1}, "missing seq 3; terminal agent_completed"),
        ("reorder", {"order.out_of_order": 1}, "seq 2 (agent_thinking) arrived after seq 3"),
    ],
)
async def test_loadtest_catches_a_broken_server(
    start_broken_server: Any, tmp_path: Path, fault: str, expected: dict[str, int], detail: str
) -> None:
    """One misrouted, dropped or reordered frame: exit 1, naming that violation and no other."""
    live, injector = await start_broken_server(fault)
    code, out, report = await loadtest(live.url, tmp_path, *FAULTY, "--token-secret", live.secret)
    assert injector.injected is not None, f"the {fault} fault was never committed"
    assert code == 1, out
    assert "FAILED" in out
    assert counts(report) == expected, report["violations"]
    by_category = {"isolation": 0, "completeness": 0, "order": 0}
    for kind, n in expected.items():
        by_category[kind.split(".")[0]] += n
        assert kind in out
    assert report["violations_by_category"] == by_category
    examples = [e for entry in report["violations"].values() for e in entry["examples"]]
    assert any(detail in e for e in examples), examples
    assert report["passed"] is False


async def test_loadtest_resumes_after_the_server_closes_a_slow_socket(
    start_broken_server: Any, tmp_path: Path
) -> None:
    """A socket closed with 1013 mid-run is reconnected and resumed: no violation, exit 0."""
    live, injector = await start_broken_server("disconnect")
    code, out, report = await loadtest(live.url, tmp_path, *FAULTY, "--token-secret", live.secret)
    assert injector.injected is not None
    assert code == 0, out
    assert report["violations"] == {}
    assert report["errors"] == {"ws_close:1013": 1}
    assert report["reconnects"] == 1
    assert report["runs"]["completed"] == 16
    assert report["events"]["duplicates"] == 0
    # Each event reached each connection once, plus what the contract allows a resume to repeat.
    resent = report["events"]["duplicates_after_resume"]
    assert report["events"]["delivered"] == 16 * 2 * ECHO_EVENTS + resent


# -- the CLI and the verifier on their own ----------------------------------------------------


def test_loadtest_is_a_pure_client() -> None:
    """corral.loadtest imports nothing of the server, core, store, bus or agents."""
    package = Path(corral.loadtest.__file__).parent
    internal = ("corral.server", "corral.core", "corral.store", "corral.bus", "corral.agents")
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                assert not name.startswith(internal), f"{path.name} imports {name}"


def test_conflicting_token_options_exit_2() -> None:
    """--token-secret with --token-command is a usage error, reported before any connection."""
    result = CliRunner().invoke(
        app,
        ["loadtest", "--url", "http://127.0.0.1:9", "--token-secret", "s", "--token-command", "x"],
    )
    assert result.exit_code == 2
    assert "not both" in result.output


def _verifier() -> tuple[ConnectionVerifier, Violations]:
    violations = Violations()
    return ConnectionVerifier("u1", "ltcanary" + "a" * 24, "u1#0", violations), violations


def test_duplicates_are_violations_except_after_a_resume() -> None:
    """The same (run_id, seq) twice is an order violation, unless the run was resumed."""
    verifier, violations = _verifier()
    for seq, kind in [(1, "agent_started"), (2, "agent_thinking"), (2, "agent_thinking")]:
        verifier.on_event("r1", seq, kind, None)
    assert violations.counts == {Kind.DUPLICATE: 1}
    assert verifier.resyncing("r2") == 0
    kinds = {1: "agent_started", 4: "agent_completed"}
    for seq in (3, 1, 2, 3, 4):  # a live event overtakes the replay, then arrives again
        verifier.on_event("r2", seq, kinds.get(seq, "agent_thinking"), None)
    assert violations.counts == {Kind.DUPLICATE: 1}
    assert verifier.duplicates_tolerated == 1


def test_a_late_event_is_out_of_order_and_a_missing_one_incomplete() -> None:
    """seq 3 before 2 is one order violation; a seq that never comes is one completeness one."""
    verifier, violations = _verifier()
    for seq, kind in [(1, "agent_started"), (3, "agent_thinking"), (2, "agent_thinking")]:
        verifier.on_event("r1", seq, kind, None)
    verifier.on_event("r1", 4, "agent_completed", None)
    for seq, kind in [(1, "agent_started"), (3, "agent_completed")]:
        verifier.on_event("r2", seq, kind, None)
    assert verifier.finish({"r1", "r2", "r3"}, expected_events=4) == set()
    assert violations.counts == {
        Kind.OUT_OF_ORDER: 1,
        Kind.MISSING_EVENTS: 1,
        Kind.MISSING_RUN: 1,
    }
    example = violations.examples[Kind.MISSING_EVENTS][0]
    assert "missing seq 2; terminal agent_completed at seq 3" in example


def test_a_foreign_canary_is_found_in_any_frame() -> None:
    """Another user's canary anywhere in a frame is an isolation violation; one's own is not."""
    verifier, violations = _verifier()
    verifier.check_frame(b'{"text": "ltcanary' + b"a" * 24 + b' run 1"}')
    assert violations.total == 0
    verifier.check_frame(b'{"text": "ltcanary' + b"b" * 24 + b'", "x": "ltcanary' + b"a" * 24)
    assert violations.counts == {Kind.FOREIGN_CANARY: 1}
    assert "ltcanary" + "b" * 24 in violations.examples[Kind.FOREIGN_CANARY][0]
