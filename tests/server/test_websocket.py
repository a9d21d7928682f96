"""``/v1/ws`` against a real server: authentication, commands, errors, resume, limits, origins."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from support import check_run_events

TIMEOUT = 10.0
TERMINAL = {"agent_completed", "agent_error", "agent_cancelled"}

# Protocol behaviour that never reaches the store (authentication, framing, origins, limits)
# runs against SQLite only; everything that stores or replays events runs on both databases.
protocol_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


# -- helpers ----------------------------------------------------------------------------------


async def recv(ws: Any, timeout: float = TIMEOUT) -> dict[str, Any]:
    """The next message, parsed; fails the test if none arrives within ``timeout``."""
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout))


async def send(ws: Any, doc: Any) -> None:
    """One text frame holding ``doc`` as JSON."""
    await ws.send(orjson.dumps(doc).decode())


@contextlib.asynccontextmanager
async def connect_as(server: Any, user: str, **kwargs: Any) -> AsyncIterator[Any]:
    """A socket authenticated by header whose ``ready`` has been read."""
    headers = {"Authorization": f"Bearer {server.token(user)}"}
    async with websockets.connect(server.ws_url, additional_headers=headers, **kwargs) as ws:
        assert await recv(ws) == {"type": "ready", "user_id": user}
        yield ws


async def read_until_closed(ws: Any) -> tuple[list[dict[str, Any]], int | None]:
    """Every message until the server closes the socket, and the close code it sent."""
    messages: list[dict[str, Any]] = []

    async def read() -> int | None:
        try:
            while True:
                messages.append(orjson.loads(await ws.recv()))
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else None

    code = await asyncio.wait_for(read(), TIMEOUT)
    return messages, code


async def start_run(ws: Any, input: dict[str, Any], client_ref: str | None = None) -> str:
    """``start_run`` of echo; returns the run id from ``run_accepted`` (the next message).

    Each start gets its own ``client_ref`` unless one is given: it is an idempotency key."""
    client_ref = client_ref or f"ref-{uuid.uuid4().hex}"
    await send(ws, {"type": "start_run", "agent": "echo", "input": input, "client_ref": client_ref})
    accepted = await recv(ws)
    assert accepted["type"] == "run_accepted", accepted
    return str(accepted["run"]["run_id"])


async def collect_runs(ws: Any, run_ids: set[str]) -> dict[str, list[dict[str, Any]]]:
    """The events of ``run_ids`` as received, until each has had its terminal event."""
    events: dict[str, list[dict[str, Any]]] = {r: [] for r in run_ids}
    done: set[str] = set()
    while done != run_ids:
        msg = await recv(ws)
        assert msg.get("run_id") in run_ids, f"unexpected message {msg}"
        events[msg["run_id"]].append(msg)
        if msg["type"] in TERMINAL:
            done.add(msg["run_id"])
    return events


async def assert_usable(ws: Any) -> None:
    """The connection still answers a ping with a pong."""
    await send(ws, {"type": "ping"})
    assert await recv(ws) == {"type": "pong"}


async def wait_until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll a server-side condition that has no event to wait on (yielding to the loop)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def stored_events(server: Any, user: str, run_id: str, after: int = 0) -> list[Any]:
    async with server.client(user) as http:
        resp = await http.get(f"/v1/runs/{run_id}/events", params={"after": after})
        assert resp.status_code == 200, resp.text
        return list(resp.json()["events"])


# -- authentication ---------------------------------------------------------------------------


@protocol_only
async def test_header_auth_sends_ready_first(server) -> None:
    """A valid bearer header on the upgrade: the first message is ready with the user id."""
    headers = {"Authorization": f"Bearer {server.token('alice')}"}
    async with websockets.connect(server.ws_url, additional_headers=headers) as ws:
        assert await recv(ws) == {"type": "ready", "user_id": "alice"}
        await assert_usable(ws)


@protocol_only
async def test_first_message_auth_sends_ready(server) -> None:
    """No header, then an auth message with a valid token: ready with the user id."""
    async with websockets.connect(server.ws_url) as ws:
        await send(ws, {"type": "auth", "token": server.token("bob")})
        assert await recv(ws) == {"type": "ready", "user_id": "bob"}
        await assert_usable(ws)


@protocol_only
async def test_no_auth_within_time_limit_is_error_then_close_1008(start_server) -> None:
    """A socket that never authenticates gets one error and is closed with 1008."""
    server = await start_server(ws_auth_timeout_s=0.5)
    async with websockets.connect(server.ws_url) as ws:
        messages, code = await read_until_closed(ws)
    assert [m["type"] for m in messages] == ["error"]
    assert messages[0]["code"] == "unauthorized"
    assert code == 1008


@protocol_only
async def test_bad_token_is_error_unauthorized_then_close_1008(server) -> None:
    """A forged or expired token, by header or auth message: error unauthorized, close 1008."""
    forged = server.token("carol") + "x"  # the signature no longer matches
    expired = server.token("carol", ttl_s=-120)  # past exp plus the 30 s leeway
    for token in (forged, expired, "not-a-jwt"):
        for by_header in (True, False):
            headers = {"Authorization": f"Bearer {token}"} if by_header else {}
            async with websockets.connect(server.ws_url, additional_headers=headers) as ws:
                if not by_header:
                    await send(ws, {"type": "auth", "token": token})
                messages, code = await read_until_closed(ws)
            case = (token, by_header)
            assert [(m["type"], m["code"]) for m in messages] == [("error", "unauthorized")], case
            assert code == 1008, case


@protocol_only
async def test_non_auth_first_message_is_error_then_close_1008(server) -> None:
    """Before authentication nothing but auth is accepted: error, then close 1008."""
    firsts: list[Any] = [
        {"type": "ping"},
        {"type": "start_run", "agent": "echo", "input": {"message": "x"}},
        {"type": "auth"},
        {"type": "auth", "token": 42},
        "not json at all",
        b"\x00\x01binary",
    ]
    for first in firsts:
        async with websockets.connect(server.ws_url) as ws:
            await (ws.send(first) if isinstance(first, str | bytes) else send(ws, first))
            messages, code = await read_until_closed(ws)
        assert [(m["type"], m["code"]) for m in messages] == [("error", "unauthorized")], first
        assert code == 1008, first


# -- commands ---------------------------------------------------------------------------------


@protocol_only
async def test_ping_gets_pong(server) -> None:
    """{"type": "ping"} is answered with exactly {"type": "pong"}, repeatedly."""
    async with connect_as(server, "dave") as ws:
        for _ in range(3):
            await assert_usable(ws)


async def test_start_run_is_accepted_with_client_ref_then_events_arrive_live(server) -> None:
    """start_run → run_accepted echoing client_ref with the run object, then all its events."""
    async with connect_as(server, "erin") as ws:
        input = {"message": "hello", "steps": 2}
        await send(ws, {"type": "start_run", "agent": "echo", "input": input, "client_ref": "c-1"})
        accepted = await recv(ws)
        assert accepted["type"] == "run_accepted"
        assert accepted["client_ref"] == "c-1"
        run = accepted["run"]
        assert run["agent"] == "echo"
        assert run["input"] == input
        assert run["status"] in ("queued", "running")
        assert run["run_id"]
        assert run["thread_id"]
        events = (await collect_runs(ws, {run["run_id"]}))[run["run_id"]]
    check_run_events(events)
    assert [e["type"] for e in events] == [
        "agent_started",
        *["agent_thinking", "tool_executing", "tool_completed"] * 2,
        "agent_completed",
    ]
    assert events[-1]["data"]["output"] == {"message": "hello", "steps": 2}
    assert all(e["thread_id"] == run["thread_id"] for e in events)
    assert events == await stored_events(server, "erin", run["run_id"])


async def test_bad_start_run_is_an_error_and_the_connection_stays_usable(server) -> None:
    """start_run with bad input, unknown agent or foreign thread: an error; ping still works."""
    echo = {"type": "start_run", "agent": "echo"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({**echo, "input": {"steps": 2}}, "validation_error"),
        ({**echo, "input": {"message": "m", "steps": 0}}, "validation_error"),
        ({**echo, "input": {"message": "m" * 8193}}, "validation_error"),
        ({**echo, "input": "nope"}, "validation_error"),
        ({**echo, "input": {"message": "m"}, "multitask": "sometimes"}, "validation_error"),
        ({**echo, "input": {"message": "m"}, "surprise": 1}, "validation_error"),
        ({"type": "start_run", "input": {"message": "m"}}, "validation_error"),
        ({"type": "start_run", "agent": "no-such-agent", "input": {}}, "not_found"),
        ({**echo, "input": {"message": "m"}, "thread_id": "thread_nope"}, "not_found"),
    ]
    async with connect_as(server, "frank") as ws:
        for message, code in cases:
            await send(ws, {**message, "client_ref": "bad-1"})
            error = await recv(ws)
            assert (error["type"], error["code"]) == ("error", code), message
            assert isinstance(error["message"], str)
            assert error["message"]
            await assert_usable(ws)
        run_id = await start_run(ws, {"message": "after all that"})
        assert (await collect_runs(ws, {run_id}))[run_id][-1]["type"] == "agent_completed"
    async with server.client("frank") as http:
        assert len((await http.get("/v1/runs")).json()["runs"]) == 1  # no bad one was created


@protocol_only
async def test_malformed_message_is_an_error_and_the_connection_is_kept(server) -> None:
    """Garbage text, non-object JSON, unknown types, garbage binary: error, connection kept."""
    frames: list[str | bytes] = [
        "garbage {",
        "",
        "[1, 2, 3]",
        "42",
        '"just a string"',
        "null",
        "{}",
        '{"type": 7}',
        '{"type": "no_such_command"}',
        '{"type": "auth", "token": "again"}',
        '{"type": "cancel_run"}',
        '{"type": "resume", "after": 0}',
        '{"type": "resume", "run_id": "r", "after": "lots"}',
        '{"type": "resume", "run_id": "r", "after": -1}',
        b"\xff\xfe\x00garbage",
        b'{"type": ',
    ]
    async with connect_as(server, "gina") as ws:
        for frame in frames:
            await ws.send(frame)
            error = await recv(ws)
            assert (error["type"], error["code"]) == ("error", "validation_error"), frame
            assert error["message"], frame
            await assert_usable(ws)


@protocol_only
async def test_message_over_64_kib_closes_1009(server) -> None:
    """A client message over 64 KiB closes the connection with 1009; one of 64 KiB is fine."""
    async with connect_as(server, "hank") as ws:
        doc = {"type": "ping", "pad": ""}
        doc["pad"] = "x" * (64 * 1024 - len(orjson.dumps(doc)))
        await send(ws, doc)  # exactly 64 KiB
        assert await recv(ws) == {"type": "pong"}
        doc["pad"] += "x"
        await send(ws, doc)
        messages, code = await read_until_closed(ws)
    assert messages == []
    assert code == 1009


async def test_cancel_run_ends_with_agent_cancelled_and_tool_events_paired(server) -> None:
    """cancel_run on a running run: it ends with agent_cancelled, every tool call completed."""
    async with connect_as(server, "ivy") as ws:
        run_id = await start_run(ws, {"message": "slow", "steps": 50, "delay_ms": 20})
        events = [await recv(ws)]
        while events[-1]["type"] != "tool_executing":
            events.append(await recv(ws))
        await send(ws, {"type": "cancel_run", "run_id": run_id})
        events += (await collect_runs(ws, {run_id}))[run_id]
        await assert_usable(ws)
    check_run_events(events)
    assert events[-1]["type"] == "agent_cancelled"
    assert "reason" in events[-1]["data"]
    assert sum(e["type"] == "tool_completed" for e in events) < 50
    async with server.client("ivy") as http:
        assert (await http.get(f"/v1/runs/{run_id}")).json()["status"] == "cancelled"


async def test_cancel_of_finished_or_unknown_run_is_an_error(server) -> None:
    """cancel_run of a finished run → conflict; of an unknown run → not_found; socket kept."""
    async with connect_as(server, "jack") as ws:
        run_id = await start_run(ws, {"message": "quick"})
        await collect_runs(ws, {run_id})
        await send(ws, {"type": "cancel_run", "run_id": run_id})
        assert (await recv(ws))["code"] == "conflict"
        await send(ws, {"type": "cancel_run", "run_id": "run_doesnotexist"})
        assert (await recv(ws))["code"] == "not_found"
        await assert_usable(ws)


async def test_other_users_run_is_not_found_for_resume_and_cancel(server) -> None:
    """resume or cancel_run of another user's run: not_found, and none of its events arrive."""
    async with connect_as(server, "kate") as owner, connect_as(server, "leo") as other:
        run_id = await start_run(owner, {"message": "private", "steps": 3, "delay_ms": 20})
        await send(other, {"type": "resume", "run_id": run_id, "after": 0})
        error = await recv(other)
        assert (error["type"], error["code"]) == ("error", "not_found")
        assert run_id not in error["message"]
        await send(other, {"type": "cancel_run", "run_id": run_id})
        assert (await recv(other))["code"] == "not_found"
        events = (await collect_runs(owner, {run_id}))[run_id]
        assert events[-1]["type"] == "agent_completed"  # the other user could not cancel it
        await send(other, {"type": "ping"})
        assert await recv(other) == {"type": "pong"}  # nothing of the run arrived before it


# -- resume -----------------------------------------------------------------------------------


async def test_resume_of_finished_run_replays_exactly_the_stored_events_after_n(server) -> None:
    """resume after N of a finished run: the stored events with seq > N, in order, nothing else."""
    async with connect_as(server, "mia") as ws:
        run_id = await start_run(ws, {"message": "done", "steps": 3})
        await collect_runs(ws, {run_id})
        for after in (0, 4, 10, 11, 50):
            await send(ws, {"type": "resume", "run_id": run_id, "after": after})
            await send(ws, {"type": "ping"})  # handled after resume: pong marks the replay's end
            replayed = []
            while (msg := await recv(ws)) != {"type": "pong"}:
                replayed.append(msg)
            assert replayed == await stored_events(server, "mia", run_id, after), after
            assert [e["seq"] for e in replayed] == list(range(after + 1, 12)), after


async def test_resume_of_running_run_on_new_socket_has_no_gap_and_no_duplicate(server) -> None:
    """Disconnect mid-run, reconnect, resume after the last seq: complete, in order, no dups.

    Live events may reach the new socket before the server reads ``resume``; from the replay's
    first event (seq after+1) on, the socket gets every later event exactly once, in order.
    """
    async with connect_as(server, "nina") as ws1:
        run_id = await start_run(ws1, {"message": "long", "steps": 30, "delay_ms": 20})
        first = []
        while len(first) < 10:
            first.append(await recv(ws1))
    after = first[-1]["seq"]
    assert [e["seq"] for e in first] == list(range(1, after + 1))

    async with connect_as(server, "nina") as ws2:
        await send(ws2, {"type": "resume", "run_id": run_id, "after": after})
        await send(ws2, {"type": "ping"})
        second: list[dict[str, Any]] = []
        ponged = False
        # After the pong the replay is done; the run's last event then ends the stream.
        while not (ponged and second and second[-1]["type"] in TERMINAL):
            msg = await recv(ws2)
            if msg == {"type": "pong"}:
                ponged = True
                continue
            assert msg["run_id"] == run_id, msg
            second.append(msg)

    seqs = [e["seq"] for e in second]
    last = seqs[-1]
    start = len(seqs) - 1 - seqs[::-1].index(after + 1)  # where the replay begins
    live_before, resumed = seqs[:start], seqs[start:]
    assert resumed == list(range(after + 1, last + 1)), f"gap or duplicate after resume: {seqs}"
    if live_before:
        assert live_before == list(range(live_before[0], live_before[0] + len(live_before)))
    assert all(s > after for s in live_before)
    union = {(e["run_id"], e["seq"]): e for e in first + second}
    assert sorted(s for _, s in union) == list(range(1, last + 1))
    full = first + second[start:]
    check_run_events(full)
    assert full == await stored_events(server, "nina", run_id)
    assert len(full) == 1 + 30 * 3 + 1


async def test_resume_of_a_run_larger_than_the_buffer_bound_is_delivered_in_full(
    start_server,
) -> None:
    """A reading client resumes a run whose stored events far exceed the per-connection bound.

    The replay goes at the socket's pace; the client is not a slow consumer and gets it all.
    """
    server = await start_server(ws_max_buffered_bytes=64 * 1024)
    # The run is made while no socket of the user is open (an agent may emit a burst far
    # over the bound faster than anyone reads): only the replay is under test here.
    async with server.client("uma") as http:
        body = {"agent": "echo", "input": {"message": "u" * 8000, "steps": 20}}  # ~0.5 MB
        run_id = (await http.post("/v1/runs", json=body)).json()["run_id"]
        async with http.stream("GET", f"/v1/runs/{run_id}/stream") as stream:
            async for _ in stream.aiter_bytes():
                pass
    live = await stored_events(server, "uma", run_id)
    async with connect_as(server, "uma") as ws:
        await send(ws, {"type": "resume", "run_id": run_id, "after": 0})
        await send(ws, {"type": "ping"})
        replayed = []
        while (msg := await recv(ws)) != {"type": "pong"}:
            replayed.append(msg)
    assert len(live) == 1 + 20 * 3 + 1
    assert replayed == live


# -- fan-out and limits -----------------------------------------------------------------------


async def test_every_connection_of_a_user_gets_every_event_of_all_their_runs(server) -> None:
    """Two sockets of one user, three runs: each socket gets all events of all three, in order."""
    async with connect_as(server, "olga") as ws1, connect_as(server, "olga") as ws2:
        async with server.client("olga") as http:
            run_ids = set()
            for i in range(3):
                body = {"agent": "echo", "input": {"message": f"m{i}", "steps": 3, "delay_ms": 5}}
                resp = await http.post("/v1/runs", json=body)
                assert resp.status_code == 202, resp.text
                run_ids.add(resp.json()["run_id"])
        got1, got2 = await asyncio.gather(collect_runs(ws1, run_ids), collect_runs(ws2, run_ids))
    for run_id in run_ids:
        check_run_events(got1[run_id])
        assert got1[run_id] == got2[run_id]
        assert got1[run_id] == await stored_events(server, "olga", run_id)


@protocol_only
async def test_connection_cap_refuses_one_more_with_error_and_1008(start_server) -> None:
    """At max_connections_per_user, one more socket gets an error and 1008; others keep going."""
    server = await start_server(max_connections_per_user=2)
    async with connect_as(server, "pat") as ws1, connect_as(server, "pat") as ws2:
        headers = {"Authorization": f"Bearer {server.token('pat')}"}
        async with websockets.connect(server.ws_url, additional_headers=headers) as ws3:
            messages, code = await read_until_closed(ws3)
        assert [m["type"] for m in messages] == ["error"]
        assert code == 1008
        # The cap is per user: someone else connects fine.
        async with connect_as(server, "quinn") as other:
            await assert_usable(other)
        await assert_usable(ws1)
        await assert_usable(ws2)
        run_id = await start_run(ws1, {"message": "still here", "steps": 2})
        got1, got2 = await asyncio.gather(collect_runs(ws1, {run_id}), collect_runs(ws2, {run_id}))
        check_run_events(got1[run_id])
        assert got1 == got2
        # A freed slot can be taken again once the server has seen the close.
        await ws2.close()
        await wait_until(lambda: len(server.runtime.pool.connections("pat")) == 1)
        async with connect_as(server, "pat") as ws4:
            await assert_usable(ws4)


# -- the upgrade ------------------------------------------------------------------------------


@protocol_only
async def test_origin_allowlist_refuses_foreign_origins_with_403(start_server) -> None:
    """Origin outside CORRAL_ALLOWED_ORIGINS → 403 before the upgrade; listed, absent, same ok."""
    server = await start_server(allowed_origins=["http://good.example"])
    token = server.token("rita")
    headers = {"Authorization": f"Bearer {token}"}
    for origin in ("http://evil.example", "http://good.example.evil.example", "null"):
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(server.ws_url, origin=origin, additional_headers=headers):
                pass
        assert info.value.response.status_code == 403, origin
    for origin in ("http://good.example", None, server.url):
        async with websockets.connect(
            server.ws_url, origin=origin, additional_headers=headers
        ) as ws:
            assert await recv(ws) == {"type": "ready", "user_id": "rita"}, origin
            await assert_usable(ws)


@protocol_only
async def test_origin_without_allowlist_allows_same_origin_only(server) -> None:
    """With no allowlist: same-origin pages and Origin-less clients connect; others get 403."""
    headers = {"Authorization": f"Bearer {server.token('sam')}"}
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(
            server.ws_url, origin="http://evil.example", additional_headers=headers
        ):
            pass
    assert info.value.response.status_code == 403
    async with websockets.connect(
        server.ws_url, origin=server.url, additional_headers=headers
    ) as ws:
        assert await recv(ws) == {"type": "ready", "user_id": "sam"}


@protocol_only
async def test_permessage_deflate_is_not_negotiated(server) -> None:
    """A client offering permessage-deflate gets no Sec-WebSocket-Extensions back."""
    headers = {"Authorization": f"Bearer {server.token('tom')}"}
    async with websockets.connect(
        server.ws_url, compression="deflate", additional_headers=headers
    ) as ws:
        assert "permessage-deflate" in ws.request.headers["Sec-WebSocket-Extensions"]
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
        assert await recv(ws) == {"type": "ready", "user_id": "tom"}
