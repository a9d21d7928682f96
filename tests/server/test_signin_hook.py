"""``corral serve --auth MODULE:ATTR``: a team's hook module, loaded by a real child process,
signs in a cookie session over HTTP, SSE and WebSocket (contract §2)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from support import ServerProcess, spawn_server
from support_identity import HOOK_SOURCE, hook_credential, unauthorized, unavailable, write_module

pytestmark = pytest.mark.slow

TIMEOUT = 10.0
TERMINAL = {"agent_completed", "agent_error", "agent_cancelled"}


async def serve_with_hook(
    tmp_path: Path, procs: list[ServerProcess], attr: str = "authenticate"
) -> ServerProcess:
    """``corral serve --auth <module>:<attr>`` with the hook module in its own folder."""
    hooks = tmp_path / "hooks"
    hooks.mkdir(exist_ok=True)
    name = write_module(hooks, HOOK_SOURCE, "team_hook")
    proc = await asyncio.to_thread(
        spawn_server,
        tmp_path / "data",
        f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}",
        "--auth",
        f"{name}:{attr}",
        PYTHONPATH=str(hooks),
    )
    procs.append(proc)
    return proc


def cookie(user: str, *roles: str) -> dict[str, str]:
    return {"Cookie": f"theme=dark; team_session={hook_credential(user, roles)}"}


async def recv(ws: websockets.ClientConnection) -> dict:
    return orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def closed_with(ws: websockets.ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), TIMEOUT)
    return closed.value.rcvd.code if closed.value.rcvd is not None else None


async def test_a_cookie_session_signs_in_over_http_sse_and_websocket(
    tmp_path: Path, server_processes: list[ServerProcess]
) -> None:
    """The hook reads the browser's cookie: GET /v1/me answers its user and roles, a run is
    started over HTTP and streamed over SSE, and a socket opened with the cookie is ready at
    once (no `auth` message) and starts and follows a run."""
    proc = await serve_with_hook(tmp_path, server_processes)
    async with httpx.AsyncClient(base_url=proc.url, headers=cookie("ann", "analyst")) as http:
        me = await http.get("/v1/me")
        assert me.json() == {"user_id": "ann", "roles": ["analyst"]}
        run = await http.post("/v1/runs", json={"agent": "echo", "input": {"message": "hi"}})
        assert run.status_code == 202, run.text
        async with http.stream("GET", f"/v1/runs/{run.json()['run_id']}/stream") as stream:
            assert stream.status_code == 200
            body = (await stream.aread()).decode()
        assert "event: agent_completed" in body
    ws_url = proc.url.replace("http://", "ws://") + "/v1/ws"
    async with websockets.connect(ws_url, additional_headers=cookie("ann")) as ws:
        assert await recv(ws) == {"type": "ready", "user_id": "ann"}
        start = {"type": "start_run", "agent": "echo", "input": {"message": "x"}, "client_ref": "a"}
        await ws.send(orjson.dumps(start).decode())
        accepted = await recv(ws)
        assert accepted["type"] == "run_accepted", accepted
        while (event := await recv(ws))["type"] not in TERMINAL:
            assert event["run_id"] == accepted["run"]["run_id"]
        assert event["type"] == "agent_completed"


async def test_with_no_cookie_the_hook_is_asked_again_with_the_auth_message_token(
    tmp_path: Path, server_processes: list[ServerProcess]
) -> None:
    """The upgrade carries no session, so the hook finds no user; the first `auth` message's
    token is handed to the hook and signs in. A token the hook refuses is `unauthorized`
    and 1008, with the hook's own reason."""
    proc = await serve_with_hook(tmp_path, server_processes)
    ws_url = proc.url.replace("http://", "ws://") + "/v1/ws"
    async with websockets.connect(ws_url) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": hook_credential("bea")}).decode())
        assert await recv(ws) == {"type": "ready", "user_id": "bea"}
    async with websockets.connect(ws_url) as ws:
        forged = hook_credential("bea")[:-6] + "abcdef"
        await ws.send(orjson.dumps({"type": "auth", "token": forged}).decode())
        error = await recv(ws)
        assert error["code"] == "unauthorized"
        assert "signature" in error["message"]
        assert forged not in error["message"]
        assert await closed_with(ws) == 1008
    async with httpx.AsyncClient(base_url=proc.url) as http:
        resp = await http.get("/v1/agents")
        assert unauthorized(resp)
        assert "sign" in resp.json()["error"]["message"]


async def test_a_raising_hook_is_503_and_logged_never_a_500_or_a_sign_in(
    tmp_path: Path, server_processes: list[ServerProcess]
) -> None:
    """A hook that raises answers HTTP and SSE with 503 `unavailable` (corral's error shape,
    Retry-After), the socket with `unavailable` and 1013, and the server logs the traceback."""
    proc = await serve_with_hook(tmp_path, server_processes, attr="broken")
    async with httpx.AsyncClient(base_url=proc.url, headers=cookie("ann")) as http:
        for path in ("/v1/me", "/v1/agents", "/v1/runs", "/v1/runs/run_x/stream"):
            resp = await http.get(path)
            assert unavailable(resp), (path, resp.status_code, resp.text)
            assert "directory service" not in resp.text
        resp = await http.post("/v1/runs", json={"agent": "echo", "input": {"message": "m"}})
        assert unavailable(resp), resp.text
    ws_url = proc.url.replace("http://", "ws://") + "/v1/ws"
    async with websockets.connect(ws_url, additional_headers=cookie("ann")) as ws:
        error = await recv(ws)
        assert (error["type"], error["code"]) == ("error", "unavailable")
        assert await closed_with(ws) == 1013
    line = proc.output.wait_for("the authentication hook", TIMEOUT)
    assert "raised" in line
    proc.output.wait_for("RuntimeError: the directory service is down", TIMEOUT)
    assert not any(" 500" in ln or "request failed" in ln for ln in proc.output.lines)
