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
SLOW_STEPS = 40
SLOW_INPUT = {"message": "s" * 8000, "steps": SLOW_STEPS}  # ~1 MB of events: 15x the bound


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
    # close_timeout: a client that does not read cannot complete a closing handshake.
    async with connect_as(server, user, sock=sock, max_queue=1, close_timeout=1) as ws:
        yield ws


async def wait_until(condition: Callable[[], Any], failure: str, timeout: float = TIMEOUT) -> None:
    """Poll a server-side condition that has no event to wait on (yielding to the loop)."""
    try:
        async with asyncio.timeout(timeout):
            while not await condition():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"after {timeout} s: {failure}") from None


async def read_until_closed(ws: Any) -> tuple[list[str], int | None]:
    """Every message until the server closes the socket, and the close code it sent."""
    raws: list[str] = []

    async def read() -> int | None:
        try:
            while True:
                raws.append(await ws.recv())
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else None

    return raws, await asyncio.wait_for(read(), TIMEOUT)


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
        brisk_run = await start_run(brisk_http, {"message": "b" * 200, "steps": 30, "delay_ms": 5})

        # The other user is served in full while the stalled socket backs up.
        brisk_events = await collect_run(brisk, brisk_run)
        check_run_events(brisk_events)
        assert len(brisk_events) == 1 + 30 * 3 + 1

        # The stalled user's run is not held back by its socket: it finishes, all stored.
        async def slow_run_finished() -> bool:
            run = (await slow_http.get(f"/v1/runs/{slow_run}")).json()
            return bool(run["status"] == "succeeded")

        await wait_until(slow_run_finished, "the stalled user's run did not finish")
        assert len((await slow_http.get(f"/v1/runs/{slow_run}/events")).json()["events"]) == (
            1 + SLOW_STEPS * 3 + 1
        )

        async def closed_slow() -> bool:
            return await slow_consumer_closes(brisk_http) >= 1

        await wait_until(
            closed_slow,
            f"the stalled socket was not closed with 1013 although its run emitted about "
            f"{SLOW_STEPS * 3 * 8000 // 1024} KiB against a bound of {BOUND // 1024} KiB "
            "(what is written to the socket but not read must count toward the bound)",
            timeout=5.0,
        )
        # What the server holds for the stalled socket stays within the bound.
        assert all(c.buffered_bytes <= BOUND for c in pool.connections("slowpoke"))
        assert (await brisk_http.get("/healthz")).status_code == 200
        assert (await brisk_http.get("/readyz")).status_code == 200

        # Reading again: what was on its way (a contiguous prefix of the run), then 1013.
        raws, code = await read_until_closed(stalled)
        assert code == 1013
        received = [orjson.loads(raw) for raw in raws]
        in_flight = sum(len(raw) for raw in raws)
        assert all(e["run_id"] == slow_run for e in received)
        assert [e["seq"] for e in received] == list(range(1, len(received) + 1))
        assert received[-1]["type"] not in TERMINAL  # it was cut off, not finished
        # Everything that was on its way to the stalled client — the server's queue, socket
        # buffers and the client's own small receive buffer — is a few times the bound at
        # most, not what the run emitted.
        assert in_flight <= 4 * BOUND, f"{in_flight} bytes were held for a stalled client"

        async def slow_connection_gone() -> bool:
            return not pool.has_user("slowpoke")

        await wait_until(slow_connection_gone, "the closed connection is still in the pool")

        # It resumes from its last seq on a new socket and completes the run.
        async with connect_as(server, "slowpoke") as again:
            after = received[-1]["seq"] if received else 0
            await again.send(orjson.dumps({"type": "resume", "run_id": slow_run, "after": after}))
            rest = await collect_run(again, slow_run)
        check_run_events(received + rest)
        assert len(received + rest) == 1 + SLOW_STEPS * 3 + 1
        assert await slow_consumer_closes(brisk_http) == 1  # only the stalled socket


async def test_stalled_socket_that_never_reads_again_is_dropped(start_server) -> None:
    """A client that stops reading for good does not keep its connection or what it held.

    With protocol pings every 0.5 s, the server gives up on it (1013 or keepalive timeout,
    whichever comes first) and the connection leaves the pool while the client still does
    not read; the user's run finishes regardless.
    """
    server = await start_server(ws_max_buffered_bytes=BOUND, ws_ping_interval_s=0.5)
    pool = server.runtime.pool
    async with server.client("sleepy") as http, stalled_socket(server, "sleepy"):
        assert pool.has_user("sleepy")
        run_id = await start_run(http, SLOW_INPUT)

        async def dropped() -> bool:
            return not pool.has_user("sleepy")

        await wait_until(
            dropped,
            "the server still holds the connection of a client that stopped reading",
            timeout=5.0,
        )

        async def finished() -> bool:
            return bool((await http.get(f"/v1/runs/{run_id}")).json()["status"] == "succeeded")

        await wait_until(finished, "the stalled user's run did not finish")
        assert (await http.get("/readyz")).status_code == 200
