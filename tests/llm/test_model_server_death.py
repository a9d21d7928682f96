"""A model server that dies at its first completion — as llama.cpp built for another CPU does,
with SIGILL — is reported with its exit status, not as a connection error (issue 15).

The server here is a real process that answers ``/v1/models`` and kills itself with SIGILL on
the first ``/v1/chat/completions``, exactly what a mis-built llama.cpp does.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from .model_server import REBUILD_HINT, describe_exit, first_completion, free_port, running

DIES_AT_FIRST_COMPLETION = textwrap.dedent(
    """
    import http.server, json, os, signal, sys

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"data": [{"id": "smollm2-135m"}]}).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            print("completion requested: loading kernels built for another CPU", flush=True)
            os.kill(os.getpid(), signal.SIGILL)

        def log_message(self, *args):
            pass

    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
    """
)


@pytest.fixture
def fake_server(tmp_path: Path) -> tuple[list[str], int]:
    script = tmp_path / "dies.py"
    script.write_text(DIES_AT_FIRST_COMPLETION)
    port = free_port()
    return [sys.executable, str(script), str(port)], port


def test_exit_statuses_are_described_as_a_shell_shows_them() -> None:
    """-4 (killed by SIGILL) is 132 with the signal's name; a plain exit code stays as is."""
    assert describe_exit(-4).startswith("132 (SIGILL: ")
    assert describe_exit(-9).startswith("137 (SIGKILL: ")
    assert describe_exit(1) == "1"


def test_a_server_dying_at_its_first_completion_is_reported_with_its_status(
    fake_server: tuple[list[str], int], tmp_path: Path
) -> None:
    """Ready on /v1/models, then dead on the first completion: the error names exit status
    132 (SIGILL), says how to rebuild, and carries the server's last output."""
    command, port = fake_server
    with running(command, port, tmp_path / "server.log") as server:
        server.wait_ready(30)
        assert server.death() is None
        with pytest.raises(RuntimeError) as raised:
            first_completion(server)
    report = str(raised.value)
    assert "died with exit status 132 (SIGILL: " in report
    assert REBUILD_HINT in report
    assert "loading kernels built for another CPU" in report


def test_a_test_using_a_dead_model_server_fails_with_the_report_not_a_connection_error(
    fake_server: tuple[list[str], int], tmp_path: Path
) -> None:
    """What a model test would see: its HTTP call fails with a connection error, and the
    server's death() gives the report the LLM tests' hook puts first."""
    command, port = fake_server
    with running(command, port, tmp_path / "server.log") as server:
        server.wait_ready(30)
        with pytest.raises(httpx.TransportError):
            httpx.post(f"{server.url}/chat/completions", json={}, timeout=30)
        server.proc.wait(10)
        died = server.death()
    assert died is not None
    assert "exit status 132 (SIGILL" in died


def test_the_ci_probe_exits_3_for_a_server_that_dies(fake_server: tuple[list[str], int]) -> None:
    """`python tests/llm/model_server.py --probe` — what .ci/run runs after installing the
    model — exits 3 (rebuild) and prints the report."""
    command, port = fake_server
    probe = Path(__file__).with_name("model_server.py")
    result = subprocess.run(
        [sys.executable, str(probe), "--probe", "--port", str(port), "--command", *command],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert "exit status 132 (SIGILL" in result.stdout
