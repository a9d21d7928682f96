"""``corral.client.AsyncClient`` over every HTTP route, against a real server.

Routes this server does not have yet (``/v1/me`` of the identity work, threads and
``/input`` of the human-in-the-loop work) are tested when ``/openapi.json`` lists them, and
skipped — saying so — until then.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from conftest import LiveServer, StartServer
from corral.client import AsyncClient, ClientState, CorralAPIError
from support import RUN_FIELDS, check_run_events

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
ECHO = {"message": "hello", "steps": 2}


def user() -> str:
    return f"py-{uuid.uuid4().hex[:8]}"


async def routes(server: LiveServer) -> set[tuple[str, str]]:
    async with server.client() as http:
        doc = (await http.get("/openapi.json")).json()
    return {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}


async def wait_finished(client: AsyncClient, run_id: str) -> dict[str, Any]:
    async for _ in client.stream(run_id):
        pass
    run: dict[str, Any] = dict(await client.get_run(run_id))
    return run


@pytest.fixture
async def client(server: LiveServer) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.url, token=server.token(user())) as c:
        yield c


async def test_agents_and_runs_round_trip(server: LiveServer, client: AsyncClient) -> None:
    """agents() is GET /v1/agents; start_run → 202's run object; get_run, list_runs (with
    thread, status, limit and cursor) and events() read it back; events(after, limit) pages."""
    assert {a["name"] for a in await client.agents()} >= {"echo", "research"}
    run = await client.start_run("echo", ECHO)
    assert set(run) == RUN_FIELDS
    assert (run["agent"], run["input"], run["status"]) == ("echo", ECHO, "queued")
    finished = await wait_finished(client, run["run_id"])
    assert finished["status"] == "succeeded"
    assert finished["output"] == {"message": "hello", "steps": 2}
    other = await client.start_run("echo", {"message": "again"}, thread_id=run["thread_id"])
    await wait_finished(client, other["run_id"])
    page = await client.list_runs(thread_id=run["thread_id"], limit=1)
    assert [r["run_id"] for r in page["runs"]] == [other["run_id"]]
    assert page["next_cursor"]
    rest = await client.list_runs(thread_id=run["thread_id"], cursor=page["next_cursor"])
    assert [r["run_id"] for r in rest["runs"]] == [run["run_id"]]
    assert rest["next_cursor"] is None
    done = await client.list_runs(status="succeeded")
    assert {r["run_id"] for r in done["runs"]} == {run["run_id"], other["run_id"]}
    events = await client.events(run["run_id"])
    check_run_events(events)
    assert await client.events(run["run_id"], after=2) == events[2:]
    assert await client.events(run["run_id"], after=1, limit=3) == events[1:4]


async def test_an_idempotency_key_makes_a_start_once(client: AsyncClient) -> None:
    """start_run twice with one key: one run; the same key with another input: 409 conflict."""
    key = f"k-{uuid.uuid4().hex}"
    first = await client.start_run("echo", ECHO, idempotency_key=key)
    again = await client.start_run("echo", ECHO, idempotency_key=key)
    assert first["run_id"] == again["run_id"]
    with pytest.raises(CorralAPIError) as caught:
        await client.start_run("echo", {"message": "other"}, idempotency_key=key)
    assert (caught.value.status, caught.value.code) == (409, "conflict")
    assert len((await client.list_runs())["runs"]) == 1


async def test_cancel_run_and_refusals_raise_corral_api_errors(
    server: LiveServer, client: AsyncClient
) -> None:
    """cancel_run ends a running run (cancelled); cancelling it again is 409; another user's run
    is 404 not_found; bad input is 422 with details; an unknown agent is 404."""
    run = await client.start_run("echo", {"message": "slow", "steps": 100, "delay_ms": 50})
    cancelled = await client.cancel_run(run["run_id"])
    assert cancelled["status"] in ("cancelled", "running", "queued")
    assert (await wait_finished(client, run["run_id"]))["status"] == "cancelled"
    with pytest.raises(CorralAPIError) as conflict:
        await client.cancel_run(run["run_id"])
    assert (conflict.value.status, conflict.value.code) == (409, "conflict")
    async with AsyncClient(server.url, token=server.token(user())) as stranger:
        for call in (
            stranger.get_run(run["run_id"]),
            stranger.cancel_run(run["run_id"]),
            stranger.events(run["run_id"]),
        ):
            with pytest.raises(CorralAPIError) as missing:
                await call
            assert (missing.value.status, missing.value.code) == (404, "not_found")
    with pytest.raises(CorralAPIError) as invalid:
        await client.start_run("echo", {"message": "m", "steps": 0})
    assert invalid.value.code == "validation_error"
    assert invalid.value.details is not None
    assert any("steps" in d["field"] for d in invalid.value.details)
    with pytest.raises(CorralAPIError) as unknown:
        await client.start_run("no-such-agent", {})
    assert unknown.value.code == "not_found"


@sqlite_only
async def test_a_full_queue_is_rate_limited_with_retry_after(start_server: StartServer) -> None:
    """Past the per-user queue: 429 rate_limited with retry_after (not retried by the client)."""
    server = await start_server(max_running_per_user=1, max_queued_per_user=1)
    async with AsyncClient(server.url, token=server.token(user())) as client:
        slow = {"message": "m", "steps": 50, "delay_ms": 50}
        await client.start_run("echo", slow)
        async with asyncio.timeout(10):
            while (await client.list_runs(status="running"))["runs"] == []:
                await asyncio.sleep(0.02)  # polling the server until the first run executes
        await client.start_run("echo", slow)
        with pytest.raises(CorralAPIError) as caught:
            await client.start_run("echo", slow)
    assert (caught.value.status, caught.value.code) == (429, "rate_limited")
    assert caught.value.retry_after is not None


@sqlite_only
async def test_the_token_provider_is_asked_first_and_again_after_a_401(
    server: LiveServer,
) -> None:
    """token_provider gives an expired token first: the 401 asks it again and the request
    succeeds; a fixed token the server refuses raises unauthorized (401)."""
    name = user()
    given: list[str] = []

    async def provider() -> str:
        given.append("expired" if not given else "fresh")
        return server.token(name, ttl_s=-300) if len(given) == 1 else server.token(name)

    async with AsyncClient(server.url, token_provider=provider) as client:
        assert (await client.start_run("echo", ECHO))["agent"] == "echo"
        assert given == ["expired", "fresh"]
        await client.list_runs()
        assert given == ["expired", "fresh"]  # a good token is kept, not asked for each time
    async with AsyncClient(server.url, token="not-a-token") as refused:
        with pytest.raises(CorralAPIError) as caught:
            await refused.agents()
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")


async def test_an_unreachable_server_is_a_network_error_and_a_closed_client_refuses() -> None:
    """Nothing listening: network_error after the retries; after aclose(): code closed."""
    client = AsyncClient("http://127.0.0.1:9", token="t", retries=2, min_backoff_s=0.01)
    async with client:
        with pytest.raises(CorralAPIError) as caught:
            await client.agents()
        assert (caught.value.status, caught.value.code) == (None, "network_error")
    assert client._state is ClientState.CLOSED
    with pytest.raises(CorralAPIError) as closed:
        await client.agents()
    assert closed.value.code == "closed"


@sqlite_only
async def test_me(server: LiveServer, client: AsyncClient) -> None:
    """me() is GET /v1/me: the caller's user id and roles."""
    me = await client.me()
    assert set(me) == {"user_id", "roles"}


async def test_threads(server: LiveServer, client: AsyncClient) -> None:
    """create/list/get/update/delete_thread follow contract §10; a deleted thread is 404."""
    thread = await client.create_thread(title="first", metadata={"k": 1})
    assert (thread["title"], thread["metadata"]) == ("first", {"k": 1})
    assert (await client.get_thread(thread["thread_id"]))["thread_id"] == thread["thread_id"]
    renamed = await client.update_thread(thread["thread_id"], title="renamed")
    assert (renamed["title"], renamed["metadata"]) == ("renamed", {"k": 1})
    listed = await client.list_threads(limit=10)
    assert thread["thread_id"] in [t["thread_id"] for t in listed["threads"]]
    await client.delete_thread(thread["thread_id"])
    with pytest.raises(CorralAPIError) as gone:
        await client.get_thread(thread["thread_id"])
    assert gone.value.code == "not_found"


async def test_send_input_refusals(server: LiveServer, client: AsyncClient) -> None:
    """send_input to a run that is not waiting is a 409 conflict; another user's is 404."""
    run = await client.start_run("echo", ECHO)
    await wait_finished(client, run["run_id"])
    with pytest.raises(CorralAPIError) as conflict:
        await client.send_input(run["run_id"], "req-1", "yes")
    assert conflict.value.code == "conflict"
