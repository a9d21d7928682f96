"""``GET /v1/runs/{id}/stream`` against a real server: framing, resume, and the end of a run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from support import check_run_events

TIMEOUT = 10.0
TERMINAL = {"agent_completed", "agent_error", "agent_cancelled"}


async def sse_messages(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    """The messages of an SSE body: fields of consecutive lines, up to a blank line.

    ``:`` lines are comments (keep-alives); several ``data:`` lines join with newlines.
    """
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if fields:
                yield fields
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data" and "data" in fields:
            fields["data"] += "\n" + value
        else:
            fields[name] = value
    assert not fields, f"the stream ended inside a message: {fields}"


def event_of(message: dict[str, str]) -> dict[str, Any]:
    """The event a message carries, after checking its id and event fields match it."""
    event: dict[str, Any] = orjson.loads(message["data"])
    assert message["id"] == str(event["seq"]), message
    assert message["event"] == event["type"], message
    return event


async def read_stream(
    http: httpx.AsyncClient, run_id: str, *, count: int | None = None, **kwargs: Any
) -> tuple[list[dict[str, Any]], bool]:
    """Events of the run's stream: ``count`` of them then disconnect, or all until it ends.

    Returns the events and whether the server ended the stream itself.
    """
    events: list[dict[str, Any]] = []

    async def read() -> bool:
        async with http.stream("GET", f"/v1/runs/{run_id}/stream", **kwargs) as resp:
            assert resp.status_code == 200, await resp.aread()
            assert resp.headers["content-type"].startswith("text/event-stream")
            async for message in sse_messages(resp):
                events.append(event_of(message))
                if count is not None and len(events) == count:
                    return False  # leaving the block drops the connection mid-stream
            return True

    ended = await asyncio.wait_for(read(), TIMEOUT)
    return events, ended


async def start_run(http: httpx.AsyncClient, input: dict[str, Any]) -> str:
    resp = await http.post("/v1/runs", json={"agent": "echo", "input": input})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["run_id"])


async def stored_events(http: httpx.AsyncClient, run_id: str) -> list[Any]:
    resp = await http.get(f"/v1/runs/{run_id}/events")
    assert resp.status_code == 200, resp.text
    return list(resp.json()["events"])


async def test_stream_of_finished_run_sends_every_event_then_closes(server) -> None:
    """A finished run's stream: every stored event as id/event/data, then the server closes."""
    async with server.client("ada") as http:
        run_id = await start_run(http, {"message": "done", "steps": 3})
        live, ended = await read_stream(http, run_id)  # live, to the terminal event
        assert ended
        assert (await http.get(f"/v1/runs/{run_id}")).json()["status"] == "succeeded"
        replay, ended = await read_stream(http, run_id)
        assert ended, "the stream of a finished run must end after its terminal event"
        stored = await stored_events(http, run_id)
    assert replay == stored
    assert live == stored
    check_run_events(replay)
    assert len(replay) == 1 + 3 * 3 + 1


async def test_stream_resumes_by_last_event_id_and_by_after_without_gap_or_duplicate(
    server,
) -> None:
    """Disconnect mid-run, reconnect with Last-Event-ID, then with ?after=N: no gap, no dup."""
    async with server.client("bea") as http:
        run_id = await start_run(http, {"message": "long", "steps": 25, "delay_ms": 20})
        first, ended = await read_stream(http, run_id, count=5)
        assert not ended
        assert [e["seq"] for e in first] == [1, 2, 3, 4, 5]

        headers = {"Last-Event-ID": str(first[-1]["seq"])}
        second, ended = await read_stream(http, run_id, count=10, headers=headers)
        assert not ended
        assert [e["seq"] for e in second] == list(range(6, 16))

        params = {"after": second[-1]["seq"]}
        third, ended = await read_stream(http, run_id, params=params)
        assert ended, "the stream must end after the terminal event"
        assert third[0]["seq"] == 16
        assert (await http.get(f"/v1/runs/{run_id}")).json()["status"] == "succeeded"
        stored = await stored_events(http, run_id)
    combined = first + second + third
    check_run_events(combined)
    assert combined == stored
    assert len(combined) == 1 + 25 * 3 + 1


async def test_stream_after_the_terminal_event_ends_at_once(server) -> None:
    """Last-Event-ID of the terminal event: the stream has no events and ends."""
    async with server.client("cid") as http:
        run_id = await start_run(http, {"message": "short"})
        events, _ = await read_stream(http, run_id)
        rest, ended = await read_stream(
            http, run_id, headers={"Last-Event-ID": str(events[-1]["seq"])}
        )
    assert events[-1]["type"] in TERMINAL
    assert rest == []
    assert ended


async def test_stream_refuses_bad_resume_points_and_foreign_runs(server) -> None:
    """A non-integer Last-Event-ID or after → 422; another user's run → 404; no token → 401."""
    async with server.client("dot") as http, server.client("eve") as other:
        run_id = await start_run(http, {"message": "mine"})
        resp = await http.get(f"/v1/runs/{run_id}/stream", headers={"Last-Event-ID": "soon"})
        assert resp.status_code == 422
        assert resp.json()["error"]["code"] == "validation_error"
        resp = await http.get(f"/v1/runs/{run_id}/stream", params={"after": "lots"})
        assert resp.status_code == 422
        resp = await other.get(f"/v1/runs/{run_id}/stream")
        assert resp.status_code == 404
        assert resp.json()["error"]["code"] == "not_found"
        assert run_id not in resp.text
        resp = await other.get("/v1/runs/run_doesnotexist/stream")
        assert resp.status_code == 404
        async with server.client() as anonymous:
            assert (await anonymous.get(f"/v1/runs/{run_id}/stream")).status_code == 401


async def test_streams_opened_while_their_runs_emit_deliver_each_event_exactly_once(
    server,
) -> None:
    """POST a run, open its stream at once — while its events are being stored — many times
    over, concurrently: every stream is 1..N exactly, though some events are read from the
    store a moment before their live copies are published."""
    bad: list[tuple[str, list[int]]] = []

    async def user(name: str) -> None:
        async with server.client(name) as http:
            for _ in range(15):
                run_id = await start_run(http, {"message": "race", "steps": 3, "delay_ms": 5})
                events, ended = await read_stream(http, run_id)
                seqs = [e["seq"] for e in events]
                if not ended or seqs != list(range(1, 12)):
                    bad.append((run_id, seqs))

    await asyncio.gather(*(user(f"race{i}") for i in range(8)))
    assert not bad, bad[:3]
