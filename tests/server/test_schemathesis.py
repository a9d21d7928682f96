"""The served OpenAPI document against the server's behaviour: Schemathesis, every check.

A real ``corral serve`` (child process, SQLite) and the Schemathesis CLI, with all its phases
(examples, coverage, fuzzing, stateful) and every check (status codes and response schemas as
documented, no 500s, no valid request refused, auth enforced...). Bounded, so that it takes well
under two minutes; the seed is fixed so that a failure replays exactly (`st replay` ids are in
the output).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import ServerProcess, spawn_server

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
SEED = "20261130"
MAX_EXAMPLES = "150"


def test_schemathesis_finds_no_failure_against_the_served_schema(
    tmp_path: Path, database_url: str, server_processes: list[ServerProcess]
) -> None:
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if cli is None:
        pytest.fail("schemathesis is part of the test extra: pip install -e '.[test]'")
    server = spawn_server(tmp_path / "data", database_url)
    server_processes.append(server)
    token = server.token("schemathesis")
    result = subprocess.run(
        [
            cli,
            "--no-color",
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "all",
            "--header",
            f"Authorization: Bearer {token}",
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            SEED,
        ],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert " passed" in output, output
    assert "failure" not in output.split("SUMMARY")[-1].lower(), output
