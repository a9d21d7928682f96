"""The JavaScript client (clients/js) in Node against a real corral server, directly and through
a TCP proxy that cuts its connections at random points.

The assertions about events live in the Node tests (clients/js/test/*.test.mjs); these tests
start what they need, run ``node --test`` as a child process with the addresses and tokens in
its environment, and require every Node test to run (none skipped) and pass. Without Node 20+
they skip — unless ``CORRAL_TEST_NODE=1``, which makes a missing Node a failure (CI sets it).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, StartServer
from corral.server.auth import issue_token
from cutting_proxy import CuttingProxy

JS = REPO / "clients" / "js"
NODE_REQUIRED_ENV = "CORRAL_TEST_NODE"
SEED_ENV = "CORRAL_TEST_SEED"
NODE_TIMEOUT_S = 100.0

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture(scope="module")
def node() -> list[str]:
    """The command that runs Node 20+ with a global WebSocket (a flag before Node 22)."""
    required = os.environ.get(NODE_REQUIRED_ENV) == "1"

    def unavailable(why: str) -> None:
        if required:
            pytest.fail(f"{NODE_REQUIRED_ENV}=1 but {why}")
        pytest.skip(
            f"{why}: the JavaScript client tests need Node 20+ ({NODE_REQUIRED_ENV}=1 fails)"
        )

    binary = shutil.which("node")
    if binary is None:
        unavailable("node is not on PATH")
        raise AssertionError("unreachable")
    version = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    match = re.match(r"v(\d+)\.", version)
    major = int(match.group(1)) if match else 0
    if major < 20:
        unavailable(f"node is {version or 'of an unknown version'}")
    return [binary, "--experimental-websocket"] if major < 22 else [binary]


async def run_node_tests(node: list[str], files: list[str], **env: str) -> dict[str, int]:
    """Run ``node --test FILES`` in clients/js; fail with its output unless every test passed
    and none was skipped. Returns the TAP summary counts."""
    proc = await asyncio.create_subprocess_exec(
        *node,
        "--test",
        "--test-reporter=tap",
        *files,
        cwd=JS,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), NODE_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        pytest.fail(f"node --test did not finish within {NODE_TIMEOUT_S:g} s:\n{out.decode()}")
    output = out.decode(errors="replace")
    counts = {k: int(v) for k, v in re.findall(r"^# (\w+) (\d+)$", output, re.M)}
    assert proc.returncode == 0, f"node --test exited {proc.returncode}:\n{output}"
    assert counts.get("fail") == 0, output
    assert counts.get("pass", 0) > 0, output
    # A skipped describe() block counts as neither a test nor a skip: look for the directive.
    assert counts.get("skipped", 0) == 0, f"a Node test was skipped:\n{output}"
    assert "# SKIP" not in output, f"a Node test or suite was skipped:\n{output}"
    assert counts.get("todo", 0) == 0, output
    return counts


async def test_js_client_unit_tests_pass_without_a_server(node: list[str]) -> None:
    """The client's server-free tests pass: options, errors, the SSE parser, package files."""
    counts = await run_node_tests(node, ["test/unit.test.mjs"])
    assert counts["pass"] >= 10


@sqlite_only
@pytest.mark.slow
async def test_js_client_against_a_live_server(node: list[str], start_server: StartServer) -> None:
    """Starts over HTTP and the socket, refusals as CorralErrors, listeners, a mid-run join and
    resume, token refresh after 1008, cancel, input refusals, SSE streams and close() — all
    against a real server (clients/js/test/live.test.mjs)."""
    server = await start_server()
    expired = issue_token(server.secret, "expired-user", ttl_s=-300)
    counts = await run_node_tests(
        node, ["test/live.test.mjs"], CORRAL_URL=server.url, CORRAL_TOKEN_EXPIRED=expired
    )
    assert counts["pass"] >= 20


@sqlite_only
@pytest.mark.slow
async def test_js_client_delivers_exactly_once_through_a_cutting_proxy(
    node: list[str], start_server: StartServer
) -> None:
    """Two users' runs, a cancel and SSE streams through a proxy that cuts every connection at
    a random byte: each run's events arrive exactly once, seq 1..N, agent_started first, one
    terminal last, none of the other user's (clients/js/test/faults.test.mjs)."""
    server = await start_server()
    seed = int(os.environ.get(SEED_ENV, "20261127"))
    port = int(server.url.rsplit(":", 1)[1])
    async with CuttingProxy("127.0.0.1", port, seed=seed) as proxy:
        try:
            counts = await run_node_tests(
                node, ["test/faults.test.mjs"], CORRAL_URL=server.url, CORRAL_PROXY_URL=proxy.url
            )
        except BaseException as exc:
            exc.add_note(f"cutting proxy seed {seed} ({SEED_ENV}={seed} repeats the cuts)")
            raise
    assert counts["pass"] >= 4
    # The faults really happened: sockets and streams were cut, more than once.
    assert proxy.cuts["ws"] >= 2, proxy.cuts
    assert proxy.cuts["sse"] >= 1, proxy.cuts


def test_node_tests_are_all_run_by_this_module() -> None:
    """Every clients/js/test/*.test.mjs is run by one of the tests above."""
    source = Path(__file__).read_text()
    files = sorted(p.name for p in (JS / "test").glob("*.test.mjs"))
    assert files == ["faults.test.mjs", "live.test.mjs", "unit.test.mjs"]
    for name in files:
        assert f'"test/{name}"' in source, name
