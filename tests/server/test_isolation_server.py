"""Many users at once on one real server: each connection sees its user's runs and nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import websockets

from support import check_run_events

USERS = 25
RUNS_PER_USER = 3
CONNECTIONS_PER_USER = 2
STEPS = 3
TIMEOUT = 20.0
TERMINAL = {"agent_completed", "agent_error", "agent_cancelled"}


@contextlib.asynccontextmanager
async def connect_as(server: Any, user: str) -> AsyncIterator[Any]:
    headers = {"Authorization": f"Bearer {server.token(user)}"}
    async with websockets.connect(server.ws_url, additional_headers=headers) as ws:
        ready = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert ready == {"type": "ready", "user_id": user}
        yield ws


async def read_all_runs(ws: Any) -> list[str]:
    """Raw messages until terminal events of RUNS_PER_USER distinct runs have arrived."""
    raw: list[str] = []
    finished: set[str] = set()
    while len(finished) < RUNS_PER_USER:
        text = await ws.recv()
        assert isinstance(text, str)
        raw.append(text)
        msg = orjson.loads(text)
        if msg.get("type") in TERMINAL:
            finished.add(msg["run_id"])
    return raw


async def test_concurrent_users_each_see_only_and_all_of_their_own_runs(server) -> None:
    """25 users x 3 runs x 2 sockets, runs started at once over HTTP and WebSocket.

    Every socket receives every event of its user's three runs, complete and in order, and
    nothing else: no other user's canary in any raw message, no other user's run id.
    """
    users = [f"user{i:02d}" for i in range(USERS)]
    canaries = {user: uuid.uuid4().hex for user in users}

    def echo_input(user: str, n: int) -> dict[str, Any]:
        return {"message": f"{canaries[user]} run {n}", "steps": STEPS, "delay_ms": 10}

    async with contextlib.AsyncExitStack() as stack:
        sockets: dict[str, list[Any]] = {user: [] for user in users}
        opened = await asyncio.gather(
            *(
                stack.enter_async_context(connect_as(server, user))
                for user in users
                for _ in range(CONNECTIONS_PER_USER)
            )
        )
        for i, ws in enumerate(opened):
            sockets[users[i // CONNECTIONS_PER_USER]].append(ws)
        readers = {
            (user, i): asyncio.create_task(read_all_runs(ws))
            for user in users
            for i, ws in enumerate(sockets[user])
        }
        http = await stack.enter_async_context(
            httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT)
        )
        http_runs: dict[str, list[str]] = defaultdict(list)

        async def start(user: str, n: int) -> None:
            if (users.index(user) * RUNS_PER_USER + n) % 2 == 0:
                resp = await http.post(
                    "/v1/runs",
                    json={"agent": "echo", "input": echo_input(user, n)},
                    headers=server.headers(user),
                )
                assert resp.status_code == 202, resp.text
                http_runs[user].append(resp.json()["run_id"])
            else:
                ws = sockets[user][n % CONNECTIONS_PER_USER]
                message = {
                    "type": "start_run",
                    "agent": "echo",
                    "input": echo_input(user, n),
                    "client_ref": f"{user}/{n}",
                }
                await ws.send(orjson.dumps(message).decode())

        await asyncio.gather(*(start(u, n) for u in users for n in range(RUNS_PER_USER)))
        async with asyncio.timeout(TIMEOUT):
            received = dict(zip(readers, await asyncio.gather(*readers.values()), strict=True))

        # Whose run is which: the HTTP answers, and run_accepted for the WebSocket starts.
        owner: dict[str, str] = {run_id: u for u, ids in http_runs.items() for run_id in ids}
        for (user, _), raws in received.items():
            for text in raws:
                msg = orjson.loads(text)
                if msg["type"] == "run_accepted":
                    assert msg["client_ref"].startswith(f"{user}/"), msg
                    assert owner.setdefault(msg["run"]["run_id"], user) == user
        runs_of = {u: {r for r, o in owner.items() if o == u} for u in users}
        assert all(len(runs_of[u]) == RUNS_PER_USER for u in users), runs_of

        for (user, i), raws in received.items():
            where = f"{user} socket {i}"
            foreign = [c for u, c in canaries.items() if u != user]
            for text in raws:
                leaked = [c for c in foreign if c in text]
                assert not leaked, f"{where} received another user's canary: {text[:200]}"
            by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for text in raws:
                msg = orjson.loads(text)
                if msg["type"] == "run_accepted":
                    continue
                assert msg["type"] != "error", f"{where}: {msg}"
                assert msg["run_id"] in runs_of[user], f"{where} received a foreign run: {msg}"
                by_run[msg["run_id"]].append(msg)
            assert set(by_run) == runs_of[user], where
            for run_id, events in by_run.items():
                check_run_events(events)
                assert len(events) == 1 + STEPS * 3 + 1, (where, run_id)
                assert canaries[user] in events[-1]["data"]["output"]["message"]

        # Over HTTP too, each user lists exactly their own runs and cannot read another's.
        for n, user in enumerate(users):
            listed = await http.get("/v1/runs", headers=server.headers(user))
            assert {r["run_id"] for r in listed.json()["runs"]} == runs_of[user]
            neighbour = users[(n + 1) % USERS]
            foreign_run = next(iter(runs_of[neighbour]))
            resp = await http.get(f"/v1/runs/{foreign_run}", headers=server.headers(user))
            assert resp.status_code == 404
            assert canaries[neighbour] not in resp.text
