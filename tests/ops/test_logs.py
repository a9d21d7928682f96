"""Request ids and log lines of a real `corral serve` process (contract §13)."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from support import ServerProcess, spawn_server

pytestmark = pytest.mark.slow

GENERATED = re.compile(r"[0-9a-f]{32}\Z")


async def serve(
    tmp_path: Path, procs: list[ServerProcess], *args: str, **env: str
) -> ServerProcess:
    db = f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}"
    server = await asyncio.to_thread(spawn_server, tmp_path / "data", db, *args, **env)
    procs.append(server)
    return server


async def wait_status(http: httpx.AsyncClient, run_id: str, wanted: set[str]) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            run = (await http.get(f"/v1/runs/{run_id}")).json()
            if run["status"] in wanted:
                return dict(run)
            await asyncio.sleep(0.05)


def json_lines(server: ServerProcess) -> list[dict[str, Any]]:
    docs = []
    for line in list(server.output.lines):
        if line.startswith("{"):
            docs.append(json.loads(line))
    return docs


async def test_request_ids_are_echoed_or_generated_on_every_response(
    tmp_path: Path, server_processes: list[ServerProcess]
) -> None:
    """A usable client id comes back as it was; none, an over-long one or one with other
    characters gets a fresh 32-hex id; errors (401, 404, 422) and a WebSocket accept carry it."""
    server = await serve(tmp_path, server_processes)
    async with httpx.AsyncClient(base_url=server.url) as http:
        kept = "Abc.def_ghi-" + "9" * 116  # 128 characters of the allowed set
        resp = await http.get("/healthz", headers={"X-Request-ID": kept})
        assert resp.headers["x-request-id"] == kept
        for sent in (None, "x" * 129, "has space", "semi;colon", "ünïcode".encode(), ""):
            headers = {} if sent is None else {"X-Request-ID": sent}
            got = (await http.get("/healthz", headers=headers)).headers["x-request-id"]
            assert GENERATED.match(got), (sent, got)
            assert got != sent
        fresh = {(await http.get("/healthz")).headers["x-request-id"] for _ in range(20)}
        assert len(fresh) == 20
        for resp in (
            await http.get("/v1/runs", headers={"X-Request-ID": "r-401"}),
            await http.get("/nowhere", headers={"X-Request-ID": "r-404"}),
            await http.post(
                "/v1/runs",
                content=b"{not json",
                headers={**server.headers("ann"), "X-Request-ID": "r-422"},
            ),
        ):
            assert resp.headers["x-request-id"] == f"r-{resp.status_code}"
    async with websockets.connect(server.ws_url, additional_headers={"X-Request-ID": "ws-1"}) as ws:
        assert ws.response is not None
        assert ws.response.headers["x-request-id"] == "ws-1"


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_a_requests_log_lines_carry_its_id_and_no_other(
    tmp_path: Path, server_processes: list[ServerProcess], log_format: str
) -> None:
    """With --log-level DEBUG every request logs a line with its own id (given or generated);
    concurrent requests never carry each other's id."""
    args = ["--log-level", "DEBUG", *(["--log-json"] if log_format == "json" else [])]
    server = await serve(tmp_path, server_processes, *args)
    ids = [f"req-{i}-{secrets.token_hex(4)}" for i in range(10)]
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers("bob")) as http:
        answers = await asyncio.gather(
            *(http.get(f"/v1/runs?limit={i + 1}", headers={"X-Request-ID": rid})
              for i, rid in enumerate(ids)),
        )  # fmt: skip
        generated = (await http.get("/v1/agents")).headers["x-request-id"]
    assert [a.headers["x-request-id"] for a in answers] == ids
    for i, rid in enumerate(ids):
        line = await asyncio.to_thread(server.output.wait_for, rid, 10)
        if log_format == "json":
            doc = json.loads(line)
            assert doc["request_id"] == rid
            assert doc["message"].startswith("GET /v1/runs -> 200")
        else:
            assert f"request_id={rid}" in line
            assert "GET /v1/runs -> 200" in line
        others = [o for o in ids if o != rid]
        assert not any(o in line for o in others)
        assert f"limit={i + 1}" not in line  # the query string is never logged
    line = await asyncio.to_thread(server.output.wait_for, generated, 10)
    assert "GET /v1/agents" in line


async def test_each_finished_run_logs_one_line_in_text(
    tmp_path: Path, server_processes: list[ServerProcess]
) -> None:
    """Succeeded, failed, and cancelled while queued: one INFO "run finished" line each, with
    user id, run id, agent, status and duration, and never the input, the output or a token."""
    server = await serve(tmp_path, server_processes, CORRAL_MAX_RUNNING_PER_USER="1")
    canary = f"canary-{secrets.token_hex(4)}"
    token = server.token("cat")
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}
    ) as http:

        async def start(**input: Any) -> str:
            resp = await http.post("/v1/runs", json={"agent": "echo", "input": input})
            assert resp.status_code == 202, resp.text
            return str(resp.json()["run_id"])

        ok = await start(message=canary, steps=2)
        await wait_status(http, ok, {"succeeded"})
        failed = await start(message=canary, fail=True)
        await wait_status(http, failed, {"failed"})
        slow = await start(message=canary, steps=1, delay_ms=3000)
        queued = await start(message=canary)
        assert (await http.post(f"/v1/runs/{queued}/cancel")).status_code == 202
        await wait_status(http, queued, {"cancelled"})
        assert (await http.post(f"/v1/runs/{slow}/cancel")).status_code == 202
        await wait_status(http, slow, {"cancelled"})

    expected = {
        ok: ("succeeded", True),
        failed: ("failed", True),
        queued: ("cancelled", False),  # never started: no duration to give
        slow: ("cancelled", True),  # cancelled while running: the time since it started
    }
    for run_id, (status, timed) in expected.items():
        line = await asyncio.to_thread(server.output.wait_for, f"run_id={run_id} ", 10)
        assert "INFO" in line
        assert "run finished" in line
        assert "user_id=cat " in line
        assert "agent=echo " in line
        assert f"status={status}" in line
        assert ("duration_ms=" in line) is timed
        assert sum(f"run_id={run_id} " in ln for ln in server.output.lines) == 1
    assert "error_type=agent_failed" in server.output.wait_for(f"run_id={failed} ")
    everything = "".join(server.output.lines)
    assert canary not in everything
    assert token not in everything
    assert server.secret not in everything


async def test_each_finished_run_logs_one_json_object_with_log_json(
    tmp_path: Path, server_processes: list[ServerProcess]
) -> None:
    """--log-json: every line is one JSON object; the run's has the same fields as keys."""
    server = await serve(tmp_path, server_processes, "--log-json")
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers("dan")) as http:
        run_id = (
            await http.post("/v1/runs", json={"agent": "echo", "input": {"message": "j"}})
        ).json()["run_id"]
        await wait_status(http, run_id, {"succeeded"})
    await asyncio.to_thread(server.output.wait_for, run_id, 10)
    lines = [ln for ln in server.output.lines if not ln.startswith("corral listening on")]
    docs = [json.loads(ln) for ln in lines]  # every log line parses
    (doc,) = [d for d in docs if d.get("run_id") == run_id]
    assert doc["message"] == "run finished"
    assert doc["level"] == "info"
    assert doc["logger"] == "corral.runs"
    assert (doc["user_id"], doc["agent"], doc["status"]) == ("dan", "echo", "succeeded")
    assert isinstance(doc["duration_ms"], float)
    assert "input" not in doc
    assert "output" not in doc


async def test_start_up_and_shutdown_are_logged_with_settings_but_no_secret(
    tmp_path: Path, server_processes: list[ServerProcess]
) -> None:
    """One start-up line says where the data is and the limits (a password in a URL shows as
    ***, the JWT and metrics secrets not at all); SIGTERM ends with a "stopped" line."""
    metrics_token = f"metrics-{secrets.token_hex(8)}"
    server = await serve(
        tmp_path,
        server_processes,
        CORRAL_METRICS_TOKEN=metrics_token,
        CORRAL_MAX_RUNNING_PER_USER="3",
        CORRAL_ALLOWED_ORIGINS="https://app.example",
    )
    line = server.output.wait_for("corral server starting")
    assert "database=sqlite+aiosqlite:///" in line
    assert "max_running_per_user=3" in line
    assert "allowed_origins=https://app.example" in line
    assert "metrics_token=set" in line
    assert server.terminate() == 0
    server.output.wait_for("corral server stopped", 10)
    everything = "".join(server.output.lines)
    assert metrics_token not in everything
    assert server.secret not in everything


def test_a_password_in_a_database_url_is_masked_in_the_summary() -> None:
    """Settings.summary() hides URL passwords (PostgreSQL, Redis) and never shows secrets."""
    from corral.settings import Settings

    settings = Settings(
        database_url="postgresql+asyncpg://app:pg-pass@db.example/corral",
        redis_url="redis://:redis-pass@cache.example:6379/0",
        jwt_secret="j" * 40,
    )
    text = json.dumps(settings.summary())
    assert "pg-pass" not in text
    assert "redis-pass" not in text
    assert "j" * 40 not in text
    assert "postgresql+asyncpg://app:***@db.example/corral" in text
    assert "redis://:***@cache.example:6379/0" in text
