"""Human in the loop (contract §9) against a real server, on SQLite and PostgreSQL: a run asks,
waits without holding a slot, and goes on with the answer sent over HTTP or the WebSocket."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest

import hitl_agents
from support import RUN_FIELDS, check_run_events
from support_ws import recv, socket_of

TIMEOUT = 20.0
TERMINAL = {"agent_completed", "agent_error", "agent_cancelled"}
OK_SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "why": {"type": "string", "maxLength": 10}},
    "required": ["ok"],
    "additionalProperties": False,
}


# -- helpers ----------------------------------------------------------------------------------


async def start(http: httpx.AsyncClient, agent: str, input: dict[str, Any], **body: Any) -> str:
    resp = await http.post("/v1/runs", json={"agent": agent, "input": input, **body})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["run_id"])


async def events_of(http: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    resp = await http.get(f"/v1/runs/{run_id}/events")
    assert resp.status_code == 200, resp.text
    return list(resp.json()["events"])


async def wait_event(http: httpx.AsyncClient, run_id: str, type_: str, nth: int = 1) -> dict:
    """The ``nth`` stored event of ``type_`` (polled with a deadline: nothing to wait on)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            found = [e for e in await events_of(http, run_id) if e["type"] == type_]
            if len(found) >= nth:
                return found[nth - 1]
            await asyncio.sleep(0.02)


async def wait_status(http: httpx.AsyncClient, run_id: str, *statuses: str) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT):
        while True:
            run = (await http.get(f"/v1/runs/{run_id}")).json()
            if run["status"] in statuses:
                return dict(run)
            await asyncio.sleep(0.02)


async def finished(http: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    return await wait_status(http, run_id, "succeeded", "failed", "cancelled", "timed_out")


async def answer(
    http: httpx.AsyncClient, run_id: str, request_id: str, value: Any
) -> httpx.Response:
    return await http.post(
        f"/v1/runs/{run_id}/input", json={"request_id": request_id, "value": value}
    )


async def recv_error(ws: Any) -> dict[str, Any]:
    """The next ``error`` message (the socket also carries the user's run events)."""
    while True:
        msg = await recv(ws)
        if msg["type"] == "error":
            return msg
        assert "seq" in msg, msg


async def read_run(ws: Any, run_id: str, until: str) -> list[dict[str, Any]]:
    """Messages about ``run_id`` up to and including the first of type ``until``."""
    seen = []
    while True:
        msg = await recv(ws)
        if msg.get("run_id") == run_id:
            seen.append(msg)
            if msg["type"] == until:
                return seen


@pytest.fixture
async def hitl(start_server: Any) -> Any:
    """A server with the built-in agents and the test agents of tests/hitl_agents.py."""
    return await start_server(registry=hitl_agents.registry())


# -- the whole flow ---------------------------------------------------------------------------


async def test_ask_waits_and_an_http_answer_completes_the_run(hitl: Any) -> None:
    """input_requested {request_id, prompt, schema} → status waiting → POST input 202 (the run
    object) → input_received {request_id, value} → the agent goes on with the value."""
    async with hitl.client("alice") as http:
        run_id = await start(http, "asker", {"prompt": "Go?", "answer_schema": OK_SCHEMA})
        asked = await wait_event(http, run_id, "input_requested")
        assert set(asked["data"]) == {"request_id", "prompt", "schema"}
        assert asked["data"]["prompt"] == "Go?"
        assert asked["data"]["schema"] == OK_SCHEMA
        waiting = await wait_status(http, run_id, "waiting")
        assert waiting["finished_at"] is None
        listed = (await http.get("/v1/runs", params={"status": "waiting"})).json()["runs"]
        assert [r["run_id"] for r in listed] == [run_id]

        resp = await answer(http, run_id, asked["data"]["request_id"], {"ok": True, "why": "yes"})
        assert resp.status_code == 202, resp.text
        assert set(resp.json()) == RUN_FIELDS
        assert resp.json()["run_id"] == run_id

        run = await finished(http, run_id)
        assert run["status"] == "succeeded", run
        assert run["output"] == {"answers": [{"ok": True, "why": "yes"}]}
        events = await events_of(http, run_id)
    check_run_events(events)
    types = [e["type"] for e in events]
    assert types == [
        "agent_started",
        "agent_thinking",
        "input_requested",
        "input_received",
        "tool_executing",
        "tool_completed",
        "agent_completed",
    ]
    received = events[3]["data"]
    assert received == {
        "request_id": asked["data"]["request_id"],
        "value": {"ok": True, "why": "yes"},
    }


async def test_websocket_send_input_answers_and_the_socket_sees_it_through(hitl: Any) -> None:
    """Over one socket: start_run, input_requested arrives live, send_input answers it, and
    input_received and the completion follow."""
    async with socket_of(hitl, "alice") as ws:
        await ws.send(
            orjson.dumps({"type": "start_run", "agent": "asker", "input": {}, "client_ref": "a"})
        )
        accepted = await recv(ws)
        assert accepted["type"] == "run_accepted", accepted
        run_id = accepted["run"]["run_id"]
        asked = (await read_run(ws, run_id, "input_requested"))[-1]
        assert asked["data"]["schema"] is None
        message = {
            "type": "send_input",
            "run_id": run_id,
            "request_id": asked["data"]["request_id"],
            "value": "yes, go on",
        }
        await ws.send(orjson.dumps(message))
        rest = await read_run(ws, run_id, "agent_completed")
    assert rest[0]["type"] == "input_received"
    assert rest[0]["data"]["value"] == "yes, go on"
    assert rest[-1]["data"]["output"] == {"answers": ["yes, go on"]}


async def test_a_pydantic_model_schema_is_sent_and_the_agent_gets_an_instance(hitl: Any) -> None:
    """ask(prompt, Approval): the request's schema is the model's JSON Schema, an answer that
    fails it is refused, and the agent receives an Approval instance."""
    async with hitl.client("alice") as http:
        run_id = await start(http, "asker", {"use_model": True})
        asked = await wait_event(http, run_id, "input_requested")
        schema = asked["data"]["schema"]
        assert set(schema["properties"]) == {"approved", "note"}
        assert schema["required"] == ["approved"]
        request_id = asked["data"]["request_id"]
        bad = await answer(http, run_id, request_id, {"approved": "maybe"})
        assert bad.status_code == 422, bad.text
        good = await answer(http, run_id, request_id, {"approved": True})
        assert good.status_code == 202, good.text
        run = await finished(http, run_id)
    assert run["output"] == {"answers": [{"model": "Approval", "approved": True, "note": ""}]}


async def test_a_value_that_fails_the_schema_is_422_with_details_and_the_run_keeps_waiting(
    hitl: Any,
) -> None:
    """HTTP and WebSocket: each bad field is named in details; nothing is stored or emitted,
    the run still waits, and a good answer afterwards completes it."""
    async with hitl.client("alice") as http, socket_of(hitl, "alice") as ws:
        run_id = await start(http, "asker", {"answer_schema": OK_SCHEMA})
        asked = await wait_event(http, run_id, "input_requested")
        request_id = asked["data"]["request_id"]
        resp = await answer(http, run_id, request_id, {"ok": "nope", "why": "far too long!"})
        assert resp.status_code == 422, resp.text
        error = resp.json()["error"]
        assert error["code"] == "validation_error"
        assert {d["field"] for d in error["details"]} == {"value.ok", "value.why"}
        assert {d["type"] for d in error["details"]} == {"type", "maxLength"}

        await ws.send(
            orjson.dumps(
                {
                    "type": "send_input",
                    "run_id": run_id,
                    "request_id": request_id,
                    "value": {"extra": 1},
                }
            )
        )
        refused = await recv_error(ws)
        assert refused["code"] == "validation_error"
        assert {d["field"] for d in refused["details"]} == {"value"}
        for bad in (
            {"type": "send_input", "request_id": request_id, "value": 1},  # no run_id
            {"type": "send_input", "run_id": run_id, "value": 1},  # no request_id
            {"type": "send_input", "run_id": run_id, "request_id": request_id},  # no value
        ):
            await ws.send(orjson.dumps(bad))
            assert (await recv_error(ws))["code"] == "validation_error", bad

        # A body that is not an answer at all is a 422 too.
        missing = await http.post(f"/v1/runs/{run_id}/input", json={"request_id": request_id})
        assert missing.status_code == 422
        assert missing.json()["error"]["details"][0]["field"] == "value"

        assert (await http.get(f"/v1/runs/{run_id}")).json()["status"] == "waiting"
        assert [e["type"] for e in await events_of(http, run_id)][-1] == "input_requested"
        assert (await answer(http, run_id, request_id, {"ok": False})).status_code == 202
        run = await finished(http, run_id)
    assert run["output"] == {"answers": [{"ok": False}]}


async def test_a_run_not_waiting_or_a_stale_request_id_is_409(hitl: Any) -> None:
    """409 conflict for: a request id that is not the open one, a second answer to the same
    request, a run that is running or finished; the first answer is the one the agent got."""
    async with hitl.client("alice") as http:
        run_id = await start(http, "asker", {"questions": 2})
        first = await wait_event(http, run_id, "input_requested")
        first_id = first["data"]["request_id"]
        wrong = await answer(http, run_id, "input_not-the-open-one", "x")
        assert wrong.status_code == 409, wrong.text
        assert wrong.json()["error"]["code"] == "conflict"
        assert (await answer(http, run_id, first_id, "one")).status_code == 202
        again = await answer(http, run_id, first_id, "two")
        assert again.status_code == 409, again.text

        second = await wait_event(http, run_id, "input_requested", nth=2)
        stale = await answer(http, run_id, first_id, "late")
        assert stale.status_code == 409, stale.text
        assert (await answer(http, run_id, second["data"]["request_id"], "b")).status_code == 202
        run = await finished(http, run_id)
        assert run["output"] == {"answers": ["one", "b"]}
        done = await answer(http, run_id, second["data"]["request_id"], "c")
        assert done.status_code == 409, done.text

        echo = await start(http, "echo", {"message": "m", "steps": 100, "delay_ms": 50})
        await wait_status(http, echo, "running")
        running = await answer(http, echo, "input_x", 1)
        assert running.status_code == 409, running.text
        await http.post(f"/v1/runs/{echo}/cancel")


async def test_another_users_run_is_404_for_input_like_a_missing_one(hitl: Any) -> None:
    """bob answering alice's waiting run (HTTP and WebSocket) gets exactly a missing run's
    answer; alice's run still waits and her question is untouched."""
    async with hitl.client("alice") as alice, hitl.client("bob") as bob:
        run_id = await start(alice, "asker", {})
        request_id = (await wait_event(alice, run_id, "input_requested"))["data"]["request_id"]
        foreign = await answer(bob, run_id, request_id, "hijack")
        missing = await answer(bob, "run_doesnotexist0000000000", request_id, "hijack")
        assert foreign.status_code == missing.status_code == 404
        assert foreign.json() == missing.json()
        async with socket_of(hitl, "bob") as ws:
            message = {"type": "send_input", "run_id": run_id, "request_id": request_id}
            await ws.send(orjson.dumps({**message, "value": "hijack"}))
            refused = await recv(ws)
        assert (refused["type"], refused["code"]) == ("error", "not_found"), refused
        assert (await alice.get(f"/v1/runs/{run_id}")).json()["status"] == "waiting"
        assert (await answer(alice, run_id, request_id, "mine")).status_code == 202
        assert (await finished(alice, run_id))["output"] == {"answers": ["mine"]}


async def test_no_answer_in_time_ends_the_run_with_input_timeout(hitl: Any) -> None:
    """ask(timeout_s=0.3) left unanswered: agent_error of type input_timeout (status failed),
    and a late answer is refused with 409. Caught, the run goes on and succeeds."""
    async with hitl.client("alice") as http:
        run_id = await start(http, "asker", {"timeout_s": 0.3})
        request_id = (await wait_event(http, run_id, "input_requested"))["data"]["request_id"]
        run = await finished(http, run_id)
        assert run["status"] == "failed", run
        assert run["error"]["type"] == "input_timeout"
        assert request_id in run["error"]["message"]
        assert (await answer(http, run_id, request_id, "late")).status_code == 409
        events = await events_of(http, run_id)
        check_run_events(events)
        assert [e["type"] for e in events][-2:] == ["input_requested", "agent_error"]

        caught = await start(http, "asker", {"timeout_s": 0.3, "catch_timeout": True})
        run = await finished(http, caught)
        assert run["status"] == "succeeded", run
        assert run["output"]["timed_out"].startswith("input_")


async def test_the_default_input_timeout_is_corral_input_timeout_s(start_server: Any) -> None:
    """Without timeout_s, ask waits CORRAL_INPUT_TIMEOUT_S (here 0.3 s)."""
    server = await start_server(registry=hitl_agents.registry(), input_timeout_s=0.3)
    async with server.client("alice") as http:
        run = await finished(http, await start(http, "asker", {}))
    assert run["error"]["type"] == "input_timeout", run
    assert "0.3 s" in run["error"]["message"]


async def test_cancelling_a_waiting_run_ends_it_cancelled_at_once(hitl: Any) -> None:
    """POST cancel on a waiting run answers 202 with status cancelled (no waiting for an
    answer); its last event is agent_cancelled; an answer afterwards is 409."""
    async with hitl.client("alice") as http:
        run_id = await start(http, "asker", {})
        request_id = (await wait_event(http, run_id, "input_requested"))["data"]["request_id"]
        resp = await http.post(f"/v1/runs/{run_id}/cancel")
        assert resp.status_code == 202
        assert resp.json()["status"] == "cancelled", resp.json()
        events = await events_of(http, run_id)
        check_run_events(events)
        assert [e["type"] for e in events][-2:] == ["input_requested", "agent_cancelled"]
        assert (await answer(http, run_id, request_id, "late")).status_code == 409


async def test_waiting_runs_hold_no_running_slot(start_server: Any) -> None:
    """With MAX_RUNNING_PER_USER=2 and both of alice's slots' runs waiting, her third run
    executes; with MAX_RUNNING_TOTAL=2 taken by waiting runs, bob's run executes too."""
    server = await start_server(
        registry=hitl_agents.registry(), max_running_per_user=2, max_running_total=2
    )
    async with server.client("alice") as alice, server.client("bob") as bob:
        asking = [await start(alice, "asker", {}) for _ in range(2)]
        for run_id in asking:
            await wait_status(alice, run_id, "waiting")
        third = await start(alice, "echo", {"message": "m", "steps": 2})
        assert (await finished(alice, third))["status"] == "succeeded"
        other = await start(bob, "echo", {"message": "m"})
        assert (await finished(bob, other))["status"] == "succeeded"
        for run_id in asking:
            request_id = (await wait_event(alice, run_id, "input_requested"))["data"]["request_id"]
            assert (await answer(alice, run_id, request_id, "go")).status_code == 202
        for run_id in asking:
            assert (await finished(alice, run_id))["status"] == "succeeded"


async def test_a_later_run_on_the_thread_waits_behind_the_waiting_run(hitl: Any) -> None:
    """A second run on a waiting run's thread stays queued — while a run on another thread
    starts and finishes — and starts only after the first one finished."""
    async with hitl.client("alice") as http:
        first = await start(http, "asker", {})
        thread_id = (await http.get(f"/v1/runs/{first}")).json()["thread_id"]
        request_id = (await wait_event(http, first, "input_requested"))["data"]["request_id"]
        second = await start(http, "echo", {"message": "after"}, thread_id=thread_id)
        elsewhere = await start(http, "echo", {"message": "elsewhere"})
        assert (await finished(http, elsewhere))["status"] == "succeeded"
        assert (await http.get(f"/v1/runs/{second}")).json()["status"] == "queued"
        assert (await answer(http, first, request_id, "go")).status_code == 202
        done_first = await finished(http, first)
        done_second = await finished(http, second)
    assert done_second["status"] == "succeeded"
    assert done_second["started_at"] >= done_first["finished_at"]


async def test_time_spent_waiting_does_not_count_toward_the_run_timeout(hitl: Any) -> None:
    """A run with timeout_s=1 that waits 1.5 s for its answer still succeeds."""
    async with hitl.client("alice") as http:
        run_id = await start(http, "asker", {}, timeout_s=1.0)
        request_id = (await wait_event(http, run_id, "input_requested"))["data"]["request_id"]
        await asyncio.sleep(1.5)  # the scenario: the user takes longer than the run's timeout
        assert (await answer(http, run_id, request_id, "late but fine")).status_code == 202
        run = await finished(http, run_id)
    assert run["status"] == "succeeded", run


async def test_a_dropped_socket_resumes_to_the_question_and_another_connection_answers(
    hitl: Any,
) -> None:
    """The socket that started the run drops while it waits; a new socket's resume replays
    input_requested; an answer sent from a third connection (HTTP) completes the run, and the
    resumed socket sees input_received and the end live."""
    async with socket_of(hitl, "alice") as first:
        await first.send(
            orjson.dumps({"type": "start_run", "agent": "asker", "input": {}, "client_ref": "r"})
        )
        run_id = (await recv(first))["run"]["run_id"]
        asked = (await read_run(first, run_id, "input_requested"))[-1]
    async with socket_of(hitl, "alice") as second:
        await second.send(orjson.dumps({"type": "resume", "run_id": run_id, "after": 0}))
        replayed = await read_run(second, run_id, "input_requested")
        assert replayed[-1] == asked
        async with hitl.client("alice") as http:
            resp = await answer(http, run_id, asked["data"]["request_id"], "from elsewhere")
            assert resp.status_code == 202
        rest = await read_run(second, run_id, "agent_completed")
    events = replayed + rest
    check_run_events(events)
    assert rest[0]["type"] == "input_received"


async def test_an_open_question_survives_nothing_but_the_process(
    start_server: Any, tmp_path: Any
) -> None:
    """A waiting run is interrupted when its server stops (it cannot be resumed elsewhere):
    after a restart on the same database it is failed/interrupted, and answering is 409."""
    server = await start_server(registry=hitl_agents.registry())
    async with server.client("alice") as http:
        run_id = await start(http, "asker", {})
        request_id = (await wait_event(http, run_id, "input_requested"))["data"]["request_id"]
    server.server.should_exit = True
    async with asyncio.timeout(TIMEOUT):
        while server.app.state.runtime is not None:
            await asyncio.sleep(0.02)
    again = await start_server(
        registry=hitl_agents.registry(),
        database_url=server.settings.database_url,
        jwt_secret=server.settings.jwt_secret,
    )
    async with again.client("alice") as http:
        run = (await http.get(f"/v1/runs/{run_id}")).json()
        assert run["status"] == "failed", run
        assert run["error"]["type"] == "interrupted"
        check_run_events(await events_of(http, run_id))
        assert (await answer(http, run_id, request_id, "too late")).status_code == 409
