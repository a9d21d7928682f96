"""A sign-in that expires while in use (contract §2): an open socket is closed with 1008 after
an `error` saying so, commands after that run nothing, and an SSE stream ends.

The credentials expired 28 s ago: within the 30 s leeway they still sign in, and run out about
two seconds later, while the test watches.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from corral.auth.hook import HookAuthenticator
from corral.auth.identity import Identity
from corral.auth.policy import MAX_LEEWAY_S
from corral.server.signin import SignIn
from support_identity import StartSigned

# Expiry is about signing in; the store is not involved: one database is enough.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

TIMEOUT = 15.0
LONG = {"message": "slow", "steps": 100, "delay_ms": 10_000}  # runs until cancelled
NEAR_EXPIRY = MAX_LEEWAY_S - 2  # expired this long ago: valid for about two more seconds


async def read_until_closed(ws: Any) -> tuple[list[dict[str, Any]], int | None]:
    messages: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(TIMEOUT):
            while True:
                messages.append(orjson.loads(await ws.recv()))
    except ConnectionClosed as exc:
        return messages, exc.rcvd.code if exc.rcvd is not None else None


@sqlite_only
@pytest.mark.parametrize("mode", ["secret", "hook"])
async def test_an_open_socket_is_closed_1008_when_its_sign_in_expires(
    start_signed: StartSigned, mode: str
) -> None:
    """The socket works until the credential runs out, then gets `unauthorized` saying to
    sign in again and is closed with 1008; a `start_run` sent after that starts nothing."""
    server = await start_signed(mode)
    expiring = server.headers("alice", exp=time.time() - NEAR_EXPIRY)
    async with websockets.connect(server.ws_url, additional_headers=expiring) as ws:
        assert orjson.loads(await ws.recv()) == {"type": "ready", "user_id": "alice"}
        await ws.send('{"type": "ping"}')
        assert orjson.loads(await ws.recv()) == {"type": "pong"}
        opened = time.monotonic()
        messages, code = await read_until_closed(ws)
        lasted = time.monotonic() - opened
        assert code == 1008
        assert messages[-1]["type"] == "error"
        assert messages[-1]["code"] == "unauthorized"
        assert "expired" in messages[-1]["message"]
        assert lasted < 10, lasted
        late = {"type": "start_run", "agent": "echo", "input": {"message": "late"}}
        with pytest.raises(ConnectionClosed):
            await ws.send(orjson.dumps(late).decode())
    async with server.client("alice") as http:
        assert (await http.get("/v1/runs")).json()["runs"] == []


@sqlite_only
async def test_commands_are_answered_until_the_expiry_and_refused_after_it(
    start_signed: StartSigned,
) -> None:
    """Ping after ping is answered while the sign-in is valid; the answer to the first
    command at or after its expiry is `unauthorized` and close 1008, never a pong."""
    server = await start_signed("secret")
    expiring_at = time.time() - NEAR_EXPIRY
    headers = server.headers("bob", exp=expiring_at)
    answers: list[dict[str, Any]] = []

    async def ping_until_closed(ws: Any) -> int | None:
        try:
            async with asyncio.timeout(TIMEOUT):
                while True:  # request, answer, request...: paced by the server's answers
                    sent_at = time.time()
                    await ws.send('{"type": "ping"}')
                    answers.append({**orjson.loads(await ws.recv()), "sent_at": sent_at})
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else None

    async with websockets.connect(server.ws_url, additional_headers=headers) as ws:
        assert orjson.loads(await ws.recv())["type"] == "ready"
        assert await ping_until_closed(ws) == 1008
    pongs, last = answers[:-1], answers[-1]
    assert len(pongs) > 1
    assert all(a["type"] == "pong" for a in pongs)
    assert (last["type"], last["code"]) == ("error", "unauthorized")
    valid_until = expiring_at + MAX_LEEWAY_S
    # No command sent after the expiry is answered (when an answer is read is up to this
    # client's scheduling on a loaded machine; when the ping was sent is not).
    assert all(a["sent_at"] <= valid_until + 0.5 for a in pongs)


@sqlite_only
@pytest.mark.parametrize("mode", ["secret", "hook"])
async def test_an_sse_stream_ends_when_its_sign_in_expires(
    start_signed: StartSigned, mode: str
) -> None:
    """The stream of a run that goes on for minutes ends within seconds, at the credential's
    expiry, with a comment saying to sign in again; the run itself keeps running."""
    server = await start_signed(mode)
    async with server.client("carol") as http:
        run = (await http.post("/v1/runs", json={"agent": "echo", "input": LONG})).json()
        expiring = server.headers("carol", exp=time.time() - NEAR_EXPIRY)
        async with asyncio.timeout(TIMEOUT):
            async with http.stream(
                "GET", f"/v1/runs/{run['run_id']}/stream", headers=expiring
            ) as stream:
                assert stream.status_code == 200
                body = (await stream.aread()).decode()
        assert "event: agent_started" in body
        assert "sign in again" in body.splitlines()[-2]
        assert "event: agent_completed" not in body
        assert (await http.get(f"/v1/runs/{run['run_id']}")).json()["status"] in (
            "queued",
            "running",
        )
        await http.post(f"/v1/runs/{run['run_id']}/cancel")


def test_an_identity_without_expires_at_never_expires() -> None:
    """A hook's Identity without `expires_at` has no deadline; with one, the leeway is added."""

    async def hook(_request: Any) -> None:
        return None

    signin = SignIn(HookAuthenticator(hook), "hook")
    forever = Identity("alice")
    assert signin.valid_until(forever) is None
    assert signin.remaining_s(forever) is None
    assert not signin.expired(forever, now=1e12)
    soon = Identity("alice", expires_at=1000.0)
    assert signin.valid_until(soon) == 1000.0 + MAX_LEEWAY_S
    assert not signin.expired(soon, now=1000.0 + MAX_LEEWAY_S - 0.001)
    assert signin.expired(soon, now=1000.0 + MAX_LEEWAY_S)


@sqlite_only
async def test_a_sign_in_already_expired_is_refused_at_the_door(
    start_signed: StartSigned,
) -> None:
    """A hook identity whose `expires_at` is past the leeway is 401, not a short session."""
    server = await start_signed("hook")
    stale = server.headers("dan", exp=time.time() - MAX_LEEWAY_S - 5)
    async with httpx.AsyncClient(base_url=server.url, headers=stale) as http:
        resp = await http.get("/v1/me")
        assert resp.status_code == 401
        assert "expired" in resp.json()["error"]["message"]
