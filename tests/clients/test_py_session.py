"""``AsyncClient.session()`` against a real server: every event of every run of the user over
one WebSocket — directly, through a TCP proxy that cuts connections at random bytes, and
across sockets closed 1008 (token refused or expired), which ask the token provider again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import LiveServer, _TestServer
from corral.client import AsyncClient, CorralAPIError, Session
from corral.server.app import create_app
from corral.server.runner import uvicorn_config
from corral.settings import Settings
from cutting_proxy import CuttingProxy
from support import check_run_events

SEED_ENV = "CORRAL_TEST_SEED"
TERMINAL = {"agent_completed", "agent_error", "agent_cancelled"}
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
SLOW = {"message": "session " + "y" * 200, "steps": 15, "delay_ms": 10}


def user() -> str:
    return f"se-{uuid.uuid4().hex[:8]}"


async def read_runs(
    session: Session, runs: set[str], *, timeout: float = 60.0
) -> dict[str, list[dict[str, Any]]]:
    """What the session yields until each of ``runs`` has had its terminal event."""
    got: dict[str, list[dict[str, Any]]] = {}
    try:
        async with asyncio.timeout(timeout):
            while not all(r in got and got[r][-1]["type"] in TERMINAL for r in runs):
                event = dict(await anext(session))
                got.setdefault(event["run_id"], []).append(event)
    except TimeoutError:
        progress = {r: [e["seq"] for e in got.get(r, [])][-3:] for r in runs}
        raise AssertionError(f"runs not whole within {timeout:g} s: {progress}") from None
    return got


async def test_a_session_delivers_runs_started_anywhere_once_in_order(
    server: LiveServer,
) -> None:
    """A run started over the session's socket (start_run → the run object) and one started by
    another client over HTTP both arrive whole; a run that was running before the session
    opened is delivered from seq 1 (resume_unfinished); nothing of another user arrives."""
    name = user()
    async with (
        AsyncClient(server.url, token=server.token(name)) as client,
        AsyncClient(server.url, token=server.token(name)) as other,
        AsyncClient(server.url, token=server.token(user())) as stranger,
    ):
        before = await other.start_run("echo", SLOW)
        async with asyncio.timeout(10):
            while (await other.events(before["run_id"])) == []:
                await asyncio.sleep(0.02)  # polling until the earlier run has begun
        async with client.session() as session:
            assert session.user_id == name
            await stranger.start_run("echo", {"message": "not yours"})
            started = await session.start_run("echo", {"message": "socket", "steps": 2})
            assert started["agent"] == "echo"
            by_http = await other.start_run("echo", {"message": "http", "steps": 3})
            runs = {before["run_id"], started["run_id"], by_http["run_id"]}
            got = await read_runs(session, runs)
        assert set(got) == runs
        for run_id, events in got.items():
            check_run_events(events)
            assert events == [dict(e) for e in await client.events(run_id)]


async def test_a_refused_start_raises_and_the_session_goes_on(server: LiveServer) -> None:
    """start_run refused by the server raises CorralAPIError with the route's code and
    status; the same client_ref for another start is a conflict; the session stays open."""
    async with (
        AsyncClient(server.url, token=server.token(user())) as client,
        client.session() as session,
    ):
        with pytest.raises(CorralAPIError) as invalid:
            await session.start_run("echo", {"steps": 2})
        assert (invalid.value.status, invalid.value.code) == (422, "validation_error")
        first = await session.start_run("echo", {"message": "a"}, client_ref="one-ref")
        again = await session.start_run("echo", {"message": "a"}, client_ref="one-ref")
        assert first["run_id"] == again["run_id"]
        with pytest.raises(CorralAPIError) as conflict:
            await session.start_run("echo", {"message": "b"}, client_ref="one-ref")
        assert conflict.value.code == "conflict"
        got = await read_runs(session, {first["run_id"]})
        check_run_events(got[first["run_id"]])


@sqlite_only
@pytest.mark.slow
async def test_sessions_through_a_cutting_proxy_deliver_every_event_once(
    server: LiveServer,
) -> None:
    """Two users' sessions through a proxy that cuts sockets and requests at random bytes:
    runs started with session.start_run (resent with their client_ref after a cut) and over
    HTTP beside it all arrive exactly once, seq 1..N, none of the other user's — and each start
    made one run."""
    seed = int(os.environ.get(SEED_ENV, "20261201"))
    port = int(server.url.rsplit(":", 1)[1])
    users = [user(), user()]
    async with CuttingProxy("127.0.0.1", port, seed=seed) as proxy:
        try:

            async def one_user(name: str) -> tuple[set[str], dict[str, list[dict[str, Any]]]]:
                token = server.token(name)
                async with (
                    AsyncClient(proxy.url, token=token, min_backoff_s=0.01, retries=30) as cut,
                    AsyncClient(server.url, token=token) as direct,
                    cut.session() as session,
                ):
                    runs = set()
                    for n in range(3):
                        run = await session.start_run("echo", {**SLOW, "message": f"{name} {n}"})
                        runs.add(run["run_id"])
                        runs.add((await direct.start_run("echo", SLOW))["run_id"])
                    got = await read_runs(session, runs)
                    assert session.reconnects >= 1, "no socket was cut"
                    return runs, got

            outcome = await asyncio.gather(*(one_user(u) for u in users))
        except BaseException as exc:
            exc.add_note(f"cutting proxy seed {seed} ({SEED_ENV}={seed} repeats the cuts)")
            raise
    for name, (runs, got) in zip(users, outcome, strict=True):
        async with AsyncClient(server.url, token=server.token(name)) as direct:
            stored = {r["run_id"] for r in (await direct.list_runs())["runs"]}
            assert stored == runs, "a start retried through a cut started a second run"
            assert set(got) == runs, f"events of runs not this user's: {set(got) - runs}"
            for run_id, events in got.items():
                check_run_events(events)
                assert events == [dict(e) for e in await direct.events(run_id)]
    assert proxy.cuts["ws"] >= 2, proxy.cuts


# -- sockets closed 1008 ----------------------------------------------------------------------


class ClosePolicy:
    """ASGI middleware in front of the real app: the first ``sockets`` WebSockets are closed
    with 1008 — as the server does when a token expires — after ``after`` event frames."""

    def __init__(self, app: Any, *, sockets: int, after: int) -> None:
        self.app = app
        self.left = sockets
        self.after = after

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket" or self.left == 0:
            return await self.app(scope, receive, send)
        self.left -= 1
        sent = 0
        closed = False

        async def guarded(message: dict[str, Any]) -> None:
            nonlocal sent, closed
            if closed:
                return
            if message["type"] == "websocket.send" and b'"seq"' in message.get("text", "").encode():
                sent += 1
                if sent > self.after:
                    closed = True
                    await send({"type": "websocket.close", "code": 1008, "reason": "expired"})
                    return
            await send(message)

        return await self.app(scope, receive, guarded)


StartPolicy = Callable[..., Awaitable[LiveServer]]


@pytest.fixture
async def start_policy_server(tmp_path: Path, sqlite_url: str) -> AsyncIterator[StartPolicy]:
    """A real corral server (SQLite, port 0) behind :class:`ClosePolicy`."""
    started: list[tuple[_TestServer, asyncio.Task[None]]] = []

    async def start(**policy: int) -> LiveServer:
        settings = Settings(
            host="127.0.0.1",
            port=0,
            data_dir=tmp_path / "policy",
            database_url=sqlite_url,
            jwt_secret=secrets.token_hex(32),
            shutdown_grace_s=2.0,
        )
        app = create_app(settings)
        server = _TestServer(uvicorn_config(settings, ClosePolicy(app, **policy)))
        task = asyncio.get_running_loop().create_task(server.serve())
        started.append((server, task))
        ready = asyncio.ensure_future(server.ready_event.wait())
        await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
        assert server.started, "the server did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        return LiveServer(f"http://127.0.0.1:{port}", settings, app, server)

    yield start
    for server, _task in started:
        server.should_exit = True
    for _server, task in started:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)


async def test_a_socket_closed_1008_asks_the_token_provider_and_resumes(
    start_policy_server: StartPolicy,
) -> None:
    """Two sockets closed 1008 mid-run: the provider is asked for a token on every connect
    (three), and the run arrives whole, each event once."""
    server = await start_policy_server(sockets=2, after=4)
    name = user()
    asked = 0

    async def provider() -> str:
        nonlocal asked
        asked += 1
        return server.token(name)

    async with (
        AsyncClient(server.url, token_provider=provider, min_backoff_s=0.01) as client,
        client.session() as session,
    ):
        run = await session.start_run("echo", SLOW)
        got = await read_runs(session, {run["run_id"]})
        assert session.reconnects == 2
        assert asked == 3
        check_run_events(got[run["run_id"]])
        assert got[run["run_id"]] == [dict(e) for e in await client.events(run["run_id"])]


async def test_an_expired_token_at_connect_is_replaced_by_the_provider(
    start_policy_server: StartPolicy,
) -> None:
    """The provider's first token has expired: the server refuses it (error, 1008) and the
    session asks again and signs in; with a fixed expired token, opening raises unauthorized."""
    server = await start_policy_server(sockets=0, after=0)
    name = user()
    given: list[str] = []

    async def provider() -> str:
        given.append("expired" if not given else "fresh")
        return server.token(name, ttl_s=-300) if len(given) == 1 else server.token(name)

    async with (
        AsyncClient(server.url, token_provider=provider, min_backoff_s=0.01) as client,
        client.session() as session,
    ):
        assert session.user_id == name
        assert given == ["expired", "fresh"]
    async with AsyncClient(server.url, token=server.token(name, ttl_s=-300)) as fixed:
        with pytest.raises(CorralAPIError) as refused:
            await fixed.session().open()
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")


async def test_a_fixed_token_closed_1008_ends_the_session_with_unauthorized(
    start_policy_server: StartPolicy,
) -> None:
    """Without a provider a 1008 cannot be mended: iterating raises unauthorized."""
    server = await start_policy_server(sockets=1, after=2)
    async with AsyncClient(server.url, token=server.token(user())) as client:
        session = client.session()
        await session.open()
        await session.start_run("echo", SLOW)

        async def drain() -> None:
            async with asyncio.timeout(20):
                async for _event in session:
                    pass

        with pytest.raises(CorralAPIError) as refused:
            await drain()
        assert refused.value.code == "unauthorized"
        await session.aclose()
