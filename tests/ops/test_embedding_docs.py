"""The "Mount corral in your app" examples (README.md, docs/operations.md) work as written:
saved as main.py and served by uvicorn, the page and a run answer under /agents."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from corral.server.auth import issue_token
from support_cluster import free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = {
    "readme": (REPO / "README.md", "## Mount corral in your app"),
    "docs": (REPO / "docs" / "operations.md", "## Mount corral in your app"),
}

pytestmark = pytest.mark.slow


def example(name: str) -> str:
    path, heading = EXAMPLES[name]
    section = path.read_text().split(heading, 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block under {heading!r} in {path.name}"
    return match.group(1)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_the_mount_example_serves_the_page_and_runs_under_the_prefix(
    tmp_path: Path, name: str
) -> None:
    """`uvicorn main:app` on the example: /agents/ is the page, /agents/v1/runs runs echo to
    its end, /agents/corral-client.js is served, and each answer carries an X-Request-ID."""
    (tmp_path / "main.py").write_text(example(name))
    secret = secrets.token_hex(32)
    port = free_port()
    log = tmp_path / "uvicorn.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=tmp_path,
            env={"CORRAL_JWT_SECRET": secret, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            deadline = time.monotonic() + 60
            while True:  # polling the child's readiness endpoint
                assert proc.poll() is None, log.read_text()
                try:
                    if http.get("/agents/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the example did not start"
                time.sleep(0.1)
            page = http.get("/agents/")
            assert page.status_code == 200
            assert 'src="static/app.js"' in page.text
            assert page.headers["x-request-id"]
            assert http.get("/agents/static/app.js").status_code == 200
            assert http.get("/agents/corral-client.js").status_code == 200
            headers = {"Authorization": f"Bearer {issue_token(secret, 'omar')}"}
            run = http.post(
                "/agents/v1/runs",
                json={"agent": "echo", "input": {"message": "mounted"}},
                headers=headers,
            ).json()
            for _ in range(300):
                run = http.get(f"/agents/v1/runs/{run['run_id']}", headers=headers).json()
                if run["status"] == "succeeded":
                    break
                time.sleep(0.05)
            assert run["status"] == "succeeded", run
    finally:
        proc.terminate()
        proc.wait(30)
