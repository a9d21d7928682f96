"""Callers that go away mid-statement — a socket closed right after ``start_run``, a request
whose client gave up — lose nothing and leave nothing behind: on PostgreSQL a cancellation that
landed inside asyncpg's implicit ``BEGIN`` used to leave a pooled connection inside a
transaction, after which the writes of every later "transaction" on it were savepoints that were
never committed (runs answered with an id and never stored; found by the cluster soak)."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import asyncpg
import pytest
import websockets
from sqlalchemy.engine import make_url

from conftest import LiveServer, postgres_database
from corral.store import statements as S
from corral.store.database import open_database
from corral.store.sql import Sql
from support_ws import recv, socket_of, start

TIMEOUT = 30.0
STARTS = 200


async def idle_in_transaction(url: str) -> list[str]:
    """The sessions of ``url``'s database that sit inside a transaction, doing nothing."""
    parsed = make_url(url)
    admin = await asyncpg.connect(
        host=parsed.host, port=parsed.port or 5432, user=parsed.username, database="postgres"
    )
    try:
        rows = await admin.fetch(
            "SELECT query FROM pg_stat_activity WHERE datname = $1 AND state LIKE 'idle in%'",
            parsed.database,
        )
    finally:
        await admin.close()
    return [row["query"] for row in rows]


async def left_in_transaction(url: str, within_s: float = 5.0) -> list[str]:
    """Sessions that stay idle inside a transaction for ``within_s``: a live server's writer
    may sit between two statements of a batch at any one moment, a leaked session stays."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while (idle := await idle_in_transaction(url)) and loop.time() < deadline:
        await asyncio.sleep(0.1)
    return idle


async def test_starts_whose_sockets_close_at_once_lose_nothing(server: LiveServer) -> None:
    """Sockets that send ``start_run`` and close at once, at varying points of the start; each
    start retried over HTTP with its ``client_ref`` as ``Idempotency-Key`` (as a client that
    lost its socket does) gets one run, which is stored, readable and finishes; on PostgreSQL
    no connection is left inside a transaction."""
    alice = f"gone-{uuid.uuid4().hex[:8]}"
    refs = [f"gone-{i}" for i in range(STARTS)]
    async with socket_of(server, alice) as watcher:
        headers = {"Authorization": f"Bearer {server.token(alice)}"}
        for i, ref in enumerate(refs):
            ws = await websockets.connect(server.ws_url, additional_headers=headers)
            assert (await recv(ws))["type"] == "ready"
            await ws.send(start(ref))
            for _ in range(i % 13):
                await asyncio.sleep(0)
            ws.transport.abort()
        run_ids = []
        async with server.client(alice) as http:
            for ref in refs:
                body = {"agent": "echo", "input": {"message": "hello", "steps": 1}}
                answer = await http.post("/v1/runs", json=body, headers={"Idempotency-Key": ref})
                assert answer.status_code in (200, 202), answer.text
                run_ids.append(answer.json()["run_id"])
            assert len(set(run_ids)) == STARTS
            for run_id in run_ids:
                got = await http.get(f"/v1/runs/{run_id}")
                assert got.status_code == 200, f"{run_id}: {got.text}"
        finished: set[str] = set()
        async with asyncio.timeout(TIMEOUT):
            while not finished.issuperset(run_ids):
                message = await recv(watcher)
                if message["type"] == "agent_completed":
                    finished.add(message["run_id"])
    if server.settings.database_url.startswith("postgresql"):
        assert await left_in_transaction(server.settings.database_url) == []


@pytest.mark.postgres
async def test_cancelled_reads_leave_no_connection_inside_a_transaction() -> None:
    """Reads cancelled at random points (a seeded sweep over the first event-loop turns of a
    statement, where the implicit ``BEGIN`` is), then writes: every write is visible to another
    connection once ``write`` returns, and no session is left idle inside a transaction."""
    shuffle = random.Random(20261201)
    async with postgres_database() as url:
        db = open_database(url, pool_size=4)
        await db.open()
        try:

            def count(sql: Sql) -> Any:
                return sql.value(S.COUNT_QUEUED, {"user_id": "nobody"})

            async def cancelled_read(turns: int) -> None:
                task = asyncio.ensure_future(db.read(count))
                for _ in range(turns):
                    await asyncio.sleep(0)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

            for _ in range(150):
                await asyncio.gather(*(cancelled_read(shuffle.randint(0, 100)) for _ in range(8)))
            parsed = make_url(url)
            check = await asyncpg.connect(
                host=parsed.host,
                port=parsed.port or 5432,
                user=parsed.username,
                database=parsed.database,
            )
            try:
                missing = []
                for i in range(20):
                    params = {
                        "thread_id": f"t{i}",
                        "user_id": "u",
                        "ts": "2026-12-01T00:00:00Z",
                        "title": None,
                        "metadata": None,
                    }
                    await db.write(lambda sql, p=params: sql.execute(S.INSERT_THREAD, p))
                    found = await check.fetchval(
                        "SELECT count(*) FROM threads WHERE thread_id = $1", f"t{i}"
                    )
                    if found != 1:
                        missing.append(i)
            finally:
                await check.close()
            assert missing == [], f"writes not committed: {missing}"
            assert await idle_in_transaction(url) == []
        finally:
            await db.close()
