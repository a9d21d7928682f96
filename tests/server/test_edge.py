"""The server's edge over raw sockets: connections that never become requests are closed,
oversized heads are answered, and one address cannot hold every descriptor (contract §3)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets

from conftest import LiveServer, StartServer, _TestServer
from corral.server.app import create_app
from corral.server.edge import Edge
from corral.server.runner import uvicorn_config
from corral.settings import Settings
from support import ServerProcess, spawn_server
from support_sockets import RawConnection, open_raw, raw, request_head, upgrade_head


@pytest.fixture
async def database_url(sqlite_url: str) -> str:
    """What happens at the edge never reaches the store: SQLite only."""
    return sqlite_url


DEADLINE = 1.0  # request_timeout_s in these tests
SLACK = 4.0  # a loaded machine answers late, never early
PATIENT = 30.0  # a deadline no test waits for: what happens must happen before it


def fill_headers(count: int, size: int) -> tuple[str, ...]:
    """``count`` header lines of ``size`` bytes each as the server counts them
    (name + value + ": " + CRLF)."""
    return tuple(f"x-fill-{i:03d}: " + "v" * (size - 14) for i in range(count))


async def served(url: str, source: str = "127.0.0.1") -> int:
    """The status of ``GET /healthz`` on a new connection from ``source``."""
    conn = await open_raw(url, source)
    try:
        await conn.send(request_head())
        return (await conn.read_response()).status
    finally:
        conn.close()


def edge_of(server: LiveServer) -> Edge:
    """The per-server connection counts the server's protocols share."""
    return server.server.config.http_protocol_class.edge  # type: ignore[no-any-return]


async def held_from_localhost(server: LiveServer, count: int, within: float = 10.0) -> None:
    """Wait until the server counts ``count`` open connections from 127.0.0.1 (closes and
    accepts reach it a moment after the client sees them)."""
    edge = edge_of(server)
    async with asyncio.timeout(within):
        while edge.open_connections("127.0.0.1") != count:
            await asyncio.sleep(0.01)


async def served_again(server: LiveServer) -> None:
    """Once every slot of 127.0.0.1 is back, a new connection from it gets /healthz 200."""
    await held_from_localhost(server, 0)
    assert await served(server.url) == 200
    await held_from_localhost(server, 0)


# -- settings ---------------------------------------------------------------------------------


def test_request_deadline_and_address_cap_defaults_and_env_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """10 s for a complete request head and 256 connections per address unless told otherwise;
    CORRAL_MAX_CONNECTIONS_PER_IP and CORRAL_REQUEST_TIMEOUT_S set them."""
    fields = Settings.model_fields
    assert fields["request_timeout_s"].default == 10.0
    assert fields["max_connections_per_ip"].default == 256
    monkeypatch.setenv("CORRAL_MAX_CONNECTIONS_PER_IP", "7")
    monkeypatch.setenv("CORRAL_REQUEST_TIMEOUT_S", "2.5")
    settings = Settings()
    assert (settings.max_connections_per_ip, settings.request_timeout_s) == (7, 2.5)


# -- the request deadline ---------------------------------------------------------------------


async def test_idle_connection_is_closed_at_the_request_deadline(
    start_server: StartServer,
) -> None:
    """A connection that sends nothing is closed once the deadline passes, and not before."""
    server = await start_server(request_timeout_s=DEADLINE)
    async with raw(server.url) as conn:
        elapsed = await conn.read_until_closed(DEADLINE + SLACK)
    assert elapsed >= DEADLINE * 0.9
    assert conn.received == b""


async def test_trickled_partial_head_is_closed_at_the_request_deadline(
    start_server: StartServer,
) -> None:
    """A head that keeps arriving a byte at a time but never ends is closed at the deadline:
    bytes do not extend it."""
    server = await start_server(request_timeout_s=DEADLINE)
    async with raw(server.url) as conn:

        async def trickle() -> None:
            await conn.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            with contextlib.suppress(ConnectionError):
                while True:
                    await conn.send(b"a")
                    await asyncio.sleep(0.1)  # the client's pace, the behaviour under test

        task = asyncio.create_task(trickle())
        try:
            elapsed = await conn.read_until_closed(DEADLINE + SLACK)
        finally:
            task.cancel()
    assert elapsed >= DEADLINE * 0.9
    assert conn.received == b""


async def test_partial_websocket_upgrade_is_closed_at_the_request_deadline(
    start_server: StartServer,
) -> None:
    """An upgrade head without its blank line gets no 101 and is closed at the deadline."""
    server = await start_server(request_timeout_s=DEADLINE)
    async with raw(server.url) as conn:
        await conn.send(upgrade_head()[:-2])
        elapsed = await conn.read_until_closed(DEADLINE + SLACK)
    assert elapsed >= DEADLINE * 0.9
    assert conn.received == b""


async def test_idle_keep_alive_connection_is_closed_within_the_deadline(
    start_server: StartServer,
) -> None:
    """After a response, a connection that sends nothing more is closed within the deadline
    (here shorter than uvicorn's 5 s keep-alive, which alone would close it later)."""
    server = await start_server(request_timeout_s=DEADLINE)
    async with raw(server.url) as conn:
        await conn.send(request_head())
        assert (await conn.read_response()).status == 200
        answered = time.monotonic()
        await conn.read_until_closed(DEADLINE + 2.5)
    assert time.monotonic() - answered < DEADLINE + 2.5


async def test_keep_alive_trickle_is_closed_within_the_deadline(
    start_server: StartServer,
) -> None:
    """A byte every now and then after a response (which cancels uvicorn's keep-alive timer)
    does not keep the connection: the next request must be complete within the deadline."""
    server = await start_server(request_timeout_s=DEADLINE)
    async with raw(server.url) as conn:
        await conn.send(request_head())
        assert (await conn.read_response()).status == 200
        answered = time.monotonic()

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for byte in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 500:
                    await conn.send(bytes([byte]))
                    await asyncio.sleep(0.05)  # the client's pace, the behaviour under test

        task = asyncio.create_task(trickle())
        try:
            await conn.read_until_closed(DEADLINE + SLACK)
        finally:
            task.cancel()
    assert time.monotonic() - answered >= DEADLINE * 0.9
    assert conn.received == b""  # closed, not answered


async def test_responses_longer_than_the_deadline_are_not_cut(
    start_server: StartServer,
) -> None:
    """The deadline is for the request: an SSE run streaming for twice as long completes, and
    an authenticated WebSocket stays usable after the deadline has passed."""
    server = await start_server(request_timeout_s=DEADLINE)
    body = {"agent": "echo", "input": {"message": "slow", "steps": 4, "delay_ms": 500}}
    async with server.client("ana") as client:
        run = (await client.post("/v1/runs", json=body)).json()
        async with client.stream("GET", f"/v1/runs/{run['run_id']}/stream") as stream:
            text = (await stream.aread()).decode()
    assert "event: agent_completed" in text
    headers = server.headers("ana")
    async with websockets.connect(server.ws_url, additional_headers=headers) as ws:
        assert orjson.loads(await ws.recv())["type"] == "ready"
        await asyncio.sleep(DEADLINE * 1.5)  # time passing is what is under test
        await ws.send('{"type": "ping"}')
        assert orjson.loads(await asyncio.wait_for(ws.recv(), SLACK)) == {"type": "pong"}


async def test_silent_websocket_is_bounded_by_the_upgrade_and_sign_in_deadlines(
    start_server: StartServer,
) -> None:
    """An upgrade completed just before the request deadline and then silent is closed 1008
    by the sign-in deadline: the two together bound how long a socket is held unsigned."""
    upgrade_deadline, sign_in_deadline = 2.0, 1.0
    server = await start_server(
        request_timeout_s=upgrade_deadline, ws_auth_timeout_s=sign_in_deadline
    )
    async with raw(server.url) as conn:
        head = upgrade_head()
        await conn.send(head[:-2])
        await asyncio.sleep(upgrade_deadline / 2)  # the client's pace: late, within the deadline
        await conn.send(head[-2:])
        assert (await conn.read_response()).status == 101
        while True:
            opcode, payload = await conn.read_frame(upgrade_deadline + sign_in_deadline + SLACK)
            if opcode == 0x8:
                break
        elapsed = time.monotonic() - conn.opened_at
    assert int.from_bytes(payload[:2], "big") == 1008
    assert upgrade_deadline / 2 + sign_in_deadline * 0.9 <= elapsed
    assert elapsed < upgrade_deadline + sign_in_deadline + SLACK


async def test_upgrade_the_app_never_answers_is_closed_at_the_deadline_from_the_accept(
    tmp_path: Path, sqlite_url: str
) -> None:
    """A WebSocket the app neither accepts nor refuses (a stalled sign-in hook) is closed when
    the request deadline passes counted from the TCP accept: a head sent late does not buy the
    upgrade a deadline of its own."""
    deadline = 3.0
    settings = Settings(
        data_dir=tmp_path, database_url=sqlite_url, port=0, request_timeout_s=deadline
    )
    corral_app = create_app(settings)

    async def stalling(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await corral_app(scope, receive, send)
            return
        await receive()  # websocket.connect; then neither accept nor close
        await receive()  # returns websocket.disconnect once the server drops the socket

    server = _TestServer(uvicorn_config(settings, stalling))
    task = asyncio.create_task(server.serve())
    try:
        await asyncio.wait_for(server.ready_event.wait(), 30)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with raw(f"http://127.0.0.1:{port}") as conn:
            await asyncio.sleep(deadline * 2 / 3)  # the client's pace: a late, complete head
            await conn.send(upgrade_head())
            elapsed = await conn.read_until_closed(deadline + SLACK)
        # From the upgrade it would be 2 s + 3 s; from the accept it is 3 s.
        assert deadline * 0.9 <= elapsed < deadline * 1.5, elapsed
        assert b"101" not in conn.received
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


# -- head limits ------------------------------------------------------------------------------


async def _refused(server: LiveServer, head: bytes, status: int, code: str) -> None:
    async with raw(server.url) as conn:
        await conn.send(head)
        response = await conn.read_response(SLACK)
        assert response.status == status, response
        assert response.json()["error"]["code"] == code
        assert response.json()["error"]["message"]
        # Answered before the app, it still carries a request id (contract §13).
        assert len(response.headers["x-request-id"]) == 32
        await conn.read_until_closed(SLACK)


@pytest.mark.parametrize("make_head", [request_head, upgrade_head], ids=["http", "upgrade"])
async def test_300_headers_are_answered_431_and_closed(
    start_server: StartServer, make_head: Any
) -> None:
    """300 header fields get 431 headers_too_large and a close, on requests and upgrades."""
    server = await start_server(request_timeout_s=PATIENT)
    await _refused(server, make_head(headers=fill_headers(300, 20)), 431, "headers_too_large")


@pytest.mark.parametrize("make_head", [request_head, upgrade_head], ids=["http", "upgrade"])
async def test_17_kib_of_headers_are_answered_431_and_closed(
    start_server: StartServer, make_head: Any
) -> None:
    """17 KiB of headers (in 17 fields) get 431 and a close, on requests and upgrades."""
    server = await start_server(request_timeout_s=PATIENT)
    await _refused(server, make_head(headers=fill_headers(17, 1024)), 431, "headers_too_large")


async def test_heads_at_the_limits_are_served_and_one_more_field_is_not(
    start_server: StartServer,
) -> None:
    """100 fields in just under 16 KiB are answered 200; a 101st field is 431."""
    server = await start_server(request_timeout_s=PATIENT)
    host = "127.0.0.1"  # Host counts: 4 + 9 + 4 bytes and one field
    async with raw(server.url) as conn:
        await conn.send(request_head(host=host, headers=fill_headers(99, 165)))
        assert (await conn.read_response()).status == 200
    await _refused(
        server,
        request_head(host=host, headers=fill_headers(100, 20)),
        431,
        "headers_too_large",
    )


async def test_9_kb_header_line_on_an_upgrade_is_answered_at_once(
    start_server: StartServer,
) -> None:
    """A single 9 KB header line on an upgrade (over websockets' 8 KiB line limit) is answered
    431 and closed at once, long before any deadline — not left open without a byte."""
    server = await start_server(request_timeout_s=PATIENT)
    head = upgrade_head(headers=("X-Big: " + "a" * 9000,))
    await _refused(server, head, 431, "headers_too_large")


async def test_endless_header_line_is_answered_before_the_deadline(
    start_server: StartServer,
) -> None:
    """A header line that never ends is answered 431 once it is past any head the limits
    allow, without waiting for the deadline or buffering it whole."""
    server = await start_server(request_timeout_s=PATIENT)
    await _refused(
        server,
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Endless: " + b"a" * 48 * 1024,
        431,
        "headers_too_large",
    )


async def test_request_target_over_8_kib_is_answered_414(start_server: StartServer) -> None:
    """A 9 KiB path gets 414 uri_too_long and a close."""
    server = await start_server(request_timeout_s=PATIENT)
    await _refused(server, request_head(path="/" + "p" * 9 * 1024), 414, "uri_too_long")


async def test_upgrade_with_a_body_is_answered_400_not_left_open(
    start_server: StartServer,
) -> None:
    """An upgrade websockets refuses after the head (here: it carries a body) is answered 400
    bad_request and closed, not left open without a byte."""
    server = await start_server(request_timeout_s=PATIENT)
    head = upgrade_head(headers=("Content-Length: 5",)) + b"hello"
    await _refused(server, head, 400, "bad_request")


# -- connections per address ------------------------------------------------------------------


async def test_connections_beyond_the_address_cap_are_refused_while_another_address_is_served(
    start_server: StartServer,
) -> None:
    """With 4 incomplete connections from 127.0.0.1 (the cap), a 5th gets 429 rate_limited and
    a close at once, while 127.0.0.2 still gets /healthz 200."""
    server = await start_server(max_connections_per_ip=4, request_timeout_s=PATIENT)
    held = [await open_raw(server.url) for _ in range(4)]
    try:
        for conn in held:
            await conn.send(b"GET /healthz HTTP/1.1\r\n")
        # The server accepts in arrival order, so these four are counted before the fifth.
        async with raw(server.url) as extra:
            response = await extra.read_response(SLACK)
            assert response.status == 429
            assert response.json()["error"]["code"] == "rate_limited"
            assert response.headers["retry-after"] == "1"
            await extra.read_until_closed(SLACK)
        assert await served(server.url, source="127.0.0.2") == 200
        async with httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2"), base_url=server.url
        ) as other:
            assert (await other.get("/healthz")).status_code == 200
    finally:
        for conn in held:
            conn.close()


async def test_websockets_count_toward_the_address_cap_until_they_close(
    start_server: StartServer,
) -> None:
    """Upgraded connections keep their slot (neither counted twice nor released early) and
    give it back when they close."""
    server = await start_server(max_connections_per_ip=3, request_timeout_s=PATIENT)
    headers = server.headers("wes")
    async with contextlib.AsyncExitStack() as stack:
        sockets = []
        for _ in range(3):
            ws = await stack.enter_async_context(
                websockets.connect(server.ws_url, additional_headers=headers)
            )
            assert orjson.loads(await ws.recv())["type"] == "ready"
            sockets.append(ws)
        await held_from_localhost(server, 3)
        assert await served(server.url) == 429
        await sockets[0].close()
        await held_from_localhost(server, 2)
        assert await served(server.url) == 200


async def test_every_way_a_connection_ends_gives_its_slot_back(
    start_server: StartServer,
) -> None:
    """With a cap of 1, a new connection is served after each of: the client closing, the
    deadline, a 431, Connection: close, a refused WebSocket, a closed WebSocket, and a refused
    connection (which never took the slot)."""
    server = await start_server(max_connections_per_ip=1, request_timeout_s=DEADLINE)
    await served_again(server)

    async with raw(server.url) as conn:  # the client closes an idle connection
        await held_from_localhost(server, 1)
        assert await served(server.url) == 429  # the slot is taken; the refusal takes none
        await held_from_localhost(server, 1)
    await served_again(server)

    async with raw(server.url) as conn:  # the server closes it at the deadline
        await conn.read_until_closed(DEADLINE + SLACK)
    await served_again(server)

    async with raw(server.url) as conn:  # 431
        await conn.send(request_head(headers=fill_headers(300, 20)))
        assert (await conn.read_response()).status == 431
        await conn.read_until_closed(SLACK)
    await served_again(server)

    async with raw(server.url) as conn:  # Connection: close
        await conn.send(request_head(headers=("Connection: close",)))
        assert (await conn.read_response()).status == 200
        await conn.read_until_closed(SLACK)
    await served_again(server)

    async with raw(server.url) as conn:  # a WebSocket refused before the upgrade (origin)
        await conn.send(upgrade_head(host="evil.example", headers=("Origin: http://evil.example",)))
        assert (await conn.read_response()).status == 403
        await conn.read_until_closed(SLACK)
    await served_again(server)

    async with websockets.connect(server.ws_url, additional_headers=server.headers("c")) as ws:
        assert orjson.loads(await ws.recv())["type"] == "ready"
    await served_again(server)


async def test_the_address_cap_keeps_descriptors_for_other_clients(
    tmp_path: Path, sqlite_url: str, server_processes: list[ServerProcess]
) -> None:
    """`corral serve` limited to 256 descriptors, with 300 incomplete connections from
    127.0.0.1 (cap 50): /healthz from 127.0.0.2 still answers 200."""

    def limit_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    proc = spawn_server(
        tmp_path / "data",
        sqlite_url,
        preexec_fn=limit_descriptors,
        CORRAL_MAX_CONNECTIONS_PER_IP="50",
    )
    server_processes.append(proc)
    held: list[RawConnection] = []
    try:
        for _ in range(300):
            conn = await open_raw(proc.url)
            held.append(conn)
            with contextlib.suppress(ConnectionError):
                await conn.send(b"GET /healthz HTTP/1.1\r\n")
        async with httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2"),
            base_url=proc.url,
            timeout=10,
        ) as other:
            assert (await other.get("/healthz")).status_code == 200
    finally:
        for conn in held:
            conn.close()
