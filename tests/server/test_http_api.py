"""The HTTP API of contract §3, endpoint by endpoint, against a real server (SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from datetime import datetime
from typing import Any

import httpx

from support import RUN_FIELDS, check_run_events

FINISHED = {"succeeded", "failed", "cancelled", "timed_out"}
TERMINAL_EVENTS = {"agent_completed", "agent_error", "agent_cancelled"}
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
LONG = {"message": "slow", "steps": 100, "delay_ms": 10_000}  # runs until cancelled


# -- helpers ----------------------------------------------------------------------------------


async def start_run(http: httpx.AsyncClient, agent: str = "echo", **body: Any) -> dict[str, Any]:
    """POST /v1/runs and return the run object (asserting 202)."""
    body.setdefault("input", {"message": "hi"})
    resp = await http.post("/v1/runs", json={"agent": agent, **body})
    assert resp.status_code == 202, resp.text
    return resp.json()


async def read_sse(
    http: httpx.AsyncClient, run_id: str, *, stop_after: int | None = None, **kwargs: Any
) -> list[dict[str, str]]:
    """The SSE messages of a run's stream as ``{"id", "event", "data"}`` dicts, read until the
    server ends the stream (or ``stop_after`` messages, then the client hangs up)."""
    messages: list[dict[str, str]] = []
    async with http.stream("GET", f"/v1/runs/{run_id}/stream", **kwargs) as resp:
        assert resp.status_code == 200, (await resp.aread()).decode()
        assert resp.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        async for line in resp.aiter_lines():
            if line == "":
                if fields:
                    messages.append(fields)
                    fields = {}
                    if stop_after is not None and len(messages) >= stop_after:
                        break
                continue
            if line.startswith(":"):  # comment / keep-alive
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        else:
            assert not fields, f"stream ended inside a message: {fields}"
    return messages


def sse_events(messages: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The events carried by SSE messages, checking `id:` = seq and `event:` = type."""
    events = []
    for msg in messages:
        assert set(msg) == {"id", "event", "data"}, msg
        event = json.loads(msg["data"])
        assert msg["id"] == str(event["seq"]), msg
        assert msg["event"] == event["type"], msg
        events.append(event)
    return events


async def finish(http: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    """Follow the run's SSE stream to its terminal event; return the run object then."""
    events = sse_events(await read_sse(http, run_id))
    assert events[-1]["type"] in TERMINAL_EVENTS
    resp = await http.get(f"/v1/runs/{run_id}")
    assert resp.status_code == 200, resp.text
    run = resp.json()
    assert run["status"] in FINISHED, run
    return run


async def finish_all(http: httpx.AsyncClient, *runs: dict[str, Any]) -> list[dict[str, Any]]:
    """:func:`finish` for several runs at once; the finished run objects, in order."""
    return list(await asyncio.gather(*(finish(http, r["run_id"]) for r in runs)))


async def wait_status(
    http: httpx.AsyncClient, run_id: str, wanted: str, timeout_s: float = 10.0
) -> dict[str, Any]:
    """Poll GET /v1/runs/{id} until its status is ``wanted`` (bounded)."""
    async with asyncio.timeout(timeout_s):
        while True:
            run = (await http.get(f"/v1/runs/{run_id}")).json()
            if run["status"] == wanted:
                return run
            assert run["status"] not in FINISHED, f"wanted {wanted}, the run ended: {run}"
            await asyncio.sleep(0.02)


async def events_of(http: httpx.AsyncClient, run_id: str, **params: Any) -> list[dict[str, Any]]:
    resp = await http.get(f"/v1/runs/{run_id}/events", params=params)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"events"}
    return body["events"]


def assert_error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) <= {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    return body["error"]


def ts(value: str) -> datetime:
    assert TS.match(value), value
    return datetime.fromisoformat(value)


async def cancel_quietly(http: httpx.AsyncClient, *run_ids: str) -> None:
    """Cancel runs a test left going; a run that already ended answers 409, which is fine."""
    for run_id in run_ids:
        resp = await http.post(f"/v1/runs/{run_id}/cancel")
        assert resp.status_code in (202, 409), resp.text


# -- agents -----------------------------------------------------------------------------------


async def test_agents_lists_echo_and_research_with_json_schema_input(server) -> None:
    """GET /v1/agents lists echo and research, each with a description and a JSON Schema."""
    async with server.client("alice") as http:
        resp = await http.get("/v1/agents")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    agents = {a["name"]: a for a in resp.json()}
    assert {"echo", "research"} <= set(agents)
    for agent in agents.values():
        assert set(agent) == {"name", "description", "input_schema"}
        assert isinstance(agent["description"], str)
        schema = agent["input_schema"]
        assert schema["type"] == "object"
        assert isinstance(schema["properties"], dict)
        assert schema["properties"]
    echo = agents["echo"]["input_schema"]
    assert {"message", "steps", "delay_ms", "fail"} <= set(echo["properties"])
    assert echo["required"] == ["message"]
    assert echo["properties"]["steps"]["minimum"] == 1
    assert echo["properties"]["steps"]["maximum"] == 100
    assert "question" in agents["research"]["input_schema"]["properties"]


# -- starting runs ----------------------------------------------------------------------------


async def test_post_run_returns_202_run_object_that_then_succeeds(server) -> None:
    """POST /v1/runs: 202 with every run field, queued or running; it then succeeds with
    output {message, steps}, its timestamps in order and last_seq counting its events."""
    async with server.client("alice") as http:
        resp = await http.post(
            "/v1/runs", json={"agent": "echo", "input": {"message": "hello", "steps": 3}}
        )
        assert resp.status_code == 202, resp.text
        run = resp.json()
        assert set(run) == RUN_FIELDS
        assert run["status"] in ("queued", "running")
        assert run["agent"] == "echo"
        assert run["input"] == {"message": "hello", "steps": 3}
        assert run["output"] is None
        assert run["error"] is None
        assert run["finished_at"] is None
        assert run["run_id"]
        assert run["thread_id"]
        assert run["run_id"] != run["thread_id"]
        ts(run["created_at"])
        assert isinstance(run["last_seq"], int)
        got = await http.get(f"/v1/runs/{run['run_id']}")
        assert got.status_code == 200
        assert set(got.json()) == RUN_FIELDS
        assert {k: got.json()[k] for k in ("run_id", "thread_id", "input", "created_at")} == {
            k: run[k] for k in ("run_id", "thread_id", "input", "created_at")
        }

        done = await finish(http, run["run_id"])
        assert set(done) == RUN_FIELDS
        assert done["status"] == "succeeded"
        assert done["output"] == {"message": "hello", "steps": 3}
        assert done["error"] is None
        assert done["run_id"] == run["run_id"]
        assert done["thread_id"] == run["thread_id"]
        assert done["created_at"] == run["created_at"]
        assert ts(done["created_at"]) <= ts(done["started_at"]) <= ts(done["finished_at"])
        events = await events_of(http, run["run_id"])
        check_run_events(events)
        assert done["last_seq"] == len(events) == 1 + 3 * 3 + 1
        assert events[-1]["type"] == "agent_completed"
        assert events[-1]["data"]["output"] == done["output"]


async def test_failed_and_timed_out_runs_end_with_their_error_type(server) -> None:
    """echo with fail: true ends `failed` with error type agent_failed; a slow echo over a
    small timeout_s ends `timed_out` with error type timeout; both end with agent_error."""
    async with server.client("alice") as http:
        failing = await start_run(http, input={"message": "boom", "steps": 2, "fail": True})
        slow = await start_run(http, input=LONG, timeout_s=0.3)
        failed, timed_out = await finish_all(http, failing, slow)
        assert failed["status"] == "failed"
        assert timed_out["status"] == "timed_out"
        for run, error_type in ((failed, "agent_failed"), (timed_out, "timeout")):
            assert run["output"] is None
            assert set(run["error"]) == {"type", "message"}
            assert run["error"]["type"] == error_type
            assert ts(run["started_at"]) <= ts(run["finished_at"])
            events = await events_of(http, run["run_id"])
            check_run_events(events)
            assert events[-1]["type"] == "agent_error"
            assert events[-1]["data"]["error"] == run["error"]


# -- threads ----------------------------------------------------------------------------------


async def test_thread_id_continues_own_thread_and_is_404_for_any_other(server) -> None:
    """A run naming the caller's earlier thread joins it; naming another user's thread gets
    the very 404 an unknown thread gets, and makes no run."""
    async with server.client("alice") as alice, server.client("bob") as bob:
        first = await start_run(alice)
        second = await start_run(alice, thread_id=first["thread_id"])
        other = await start_run(alice)
        assert second["thread_id"] == first["thread_id"]
        assert second["run_id"] != first["run_id"]
        assert other["thread_id"] != first["thread_id"]
        await finish_all(alice, first, second, other)
        listed = (await alice.get("/v1/runs", params={"thread_id": first["thread_id"]})).json()
        assert [r["run_id"] for r in listed["runs"]] == [second["run_id"], first["run_id"]]

        body = {"agent": "echo", "input": {"message": "x"}}
        theirs = await bob.post("/v1/runs", json={**body, "thread_id": first["thread_id"]})
        unknown = await bob.post("/v1/runs", json={**body, "thread_id": "thread_nosuchthread"})
        assert_error(theirs, 404, "not_found")
        assert_error(unknown, 404, "not_found")
        assert theirs.content == unknown.content
        assert (await bob.get("/v1/runs")).json()["runs"] == []
        after = (await alice.get("/v1/runs", params={"thread_id": first["thread_id"]})).json()
        assert after == listed


# -- multitask --------------------------------------------------------------------------------


async def test_multitask_enqueue_runs_one_thread_in_order(server) -> None:
    """multitask=enqueue (explicit or by default): each further run of a busy thread starts
    only after the one before it has finished, in order, and all succeed."""
    async with server.client("alice") as http:
        slow = {"message": "one", "steps": 2, "delay_ms": 100}
        first = await start_run(http, input=slow)
        second = await start_run(
            http, input={"message": "two"}, thread_id=first["thread_id"], multitask="enqueue"
        )
        third = await start_run(http, input={"message": "three"}, thread_id=first["thread_id"])
        runs = await finish_all(http, first, second, third)
        assert [r["status"] for r in runs] == ["succeeded"] * 3
        for earlier, later in itertools.pairwise(runs):
            assert ts(later["started_at"]) >= ts(earlier["finished_at"]), (earlier, later)


async def test_multitask_reject_is_409_while_the_thread_has_an_unfinished_run(server) -> None:
    """multitask=reject on a thread with an unfinished run → 409 conflict and no new run;
    once that run has finished, the same request is accepted."""
    async with server.client("alice") as http:
        first = await start_run(http, input=LONG)
        body = {
            "agent": "echo",
            "input": {"message": "later"},
            "thread_id": first["thread_id"],
            "multitask": "reject",
        }
        assert_error(await http.post("/v1/runs", json=body), 409, "conflict")
        await wait_status(http, first["run_id"], "running")
        assert_error(await http.post("/v1/runs", json=body), 409, "conflict")
        listed = (await http.get("/v1/runs", params={"thread_id": first["thread_id"]})).json()
        assert [r["run_id"] for r in listed["runs"]] == [first["run_id"]]

        assert (await http.post(f"/v1/runs/{first['run_id']}/cancel")).status_code == 202
        assert (await finish(http, first["run_id"]))["status"] == "cancelled"
        resp = await http.post("/v1/runs", json=body)
        assert resp.status_code == 202, resp.text
        assert (await finish(http, resp.json()["run_id"]))["status"] == "succeeded"


async def test_multitask_interrupt_cancels_the_unfinished_run_first(server) -> None:
    """multitask=interrupt: the thread's running run ends cancelled, then the new one runs
    and succeeds."""
    async with server.client("alice") as http:
        first = await start_run(http, input=LONG)
        await wait_status(http, first["run_id"], "running")
        second = await start_run(
            http, input={"message": "now"}, thread_id=first["thread_id"], multitask="interrupt"
        )
        done_first, done_second = await finish_all(http, first, second)
        assert done_first["status"] == "cancelled"
        assert (await events_of(http, first["run_id"]))[-1]["type"] == "agent_cancelled"
        assert done_second["status"] == "succeeded"
        assert done_second["output"] == {"message": "now", "steps": 1}
        assert ts(done_second["started_at"]) >= ts(done_first["finished_at"])


# -- idempotency ------------------------------------------------------------------------------


async def test_idempotency_key_replays_the_run_and_refuses_another_body(server) -> None:
    """The same Idempotency-Key with the same body → 200 and the earlier run (also once it
    has finished); with a different body → 409 conflict. Neither makes a second run."""
    body = {"agent": "echo", "input": {"message": "once"}}
    headers = {"Idempotency-Key": "k-1"}
    async with server.client("alice") as http:
        first = await http.post("/v1/runs", json=body, headers=headers)
        assert first.status_code == 202, first.text
        run_id = first.json()["run_id"]
        again = await http.post("/v1/runs", json=body, headers=headers)
        assert again.status_code == 200, again.text
        assert set(again.json()) == RUN_FIELDS
        assert again.json()["run_id"] == run_id
        other = await http.post(
            "/v1/runs", json={"agent": "echo", "input": {"message": "twice"}}, headers=headers
        )
        assert_error(other, 409, "conflict")
        await finish(http, run_id)
        after_finish = await http.post("/v1/runs", json=body, headers=headers)
        assert after_finish.status_code == 200
        assert after_finish.json()["run_id"] == run_id
        assert after_finish.json()["status"] == "succeeded"
        listed = (await http.get("/v1/runs")).json()["runs"]
        assert [r["run_id"] for r in listed] == [run_id]


async def test_idempotency_key_is_scoped_to_the_caller(server) -> None:
    """Another user sending the same key (even the same body) gets a run of their own."""
    body = {"agent": "echo", "input": {"message": "same"}}
    headers = {"Idempotency-Key": "shared-key"}
    async with server.client("alice") as alice, server.client("bob") as bob:
        a = await alice.post("/v1/runs", json=body, headers=headers)
        b = await bob.post("/v1/runs", json=body, headers=headers)
        assert a.status_code == 202, a.text
        assert b.status_code == 202, b.text
        assert a.json()["run_id"] != b.json()["run_id"]
        b2 = await bob.post(
            "/v1/runs", json={"agent": "echo", "input": {"message": "other"}}, headers=headers
        )
        assert_error(b2, 409, "conflict")  # bob's own key now, not alice's
        await finish(alice, a.json()["run_id"])
        await finish(bob, b.json()["run_id"])
        assert (await bob.get(f"/v1/runs/{b.json()['run_id']}")).json()["status"] == "succeeded"


# -- admission --------------------------------------------------------------------------------


async def test_full_queue_is_429_with_retry_after(start_server) -> None:
    """With 1 running and 2 queued allowed, a 4th run is refused 429 rate_limited with a
    Retry-After header; other users are unaffected; a cancelled queued run never started."""
    server = await start_server(max_running_per_user=1, max_queued_per_user=2)
    async with server.client("alice") as alice, server.client("bob") as bob:
        runs = [await start_run(alice, input=LONG) for _ in range(3)]
        try:
            await wait_status(alice, runs[0]["run_id"], "running")
            assert (await alice.get(f"/v1/runs/{runs[1]['run_id']}")).json()["status"] == "queued"
            refused = await alice.post("/v1/runs", json={"agent": "echo", "input": LONG})
            assert_error(refused, 429, "rate_limited")
            retry_after = refused.headers.get("retry-after")
            assert retry_after is not None, refused.headers
            assert retry_after.isdigit(), retry_after
            assert len((await alice.get("/v1/runs")).json()["runs"]) == 3

            theirs = await start_run(bob)
            assert (await finish(bob, theirs["run_id"]))["status"] == "succeeded"

            # Cancelling a queued run frees its place in the queue.
            assert (await alice.post(f"/v1/runs/{runs[2]['run_id']}/cancel")).status_code == 202
            cancelled = await finish(alice, runs[2]["run_id"])
            assert cancelled["status"] == "cancelled"
            assert cancelled["started_at"] is None
            only = await events_of(alice, runs[2]["run_id"])
            assert [(e["seq"], e["type"]) for e in only] == [(1, "agent_cancelled")]
            runs.append(await start_run(alice, input=LONG))
        finally:
            await cancel_quietly(alice, *(r["run_id"] for r in runs))
        assert [r["status"] for r in await finish_all(alice, *runs)] == ["cancelled"] * 4


# -- reading runs -----------------------------------------------------------------------------


async def test_list_runs_is_newest_first_callers_only_and_filters(server) -> None:
    """GET /v1/runs: only the caller's runs, newest first; thread_id and status filter;
    limit caps the page."""
    async with server.client("alice") as alice, server.client("bob") as bob:
        a1 = await start_run(alice, input={"message": "1"})
        a2 = await start_run(alice, input={"message": "2", "fail": True})
        a3 = await start_run(alice, input={"message": "3"}, thread_id=a1["thread_id"])
        b1 = await start_run(bob, input={"message": "b"})
        await finish_all(alice, a1, a2, a3)
        await finish(bob, b1["run_id"])

        page = (await alice.get("/v1/runs")).json()
        assert set(page) == {"runs", "next_cursor"}
        assert [r["run_id"] for r in page["runs"]] == [a3["run_id"], a2["run_id"], a1["run_id"]]
        assert page["next_cursor"] is None
        assert all(set(r) == RUN_FIELDS for r in page["runs"])
        assert [r["run_id"] for r in (await bob.get("/v1/runs")).json()["runs"]] == [b1["run_id"]]

        by_thread = (await alice.get("/v1/runs", params={"thread_id": a1["thread_id"]})).json()
        assert [r["run_id"] for r in by_thread["runs"]] == [a3["run_id"], a1["run_id"]]
        failed = (await alice.get("/v1/runs", params={"status": "failed"})).json()
        assert [r["run_id"] for r in failed["runs"]] == [a2["run_id"]]
        ok = (await alice.get("/v1/runs", params={"status": "succeeded"})).json()
        assert [r["run_id"] for r in ok["runs"]] == [a3["run_id"], a1["run_id"]]
        both = await alice.get(
            "/v1/runs", params={"status": "failed", "thread_id": a1["thread_id"]}
        )
        assert both.json()["runs"] == []
        assert (await alice.get("/v1/runs", params={"status": "queued"})).json()["runs"] == []
        theirs = await alice.get("/v1/runs", params={"thread_id": b1["thread_id"]})
        assert theirs.json() == {"runs": [], "next_cursor": None}

        one = (await alice.get("/v1/runs", params={"limit": 1})).json()
        assert [r["run_id"] for r in one["runs"]] == [a3["run_id"]]
        assert isinstance(one["next_cursor"], str)
        most = (await alice.get("/v1/runs", params={"limit": 200})).json()
        assert len(most["runs"]) == 3
        assert most["next_cursor"] is None


async def test_list_runs_pages_cover_every_run_exactly_once(server) -> None:
    """Following next_cursor with limit=3 visits all 8 runs once, newest first, then stops."""
    async with server.client("alice") as http:
        made = [await start_run(http, input={"message": str(i)}) for i in range(8)]
        await finish_all(http, *made)
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 3}
            if cursor is not None:
                params["cursor"] = cursor
            page = (await http.get("/v1/runs", params=params)).json()
            pages += 1
            assert len(page["runs"]) <= 3
            seen += [r["run_id"] for r in page["runs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
            assert pages < 10, "pagination does not end"
        assert seen == [r["run_id"] for r in reversed(made)]
        assert pages == 3
        filtered = (await http.get("/v1/runs", params={"limit": 5, "status": "succeeded"})).json()
        rest = await http.get(
            "/v1/runs",
            params={"limit": 5, "status": "succeeded", "cursor": filtered["next_cursor"]},
        )
        ids = [r["run_id"] for r in filtered["runs"] + rest.json()["runs"]]
        assert ids == seen
        assert rest.json()["next_cursor"] is None


# -- cancelling -------------------------------------------------------------------------------


async def test_cancel_running_run_is_202_and_cancelling_it_again_is_409(server) -> None:
    """POST cancel on a running run → 202 with the run object; the run ends `cancelled`, its
    events end with agent_cancelled; cancelling the finished run → 409 conflict."""
    async with server.client("alice") as http:
        run = await start_run(http, input=LONG)
        await wait_status(http, run["run_id"], "running")
        resp = await http.post(f"/v1/runs/{run['run_id']}/cancel")
        assert resp.status_code == 202, resp.text
        assert set(resp.json()) == RUN_FIELDS
        assert resp.json()["run_id"] == run["run_id"]
        assert resp.json()["status"] in ("running", "cancelled")
        done = await finish(http, run["run_id"])
        assert done["status"] == "cancelled"
        assert done["output"] is None
        events = await events_of(http, run["run_id"])
        check_run_events(events)
        assert events[0]["type"] == "agent_started"
        assert events[-1]["type"] == "agent_cancelled"
        assert isinstance(events[-1]["data"]["reason"], str)

        assert_error(await http.post(f"/v1/runs/{run['run_id']}/cancel"), 409, "conflict")
        succeeded = await start_run(http)
        await finish(http, succeeded["run_id"])
        assert_error(await http.post(f"/v1/runs/{succeeded['run_id']}/cancel"), 409, "conflict")
        assert (await http.get(f"/v1/runs/{run['run_id']}")).json() == done


# -- events -----------------------------------------------------------------------------------


async def test_events_after_and_limit_return_the_stored_slice_in_order(server) -> None:
    """GET events?after=N&limit=M returns the stored events with seq > N, in order, at most M."""
    async with server.client("alice") as http:
        run = await start_run(http, input={"message": "ev", "steps": 5})
        done = await finish(http, run["run_id"])
        every = await events_of(http, run["run_id"])
        check_run_events(every)
        assert len(every) == done["last_seq"] == 17
        for event in every:
            assert set(event) == {"type", "run_id", "thread_id", "seq", "ts", "data"}
            assert event["run_id"] == run["run_id"]
            assert event["thread_id"] == run["thread_id"]
            ts(event["ts"])
        assert [e["seq"] for e in await events_of(http, run["run_id"], after=3, limit=4)] == [
            4,
            5,
            6,
            7,
        ]
        assert await events_of(http, run["run_id"], after=14) == every[14:]
        assert await events_of(http, run["run_id"], limit=2) == every[:2]
        assert await events_of(http, run["run_id"], after=17) == []
        assert await events_of(http, run["run_id"], after=1000) == []


# -- SSE --------------------------------------------------------------------------------------


async def test_sse_stream_sends_every_event_and_ends_after_the_terminal_one(server) -> None:
    """The stream's messages have id = seq, event = type, data = the event JSON; it carries
    the run's events in order (as stored) and the server ends it after the terminal event."""
    async with server.client("alice") as http:
        run = await start_run(http, input={"message": "live", "steps": 3, "delay_ms": 30})
        streamed = sse_events(await read_sse(http, run["run_id"]))
        check_run_events(streamed)
        assert streamed[-1]["type"] == "agent_completed"
        assert streamed == await events_of(http, run["run_id"])
        # A finished run's stream replays everything and ends.
        assert sse_events(await read_sse(http, run["run_id"])) == streamed


async def test_sse_stream_resumes_after_last_event_id_and_after_param(server) -> None:
    """Reconnecting with Last-Event-ID (or ?after=N) continues at seq N+1: together with what
    was read before, no event is missing and none repeats — also while the run is live."""
    async with server.client("alice") as http:
        run = await start_run(http, input={"message": "resume", "steps": 4, "delay_ms": 50})
        run_id = run["run_id"]
        head = sse_events(await read_sse(http, run_id, stop_after=3))
        assert [e["seq"] for e in head] == [1, 2, 3]
        tail = sse_events(await read_sse(http, run_id, headers={"Last-Event-ID": "3"}))
        combined = head + tail
        check_run_events(combined)
        stored = await events_of(http, run_id)
        assert combined == stored

        assert sse_events(await read_sse(http, run_id, params={"after": 5})) == stored[5:]
        by_header = await read_sse(http, run_id, headers={"Last-Event-ID": "7"})
        assert sse_events(by_header) == stored[7:]
        last = stored[-1]["seq"]
        final = sse_events(await read_sse(http, run_id, headers={"Last-Event-ID": str(last - 1)}))
        assert final == stored[-1:]


# -- operations -------------------------------------------------------------------------------


async def test_metrics_are_prometheus_text_named_corral(server) -> None:
    """/metrics is Prometheus text; every metric starts with corral_; a run counts as started
    and its events as stored."""
    async with server.client("alice") as http:
        run = await start_run(http, input={"message": "m", "steps": 2})
        await finish(http, run["run_id"])

        def value(samples: dict[str, float], name: str) -> float:
            return samples.get(name, 0.0)

        async with asyncio.timeout(10):
            while True:  # counters follow the commit; poll until they show the run
                resp = await http.get("/metrics")
                assert resp.status_code == 200
                assert resp.headers["content-type"].startswith("text/plain")
                samples: dict[str, float] = {}
                for line in resp.text.splitlines():
                    if not line or line.startswith("#"):
                        continue
                    name_and_labels, _, number = line.rpartition(" ")
                    assert name_and_labels.startswith("corral_"), line
                    samples[name_and_labels] = float(number)
                completed = 'corral_events_stored_total{type="agent_completed"}'
                if value(samples, completed) >= 1:
                    break
                await asyncio.sleep(0.02)
        assert value(samples, "corral_runs_started_total") >= 1
        assert value(samples, 'corral_events_stored_total{type="agent_started"}') >= 1
        assert value(samples, 'corral_events_stored_total{type="tool_completed"}') >= 2


async def test_healthz_readyz_and_page_answer_without_a_token(server) -> None:
    """/healthz is 200; /readyz is 200 with database and bus true; GET / serves HTML."""
    async with server.client() as http:
        assert (await http.get("/healthz")).status_code == 200
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["database"] is True
        assert ready.json()["bus"] is True
        page = await http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<html" in page.text.lower()
