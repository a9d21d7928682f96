"""A client that stops reading is closed with 1013 and costs bounded memory; others carry on."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
import websockets
from websockets.exceptions import ConnectionClosed

from support import check_run_events

TIMEOUT = 15.0
TERMINAL = {"agent_completed", "agent_error", "agent_cancelled"}
BOUND = 64 * 1024
SLOW_INPUT = {"message": "s" * 8000, "steps": 100}  # ~2.4 MB of events, far over the bound


async def recv(ws: Any, timeout: float = TIMEOUT) -> dict[str, Any]:
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout))


@contextlib.asynccontextmanager
async def connect_as(server: Any, user: str, **kwargs: Any) -> AsyncIterator[Any]:
    headers = {"Authorization": f"Bearer {server.token(user)}"}
    async with websockets.connect(server.ws_url, additional_headers=headers, **kwargs) as ws:
        assert await recv(ws) == {"type": "ready", "user_id": user}
        yield ws


@contextlib.asynccontextmanager
async def stalled_socket(server: Any, user: str) -> AsyncIterator[Any]:
    """A socket for ``user`` that stops reading after ``ready``.

    A tiny kernel receive buffer and a one-frame client queue (the client then pauses
    reading its transport) make the server's writes back up almost at once.
    """
    parts = urlsplit(server.url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
    async with connect_as(server, user, sock=sock, max_queue=1) as ws:
        yield ws


async def wait_until(condition: Callable[[], Any], timeout: float = TIMEOUT) -> None:
    """Poll a server-side condition that has no event to wait on (yielding to the loop)."""
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.02)


async def slow_consumer_closes(http: Any) -> float:
    text = (await http.get("/metrics")).text
    found = re.search(r"^corral_slow_consumer_closes_total (\S+)$", text, re.MULTILINE)
    assert found, "corral_slow_consumer_closes_total is not exported"
    return float(found.group(1))


async def start_run(http: Any, input: dict[str, Any]) -> str:
    resp = await http.post("/v1/runs", json={"agent": "echo", "input": input})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["run_id"])


async def collect_run(ws: Any, run_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while not events or events[-1]["type"] not in TERMINAL:
        msg = await recv(ws)
        assert msg.get("run_id") == run_id, msg
        events.append(msg)
    return events


async def test_stalled_socket_is_closed_1013_while_others_get_everything(start_server) -> None:
    """A socket that stops reading is closed with 1013 once its bound is passed.

    Meanwhile another user's socket receives its run complete, the stalled user's run itself
    finishes, the server stays healthy and holds no more than the bound for the stalled socket;
    once the client reads again it sees 1013 after a contiguous prefix, its connection is gone
    from the pool, and a new socket resumes from its last seq to a complete run.
    """
    server = await start_server(ws_max_buffered_bytes=BOUND)
    pool = server.runtime.pool
    async with (
        server.client("slowpoke") as slow_http,
        server.client("brisk") as brisk_http,
        connect_as(server, "brisk") as brisk,
        stalled_socket(server, "slowpoke") as stalled,
    ):
        slow_run = await start_run(slow_http, SLOW_INPUT)
        brisk_run = await start_run(brisk_http, {"message": "b" * 2000, "steps": 30, "delay_ms": 5})

        # The other user is served in full while the stalled socket backs up.
        brisk_events = await collect_run(brisk, brisk_run)
        check_run_events(brisk_events)
        assert len(brisk_events) == 1 + 30 * 3 + 1

        async def closed_slow() -> bool:
            return await slow_consumer_closes(brisk_http) >= 1

        await wait_until(closed_slow)
        # What the server holds for the stalled socket stays within the bound.
        assert all(c.buffered_bytes <= BOUND for c in pool.connections("slowpoke"))

        # The stalled user's run is not held back by its socket: it finishes, all stored.
        async def slow_run_finished() -> bool:
            run = (await slow_http.get(f"/v1/runs/{slow_run}")).json()
            return bool(run["status"] == "succeeded")

        await wait_until(slow_run_finished)
        assert (await brisk_http.get("/healthz")).status_code == 200
        assert (await brisk_http.get("/readyz")).status_code == 200

        # Reading again: a contiguous prefix of the run, then the close with 1013.
        received: list[dict[str, Any]] = []
        try:
            while True:
                received.append(await recv(stalled))
        except ConnectionClosed as exc:
            assert exc.rcvd is not None and exc.rcvd.code == 1013, exc
        assert all(e["run_id"] == slow_run for e in received)
        assert [e["seq"] for e in received] == list(range(1, len(received) + 1))
        assert received[-1]["type"] not in TERMINAL  # it was cut off, not finished

        async def slow_connection_gone() -> bool:
            return not pool.has_user("slowpoke")

        await wait_until(slow_connection_gone)

        # It resumes from its last seq on a new socket and completes the run.
        async with connect_as(server, "slowpoke") as again:
            after = received[-1]["seq"] if received else 0
            await again.send(orjson.dumps({"type": "resume", "run_id": slow_run, "after": after}))
            rest = await collect_run(again, slow_run)
        check_run_events(received + rest)
        assert len(received + rest) == 1 + 100 * 3 + 1
        assert await slow_consumer_closes(brisk_http) == 1  # only the stalled socket
