"""Who may call what (contract §2): every endpoint against every kind of caller and credential.

Owner → 2xx; another user → the very 404 a run that does not exist gets, byte for byte; every
bad credential → 401 ``unauthorized``. The WebSocket gets the same rules in its own words.
Every test here runs once per sign-in mode: the default HS256 secret, RS256 tokens checked
against a JWKS served over real HTTP, and a hook module loaded by ``--auth``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from support_identity import SignedServer

LONG = {"message": "slow", "steps": 100, "delay_ms": 10_000}  # runs until cancelled
TERMINAL_EVENTS = {"agent_completed", "agent_error", "agent_cancelled"}
FINISHED = {"succeeded", "failed", "cancelled", "timed_out"}


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # "{run}" is replaced by a run id
    target: str | None = None  # which run: "done" (finished) or "live" (running)
    body: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"

    def url(self, runs: dict[str, str]) -> str:
        return self.path.replace("{run}", runs[self.target]) if self.target else self.path


ENDPOINTS = [
    Endpoint("GET", "/v1/agents"),
    Endpoint("POST", "/v1/runs", body={"agent": "echo", "input": {"message": "m"}}),
    Endpoint("GET", "/v1/runs"),
    Endpoint("GET", "/v1/runs/{run}", "done"),
    Endpoint("GET", "/v1/runs/{run}/events", "done"),
    Endpoint("GET", "/v1/runs/{run}/stream", "done"),
    Endpoint("POST", "/v1/runs/{run}/cancel", "live"),  # last: the owner's call ends the run
]
RUN_ROUTES = [e for e in ENDPOINTS if e.target]
OWNER_STATUS = {"POST /v1/runs": 202, "POST /v1/runs/{run}/cancel": 202}


# -- the server, in every sign-in mode -------------------------------------------------------


@pytest.fixture
def server(signed_server: SignedServer) -> SignedServer:
    """The same server for every test here, once per mode: HS256, JWKS and hook."""
    return signed_server


# -- helpers ----------------------------------------------------------------------------------


async def call(
    http: httpx.AsyncClient, endpoint: Endpoint, runs: dict[str, str], **kwargs: Any
) -> httpx.Response:
    """One request to ``endpoint`` (a 200 stream is read to its end: its run has finished)."""
    return await http.request(endpoint.method, endpoint.url(runs), json=endpoint.body, **kwargs)


async def finish(http: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    """Read the run's SSE stream to its end (the terminal event), then return the run."""
    async with http.stream("GET", f"/v1/runs/{run_id}/stream") as resp:
        assert resp.status_code == 200
        async for _ in resp.aiter_lines():
            pass
    run = (await http.get(f"/v1/runs/{run_id}")).json()
    assert run["status"] in FINISHED, run
    return run


async def wait_running(http: httpx.AsyncClient, run_id: str) -> None:
    """Poll the run (bounded) until it executes."""
    async with asyncio.timeout(10):
        while True:
            status = (await http.get(f"/v1/runs/{run_id}")).json()["status"]
            if status == "running":
                return
            assert status == "queued", status
            await asyncio.sleep(0.02)


async def start(http: httpx.AsyncClient, input: dict[str, Any]) -> dict[str, Any]:
    resp = await http.post("/v1/runs", json={"agent": "echo", "input": input})
    assert resp.status_code == 202, resp.text
    return resp.json()


def is_unauthorized(resp: httpx.Response) -> bool:
    """401 with exactly ``{"error": {"code": "unauthorized", "message": <sentence>}}``."""
    try:
        body = resp.json()
    except ValueError:
        return False
    return (
        resp.status_code == 401
        and isinstance(body, dict)
        and set(body) == {"error"}
        and isinstance(body["error"], dict)
        and set(body["error"]) == {"code", "message"}
        and body["error"]["code"] == "unauthorized"
        and isinstance(body["error"]["message"], str)
        and bool(body["error"]["message"])
    )


def missing_run_id() -> str:
    return f"run_{secrets.token_urlsafe(16)}"


# -- HTTP -------------------------------------------------------------------------------------


async def test_http_matrix_owner_2xx_other_user_404_bad_credentials_401(server) -> None:
    """Every endpoint by every caller: the run's owner is served (2xx); another user gets 404 on
    run routes (and only their own data elsewhere); every bad credential gets 401 with the
    contract's error body and changes nothing."""
    async with server.client("alice") as alice, server.client("bob") as bob:
        done = await finish(alice, (await start(alice, {"message": "done"}))["run_id"])
        live = await start(alice, LONG)
        await wait_running(alice, live["run_id"])
        runs = {"done": done["run_id"], "live": live["run_id"]}
        wrong: list[str] = []

        async with httpx.AsyncClient(base_url=server.url) as anon:
            for kind, header in server.bad_authorizations("alice").items():
                headers = {} if header is None else {"Authorization": header}
                for endpoint in ENDPOINTS:
                    resp = await call(anon, endpoint, runs, headers=headers)
                    if not is_unauthorized(resp):
                        wrong.append(f"{kind}: {endpoint.name} → {resp.status_code} {resp.text}")

        for endpoint in ENDPOINTS:
            resp = await call(bob, endpoint, runs)
            if endpoint.target:
                expected = (404, "not_found")
                got = (resp.status_code, resp.json().get("error", {}).get("code"))
                if got != expected:
                    wrong.append(f"other user: {endpoint.name} → {resp.status_code} {resp.text}")
            elif resp.status_code != OWNER_STATUS.get(endpoint.name, 200):
                wrong.append(f"other user: {endpoint.name} → {resp.status_code} {resp.text}")

        # Nothing above touched alice's runs or made runs in her name.
        assert (await alice.get(f"/v1/runs/{live['run_id']}")).json()["status"] == "running"
        mine = (await alice.get("/v1/runs")).json()["runs"]
        assert [r["run_id"] for r in mine] == [live["run_id"], done["run_id"]]
        theirs = (await bob.get("/v1/runs")).json()["runs"]
        assert all(r["run_id"] not in runs.values() for r in theirs)
        assert len(theirs) == 1  # the one bob's own POST made

        for endpoint in ENDPOINTS:
            resp = await call(alice, endpoint, runs)
            if resp.status_code != OWNER_STATUS.get(endpoint.name, 200):
                wrong.append(f"owner: {endpoint.name} → {resp.status_code} {resp.text}")
            elif endpoint.target and endpoint.path.endswith("/stream"):
                assert resp.headers["content-type"].startswith("text/event-stream")
                assert f"id: {done['last_seq']}\n" in resp.text
            elif endpoint.target and endpoint.path.endswith("/events"):
                assert len(resp.json()["events"]) == done["last_seq"]
            elif endpoint.target:
                assert resp.json()["run_id"] == runs[endpoint.target]

        assert not wrong, "\n".join(wrong)
        assert (await finish(alice, live["run_id"]))["status"] == "cancelled"
        for client in (alice, bob):
            for run in (await client.get("/v1/runs")).json()["runs"]:
                await finish(client, run["run_id"])


# Authentication happens before any database access: one database is enough for this test.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_token_expired_within_the_leeway_or_with_roles_is_accepted(server) -> None:
    """A credential that expired 10 s ago is still accepted (≤ 30 s leeway), 60 s ago it is
    not; one with roles is an ordinary credential of its user."""
    now = int(time.time())
    cases = {
        "expired 10 s ago": (server.token("alice", exp=now - 10), 200),
        "expired 60 s ago": (server.token("alice", exp=now - 60), 401),
        "with roles": (server.token("alice", roles=["admin"]), 200),
    }
    for what, (token, status) in cases.items():
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
            assert (await http.get("/v1/agents")).status_code == status, what


async def test_another_users_run_gets_byte_identical_404_to_a_missing_run(server) -> None:
    """On every run route, asking for another user's run (finished or running) gets exactly
    the bytes a run id that does not exist gets; listing by their thread shows nothing."""
    async with server.client("alice") as alice, server.client("bob") as bob:
        done = await start(alice, {"message": "done"})
        await finish(alice, done["run_id"])
        live = await start(alice, LONG)
        await wait_running(alice, live["run_id"])

        for endpoint in RUN_ROUTES:
            for missing in (missing_run_id(), "x"):
                absent = await call(bob, endpoint, {"done": missing, "live": missing})
                assert absent.status_code == 404, (endpoint.name, absent.text)
                assert absent.json()["error"]["code"] == "not_found"
                for target in (done, live):
                    ids = {"done": target["run_id"], "live": target["run_id"]}
                    theirs = await call(bob, endpoint, ids)
                    assert theirs.status_code == 404, (endpoint.name, theirs.text)
                    assert theirs.content == absent.content, endpoint.name
                    assert theirs.headers["content-type"] == absent.headers["content-type"]
                    assert target["run_id"] not in theirs.text
            # The owner's own answer for a missing run is the same, too.
            own_absent = await call(alice, endpoint, {"done": "x", "live": "x"})
            assert own_absent.content == absent.content

        by_thread = await bob.get("/v1/runs", params={"thread_id": live["thread_id"]})
        nowhere = await bob.get("/v1/runs", params={"thread_id": "thread_nosuchthread"})
        assert by_thread.content == nowhere.content
        assert by_thread.json() == {"runs": [], "next_cursor": None}

        assert (await alice.get(f"/v1/runs/{live['run_id']}")).json()["status"] == "running"
        assert (await alice.post(f"/v1/runs/{live['run_id']}/cancel")).status_code == 202
        assert (await finish(alice, live["run_id"]))["status"] == "cancelled"


# -- WebSocket --------------------------------------------------------------------------------


async def expect_refused(ws: Any) -> dict[str, Any]:
    """The socket's one message is an unauthorized error, then it is closed with 1008."""
    error = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008
    return error


# Authentication happens before any database access: one database is enough for this test.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_websocket_bad_token_gets_an_error_then_close_1008(server) -> None:
    """A bad token in the upgrade header, or in the first `auth` message (or a first message
    that is not `auth`), gets {"type": "error", "code": "unauthorized"} and close 1008."""
    refused: list[tuple[str, dict[str, Any]]] = []
    for kind, token in server.bad_tokens("alice").items():
        headers = {"Authorization": f"Bearer {token}"}
        async with websockets.connect(server.ws_url, additional_headers=headers) as ws:
            refused.append((f"header: {kind}", await expect_refused(ws)))
        async with websockets.connect(server.ws_url) as ws:
            await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
            refused.append((f"auth message: {kind}", await expect_refused(ws)))
    for first in ({"type": "ping"}, {"type": "auth"}, {"type": "auth", "token": 5}, "nonsense"):
        async with websockets.connect(server.ws_url) as ws:
            await ws.send(first if isinstance(first, str) else orjson.dumps(first).decode())
            refused.append((f"first message {first}", await expect_refused(ws)))
    for what, error in refused:
        assert error["type"] == "error", what
        assert error["code"] == "unauthorized", what
        assert isinstance(error["message"], str), what
        assert error["message"], what


async def test_websocket_commands_on_another_users_run_answer_like_a_missing_run(server) -> None:
    """cancel_run and resume of another user's run get exactly the error a missing run gets
    (not_found), cancel nothing, and send none of its events."""
    async with server.client("alice") as alice:
        live = await start(alice, LONG)
        await wait_running(alice, live["run_id"])
        headers = server.headers("bob")
        async with websockets.connect(server.ws_url, additional_headers=headers) as ws:
            assert orjson.loads(await ws.recv()) == {"type": "ready", "user_id": "bob"}
            answers: dict[str, str] = {}
            for command in ("cancel_run", "resume"):
                for label, run_id in (("theirs", live["run_id"]), ("missing", missing_run_id())):
                    message = {"type": command, "run_id": run_id}
                    if command == "resume":
                        message["after"] = 0
                    await ws.send(orjson.dumps(message).decode())
                    answers[f"{command} {label}"] = await asyncio.wait_for(ws.recv(), 5)
                assert answers[f"{command} theirs"] == answers[f"{command} missing"], command
                error = orjson.loads(answers[f"{command} theirs"])
                assert error["type"] == "error"
                assert error["code"] == "not_found"
                assert live["run_id"] not in answers[f"{command} theirs"]
            # The socket still works, and nothing of alice's run arrived on it.
            await ws.send('{"type": "ping"}')
            assert orjson.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}
        assert (await alice.get(f"/v1/runs/{live['run_id']}")).json()["status"] == "running"
        assert (await alice.post(f"/v1/runs/{live['run_id']}/cancel")).status_code == 202
        assert (await finish(alice, live["run_id"]))["status"] == "cancelled"
