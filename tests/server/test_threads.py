"""Threads as a resource and their state (contract §10) against a real server, on SQLite and
PostgreSQL: create, list, page, rename, delete with everything in them, per-thread state."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import websockets

import hitl_agents
from corral.store.sql import Q, Sql
from support import check_run_events

TIMEOUT = 20.0
THREAD_FIELDS = {"thread_id", "title", "metadata", "state", "created_at", "updated_at"}
FINISHED = ("succeeded", "failed", "cancelled", "timed_out")


# -- helpers ----------------------------------------------------------------------------------


async def new_thread(http: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    resp = await http.post("/v1/threads", json=body)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


async def start(http: httpx.AsyncClient, agent: str, input: dict[str, Any], **body: Any) -> str:
    resp = await http.post("/v1/runs", json={"agent": agent, "input": input, **body})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["run_id"])


async def wait_status(http: httpx.AsyncClient, run_id: str, *statuses: str) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT):
        while True:
            run = (await http.get(f"/v1/runs/{run_id}")).json()
            if run["status"] in statuses:
                return dict(run)
            await asyncio.sleep(0.02)


async def finished(http: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    return await wait_status(http, run_id, *FINISHED)


async def count(server: Any, query: str, **params: Any) -> int:
    """A number from the server's own database (for orphan checks)."""
    q = Q(query)

    def read(sql: Sql) -> int:
        return int(sql.value(q, params))

    return int(await server.runtime.parts.db.read(read))


async def orphans(server: Any) -> tuple[int, int, int]:
    """(events without a run, runs without a thread, idempotency keys without a run)."""
    return (
        await count(
            server, "SELECT count(*) FROM events e WHERE NOT EXISTS "
            "(SELECT 1 FROM runs r WHERE r.run_id = e.run_id)"
        ),
        await count(
            server, "SELECT count(*) FROM runs r WHERE NOT EXISTS "
            "(SELECT 1 FROM threads t WHERE t.thread_id = r.thread_id)"
        ),
        await count(
            server, "SELECT count(*) FROM idempotency_keys k WHERE NOT EXISTS "
            "(SELECT 1 FROM runs r WHERE r.run_id = k.run_id)"
        ),
    )  # fmt: skip


@pytest.fixture
async def hitl(start_server: Any) -> Any:
    return await start_server(registry=hitl_agents.registry())


# -- CRUD -------------------------------------------------------------------------------------


async def test_create_get_rename_and_delete_a_thread(server: Any) -> None:
    """POST 201 with the thread object; GET returns it; PATCH replaces what it names (null
    clears); DELETE 204; afterwards GET, PATCH and DELETE are 404."""
    async with server.client("alice") as http:
        thread = await new_thread(http, title="Trip plans", metadata={"tags": ["travel"]})
        assert set(thread) == THREAD_FIELDS
        assert thread["title"] == "Trip plans"
        assert thread["metadata"] == {"tags": ["travel"]}
        assert thread["state"] == {}
        assert thread["thread_id"].startswith("thread_")
        assert thread["created_at"] == thread["updated_at"]
        url = f"/v1/threads/{thread['thread_id']}"
        assert (await http.get(url)).json() == thread

        renamed = await http.patch(url, json={"title": "Paris trip"})
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["title"] == "Paris trip"
        assert renamed.json()["metadata"] == {"tags": ["travel"]}
        replaced = (await http.patch(url, json={"metadata": {"pinned": True}})).json()
        assert replaced["metadata"] == {"pinned": True}
        assert replaced["title"] == "Paris trip"
        cleared = (await http.patch(url, json={"title": None, "metadata": None})).json()
        assert (cleared["title"], cleared["metadata"]) == (None, {})
        unchanged = await http.patch(url, json={})
        assert unchanged.json() == cleared

        empty = await new_thread(http)
        assert (empty["title"], empty["metadata"], empty["state"]) == (None, {}, {})

        deleted = await http.delete(url)
        assert deleted.status_code == 204
        assert deleted.content == b""
        for method in ("GET", "PATCH", "DELETE"):
            kwargs = {"json": {"title": "x"}} if method == "PATCH" else {}
            resp = await http.request(method, url, **kwargs)
            assert resp.status_code == 404, (method, resp.text)
            assert resp.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "x" * 201}, "title"),
        ({"title": 7}, "title"),
        ({"metadata": ["not", "an", "object"]}, "metadata"),
        ({"metadata": {"blob": "x" * (16 * 1024)}}, "metadata"),
        ({"owner": "bob"}, "owner"),
    ],
)
async def test_bad_thread_bodies_are_422_naming_the_field(
    server: Any, body: dict[str, Any], field: str
) -> None:
    """Title over 200 characters or not text, metadata not an object or over 16 KiB, unknown
    fields: 422 naming the field, for POST and PATCH alike."""
    async with server.client("alice") as http:
        thread = await new_thread(http)
        for resp in (
            await http.post("/v1/threads", json=body),
            await http.patch(f"/v1/threads/{thread['thread_id']}", json=body),
        ):
            assert resp.status_code == 422, resp.text
            assert resp.json()["error"]["details"][0]["field"] == field
        malformed = await http.post("/v1/threads", content=b"{not json")
        assert malformed.status_code == 422
        at_limits = await new_thread(http, title="x" * 200, metadata={"b": "x" * (16 * 1024 - 20)})
        assert len(at_limits["title"]) == 200


async def test_threads_list_most_recently_updated_first_and_updated_at_moves_with_runs(
    server: Any,
) -> None:
    """Three threads listed newest first; a run on the oldest moves its updated_at (at creation
    and at its end) and brings it to the top."""
    async with server.client("alice") as http:
        first, second, third = [await new_thread(http, title=t) for t in ("1", "2", "3")]
        listed = (await http.get("/v1/threads")).json()
        assert [t["title"] for t in listed["threads"]] == ["3", "2", "1"]
        assert listed["next_cursor"] is None
        run_id = await start(http, "echo", {"message": "m"}, thread_id=first["thread_id"])
        run = await finished(http, run_id)
        moved = (await http.get(f"/v1/threads/{first['thread_id']}")).json()
        assert moved["updated_at"] == run["finished_at"] > first["updated_at"]
        assert moved["created_at"] == first["created_at"]
        listed = (await http.get("/v1/threads")).json()
        assert [t["title"] for t in listed["threads"]] == ["1", "3", "2"]
        # A run without thread_id makes a thread, listed like the others.
        other = await start(http, "echo", {"message": "m"})
        await finished(http, other)
        listed = (await http.get("/v1/threads")).json()["threads"]
        thread_of_other = (await http.get(f"/v1/runs/{other}")).json()["thread_id"]
        assert listed[0]["thread_id"] == thread_of_other
        assert {second["thread_id"], third["thread_id"]} <= {t["thread_id"] for t in listed}


async def test_threads_page_by_cursor_without_gaps_or_repeats(server: Any) -> None:
    """Seven threads, pages of 3: 3 + 3 + 1, each once, in order; bad limits and cursors 422."""
    async with server.client("alice") as http:
        made = [(await new_thread(http, title=str(n)))["thread_id"] for n in range(7)]
        seen: list[str] = []
        sizes = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 3}
            if cursor:
                params["cursor"] = cursor
            page = (await http.get("/v1/threads", params=params)).json()
            sizes.append(len(page["threads"]))
            seen += [t["thread_id"] for t in page["threads"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sizes == [3, 3, 1]
        assert seen == list(reversed(made))
        default = (await http.get("/v1/threads")).json()
        assert len(default["threads"]) == 7
        for params in (
            {"limit": 0},
            {"limit": 201},
            {"limit": "lots"},
            {"cursor": "not-a-cursor"},
            {"cursor": "cjIwMjZ8eA"},  # "r2026|x": the right form, a wrong timestamp
        ):
            resp = await http.get("/v1/threads", params=params)
            assert resp.status_code == 422, (params, resp.text)


async def test_another_users_thread_is_404_everywhere(hitl: Any) -> None:
    """bob sees none of alice's threads: not listed; GET, PATCH, DELETE 404 exactly like a
    missing thread; a run on it 404; and alice's thread is unchanged."""
    async with hitl.client("alice") as alice, hitl.client("bob") as bob:
        thread = await new_thread(alice, title="private", metadata={"k": "v"})
        run_id = await start(alice, "stateful", {"add": "a"}, thread_id=thread["thread_id"])
        await finished(alice, run_id)
        url = f"/v1/threads/{thread['thread_id']}"
        missing = "/v1/threads/thread_doesnotexist000000000"
        assert (await bob.get("/v1/threads")).json() == {"threads": [], "next_cursor": None}
        for method in ("GET", "PATCH", "DELETE"):
            kwargs = {"json": {"title": "mine"}} if method == "PATCH" else {}
            theirs = await bob.request(method, url, **kwargs)
            nothing = await bob.request(method, missing, **kwargs)
            assert theirs.status_code == nothing.status_code == 404, method
            assert theirs.json() == nothing.json(), method
        on_it = await bob.post(
            "/v1/runs",
            json={"agent": "echo", "input": {"message": "x"}, "thread_id": thread["thread_id"]},
        )
        assert on_it.status_code == 404
        still = (await alice.get(url)).json()
        assert still["title"] == "private"
        assert still["state"] == {"items": ["a"]}


# -- deleting ---------------------------------------------------------------------------------


async def test_deleting_a_thread_removes_its_runs_events_and_keys_everywhere(hitl: Any) -> None:
    """After DELETE: the runs, their events, streams, answers and cancels are 404; resume is
    an error; an Idempotency-Key of a deleted run starts a new run; no orphan row is left."""
    async with hitl.client("alice") as http:
        thread = await new_thread(http, title="doomed")
        tid = thread["thread_id"]
        keyed = await http.post(
            "/v1/runs",
            json={"agent": "echo", "input": {"message": "k"}, "thread_id": tid},
            headers={"Idempotency-Key": "k-1"},
        )
        done = keyed.json()["run_id"]
        await finished(http, done)
        resp = await http.delete(f"/v1/threads/{tid}")
        assert resp.status_code == 204
        for path in (
            f"/v1/runs/{done}",
            f"/v1/runs/{done}/events",
            f"/v1/runs/{done}/stream",
        ):
            assert (await http.get(path)).status_code == 404, path
        assert (await http.post(f"/v1/runs/{done}/cancel")).status_code == 404
        body = {"request_id": "input_x", "value": 1}
        assert (await http.post(f"/v1/runs/{done}/input", json=body)).status_code == 404
        assert (await http.get("/v1/runs", params={"thread_id": tid})).json()["runs"] == []
        again = await http.post(
            "/v1/runs",
            json={"agent": "echo", "input": {"message": "k"}, "thread_id": tid},
            headers={"Idempotency-Key": "k-1"},
        )
        assert again.status_code == 404  # the key is gone with its run; the thread too
        headers = {"Authorization": f"Bearer {hitl.token('alice')}"}
        async with websockets.connect(hitl.ws_url, additional_headers=headers) as ws:
            assert orjson.loads(await ws.recv())["type"] == "ready"
            await ws.send(orjson.dumps({"type": "resume", "run_id": done, "after": 0}))
            error = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert (error["type"], error["code"]) == ("error", "not_found")
    assert await orphans(hitl) == (0, 0, 0)
    assert await count(hitl, "SELECT count(*) FROM runs WHERE thread_id = :t", t=tid) == 0


async def test_deleting_threads_under_load_cancels_their_runs_and_leaves_others_untouched(
    start_server: Any,
) -> None:
    """Three users keep runs going while alice deletes two threads — one holding a running run
    and a queued one, one holding a waiting run and a queued one — and starts more runs: the
    deleted runs vanish, every other run completes with all its events, no orphan row is left."""
    server = await start_server(registry=hitl_agents.registry(), max_running_per_user=3)
    users = ["alice", "bob", "carol"]
    clients = {u: server.client(u) for u in users}
    busy = {"message": "load", "steps": 20, "delay_ms": 20}
    kept: dict[str, list[str]] = {u: [] for u in users}
    try:
        for u in users:
            kept[u] += [await start(clients[u], "echo", busy) for _ in range(2)]
        alice = clients["alice"]
        with_running = (await new_thread(alice))["thread_id"]
        long = {"message": "x", "steps": 100, "delay_ms": 50}
        running = await start(alice, "echo", long, thread_id=with_running)
        with_waiting = (await new_thread(alice))["thread_id"]
        waiting = await start(alice, "asker", {}, thread_id=with_waiting)
        doomed_runs = [
            running,
            waiting,
            await start(alice, "echo", {"message": "q"}, thread_id=with_running),
            await start(alice, "echo", {"message": "q"}, thread_id=with_waiting),
        ]
        await wait_status(alice, running, "running")
        await wait_status(alice, waiting, "waiting")

        async def more(u: str) -> None:
            kept[u].append(await start(clients[u], "echo", busy))

        answers = await asyncio.gather(
            alice.delete(f"/v1/threads/{with_running}"),
            alice.delete(f"/v1/threads/{with_waiting}"),
            *(more(u) for u in users for _ in range(2)),
        )
        assert [r.status_code for r in answers[:2]] == [204, 204], [r.text for r in answers[:2]]
        for run_id in doomed_runs:
            assert (await alice.get(f"/v1/runs/{run_id}")).status_code == 404
        for thread_id in (with_running, with_waiting):
            assert (await alice.get(f"/v1/threads/{thread_id}")).status_code == 404
        for u in users:
            for run_id in kept[u]:
                run = await finished(clients[u], run_id)
                assert run["status"] == "succeeded", run
                events = (await clients[u].get(f"/v1/runs/{run_id}/events")).json()["events"]
                check_run_events(events)
                assert len(events) == 2 + 3 * 20
    finally:
        for c in clients.values():
            await c.aclose()
    assert await orphans(server) == (0, 0, 0)
    for thread_id in (with_running, with_waiting):
        assert (
            await count(server, "SELECT count(*) FROM runs WHERE thread_id = :t", t=thread_id) == 0
        )
    for run_id in doomed_runs:
        assert await count(server, "SELECT count(*) FROM events WHERE run_id = :r", r=run_id) == 0


# -- state ------------------------------------------------------------------------------------


async def test_state_is_saved_only_by_a_run_that_succeeds(hitl: Any) -> None:
    """ctx.state starts {}; set_state is kept by a success, not by a failure or a cancel; the
    thread object shows it; another thread's state is its own."""
    async with hitl.client("alice") as http:
        tid = (await new_thread(http))["thread_id"]
        url = f"/v1/threads/{tid}"

        async def run(**input: Any) -> dict[str, Any]:
            return await finished(http, await start(http, "stateful", input, thread_id=tid))

        first = await run(add="a")
        assert first["status"] == "succeeded"
        assert first["output"] == {"items": ["a"], "seen": {"items": ["a"]}}
        assert (await http.get(url)).json()["state"] == {"items": ["a"]}

        failed = await run(add="lost", fail=True)
        assert failed["status"] == "failed"
        assert (await http.get(url)).json()["state"] == {"items": ["a"]}

        hanging = await start(http, "stateful", {"add": "lost", "hang": True}, thread_id=tid)
        await wait_status(http, hanging, "running")
        cancelled = await http.post(f"/v1/runs/{hanging}/cancel")
        assert cancelled.json()["status"] == "cancelled"
        assert (await http.get(url)).json()["state"] == {"items": ["a"]}

        second = await run(add="b")
        assert second["output"]["items"] == ["a", "b"]
        assert (await http.get(url)).json()["state"] == {"items": ["a", "b"]}

        elsewhere = await finished(http, await start(http, "stateful", {"add": "z"}))
        assert elsewhere["output"]["items"] == ["z"]

        big = await finished(http, await start(http, "big_state", {}, thread_id=tid))
        assert "1 MiB" in big["output"]["refused"]


async def test_thread_history_is_bounded_latest_runs_oldest_first(hitl: Any) -> None:
    """thread_history(limit=2) on a thread with three earlier runs returns the latest two,
    oldest first; on a new thread it is empty."""
    async with hitl.client("alice") as http:
        tid = (await new_thread(http))["thread_id"]
        for n in range(3):
            await finished(http, await start(http, "echo", {"message": f"m{n}"}, thread_id=tid))
        run = await finished(http, await start(http, "history", {"limit": 2}, thread_id=tid))
        assert run["output"]["inputs"] == [{"message": "m1"}, {"message": "m2"}]
        assert run["output"]["statuses"] == ["succeeded", "succeeded"]
        fresh = await finished(http, await start(http, "history", {"limit": 5}))
        assert fresh["output"]["inputs"] == []


# -- retention --------------------------------------------------------------------------------


async def test_retention_sweep_deletes_idle_threads_with_their_runs_and_events(
    start_server: Any,
) -> None:
    """CORRAL_RETENTION_DAYS=1: a thread whose last run is 10 days old goes with its runs and
    events; a fresh thread stays, and so does an old one whose run still waits."""
    server = await start_server(
        registry=hitl_agents.registry(), retention_days=1, retention_sweep_s=0.2
    )
    old_ts = (datetime.now(UTC) - timedelta(days=10)).isoformat(timespec="microseconds")
    old_ts = old_ts[:-6] + "Z"
    async with server.client("alice") as http:
        old = (await new_thread(http, title="old"))["thread_id"]
        old_run = await start(http, "echo", {"message": "o"}, thread_id=old)
        await finished(http, old_run)
        busy = (await new_thread(http, title="old but waiting"))["thread_id"]
        waiting = await start(http, "asker", {}, thread_id=busy)
        await wait_status(http, waiting, "waiting")
        fresh = (await new_thread(http, title="fresh"))["thread_id"]
        backdate = Q("UPDATE threads SET updated_at = :ts WHERE thread_id = :t")

        def write(sql: Sql) -> None:
            for thread_id in (old, busy):
                sql.execute(backdate, {"ts": old_ts, "t": thread_id})

        await server.runtime.parts.db.write(write)
        async with asyncio.timeout(TIMEOUT):
            while (await http.get(f"/v1/threads/{old}")).status_code != 404:
                await asyncio.sleep(0.05)
        assert (await http.get(f"/v1/runs/{old_run}")).status_code == 404
        assert (await http.get(f"/v1/threads/{fresh}")).status_code == 200
        assert (await http.get(f"/v1/threads/{busy}")).status_code == 200
        assert (await http.get(f"/v1/runs/{waiting}")).json()["status"] == "waiting"
        await http.post(f"/v1/runs/{waiting}/cancel")
    assert await count(server, "SELECT count(*) FROM events WHERE run_id = :r", r=old_run) == 0
    assert await orphans(server) == (0, 0, 0)
