"""AG-UI (contract §12) against a real server: ``POST /v1/ag-ui/{agent}`` and
``GET /v1/runs/{id}/stream?format=ag-ui``. Every event of every stream is validated with the
``ag-ui-protocol`` package's models (``support_agui.read_agui``)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import orjson
import pytest
from pydantic import BaseModel

from conftest import LiveServer, StartServer
from corral.agents import builtin_registry
from corral.core.registry import AgentRegistry
from support_agui import Agui, by_seq, check_order, get_agui, post_agui, run_input

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
QUESTION = "What is 12 * 7, and who was Ada Lovelace?"


def user() -> str:
    return f"agui-{uuid.uuid4().hex[:8]}"


def corral_ids(events: list[Agui]) -> dict[str, str]:
    metadata: dict[str, str] = events[0].event["metadata"]["corral"]
    return metadata


async def stored(http: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = (await http.get(f"/v1/runs/{run_id}/events")).json()["events"]
    return events


async def test_an_echo_run_maps_every_corral_event(server: LiveServer) -> None:
    """echo over AG-UI: RUN_STARTED (the request's ids, corral's in metadata), then per corral
    event its AG-UI events with id = its seq — CUSTOM for agent_started and agent_thinking
    (value = the corral event), TOOL_CALL_START/ARGS/END and TOOL_CALL_RESULT with toolCallId
    = call_id — and RUN_FINISHED with result = the output."""
    body = run_input("hi", forwardedProps={"input": {"message": "hi", "steps": 2}})
    async with server.client(user()) as http:
        status, events, error = await post_agui(http, "echo", body)
        assert status == 200, error
        check_order(events)
        opening = events[0].event
        assert (opening["threadId"], opening["runId"]) == (body["threadId"], body["runId"])
        run_id = corral_ids(events)["run_id"]
        corral = await stored(http, run_id)
    groups = by_seq(events)
    assert sorted(groups) == [e["seq"] for e in corral]  # every corral event, once, by its seq
    for event in corral:
        group = [g for g in groups[event["seq"]] if g["type"] != "RUN_STARTED"]
        kinds = [g["type"] for g in group]
        if event["type"] in ("agent_started", "agent_thinking"):
            assert group == [
                {
                    "type": "CUSTOM",
                    "name": event["type"],
                    "value": event,
                    "timestamp": group[0]["timestamp"],
                }
            ]
        elif event["type"] == "tool_executing":
            assert kinds == ["TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END"]
            assert {g["toolCallId"] for g in group} == {event["data"]["call_id"]}
            assert group[0]["toolCallName"] == "echo"
            assert orjson.loads(group[1]["delta"]) == {"text": "hi"}
        elif event["type"] == "tool_completed":
            assert kinds == ["TOOL_CALL_RESULT"]
            assert group[0]["toolCallId"] == event["data"]["call_id"]
            assert orjson.loads(group[0]["content"]) == {"text": "hi"}
        else:
            assert event["type"] == "agent_completed"
            assert group == [
                {
                    "type": "RUN_FINISHED",
                    "threadId": body["threadId"],
                    "runId": body["runId"],
                    "result": {"message": "hi", "steps": 2},
                    "timestamp": group[0]["timestamp"],
                }
            ]


async def test_a_research_run_streams_its_answer_as_one_text_message(server: LiveServer) -> None:
    """research from the last user message's text: its answer_delta updates become one
    assistant text message whose content is the run's answer; calculator and search_docs are
    tool calls; tool call ids are unique across two runs of one thread."""
    thread = f"t-{uuid.uuid4().hex}"
    async with server.client(user()) as http:
        runs = []
        for _ in range(2):
            status, events, error = await post_agui(
                http, "research", run_input(QUESTION, thread_id=thread)
            )
            assert status == 200, error
            check_order(events)
            runs.append(events)
    for events in runs:
        text = "".join(a.event["delta"] for a in events if a.type == "TEXT_MESSAGE_CONTENT")
        finished = events[-1].event
        assert finished["type"] == "RUN_FINISHED"
        assert text == finished["result"]["answer"]
        assert "84" in text
        assert [a.type for a in events].count("TEXT_MESSAGE_START") == 1
        tools = [a.event["toolCallName"] for a in events if a.type == "TOOL_CALL_START"]
        assert {"calculator", "search_docs"} <= set(tools)
    calls = [{a.event["toolCallId"] for a in ev if a.type == "TOOL_CALL_START"} for ev in runs]
    assert not calls[0] & calls[1]
    assert corral_ids(runs[0])["thread_id"] == corral_ids(runs[1])["thread_id"]


@sqlite_only
async def test_a_failed_run_ends_with_run_error(server: LiveServer) -> None:
    """echo with fail: RUN_ERROR last, code = the corral error type."""
    body = run_input(forwardedProps={"input": {"message": "m", "fail": True}})
    async with server.client(user()) as http:
        status, events, _ = await post_agui(http, "echo", body)
    assert status == 200
    check_order(events)
    assert events[-1].event["type"] == "RUN_ERROR"
    assert events[-1].event["code"] == "agent_failed"
    assert events[-1].event["message"] == "echo was asked to fail"


@sqlite_only
async def test_a_cancelled_run_finishes_with_the_cancelled_outcome(server: LiveServer) -> None:
    """A run cancelled over HTTP while its AG-UI stream is open: RUN_FINISHED whose outcome is
    cancelled (no result)."""
    body = run_input(forwardedProps={"input": {"message": "m", "steps": 50, "delay_ms": 50}})
    async with server.client(user()) as http:
        streaming = asyncio.ensure_future(post_agui(http, "echo", body))
        async with asyncio.timeout(10):
            while not (runs := (await http.get("/v1/runs")).json()["runs"]):
                await asyncio.sleep(0.02)  # polling the server for the run the stream started
        assert (await http.post(f"/v1/runs/{runs[0]['run_id']}/cancel")).status_code == 202
        status, events, _ = await streaming
    assert status == 200
    check_order(events)
    last = events[-1].event
    assert last["type"] == "RUN_FINISHED"
    assert last["outcome"] == {"type": "cancelled"}
    assert "result" not in last


async def test_thread_ids_bind_to_corral_threads_per_user(server: LiveServer) -> None:
    """A threadId used first starts a new thread; the same threadId continues it; another
    threadId is another thread; another user with the same threadId gets a thread of their own."""
    alice, bob = user(), user()
    shared = f"thread-{uuid.uuid4().hex}"
    async with server.client(alice) as a, server.client(bob) as b:
        first = (await post_agui(a, "echo", run_input("one", thread_id=shared)))[1]
        second = (await post_agui(a, "echo", run_input("two", thread_id=shared)))[1]
        other = (await post_agui(a, "echo", run_input("three")))[1]
        bobs = (await post_agui(b, "echo", run_input("four", thread_id=shared)))[1]
        thread = corral_ids(first)["thread_id"]
        assert corral_ids(second)["thread_id"] == thread
        assert corral_ids(other)["thread_id"] != thread
        assert corral_ids(bobs)["thread_id"] != thread
        in_thread = (await a.get("/v1/runs", params={"thread_id": thread})).json()["runs"]
        assert [r["input"]["message"] for r in in_thread] == ["two", "one"]
        # Bob's thread is his; Alice's is not his to read.
        foreign = await b.get("/v1/runs", params={"thread_id": thread})
        assert foreign.json()["runs"] == []


async def test_the_stream_of_a_run_in_ag_ui_resumes_by_last_event_id(server: LiveServer) -> None:
    """GET …/stream?format=ag-ui of a finished run is the POST's stream (threadId = the bound
    AG-UI id, runId = corral's); resumed with Last-Event-ID inside the answer, it goes on in
    the same text message with no START, no duplicate and nothing missed."""
    body = run_input(QUESTION)
    async with server.client(user()) as http:
        _, posted, _ = await post_agui(http, "research", body)
        run_id = corral_ids(posted)["run_id"]
        status, full, error = await get_agui(http, run_id)
        assert status == 200, error
        check_order(full)
        assert full[0].event["threadId"] == body["threadId"]
        assert full[0].event["runId"] == run_id
        assert [a.event for a in full[1:]] == [
            {**a.event, **({"runId": run_id} if "runId" in a.event else {})} for a in posted[1:]
        ]
        first_text = next(
            a.id for a in full if a.type == "TEXT_MESSAGE_CONTENT" and a.id is not None
        )
        resumed_at = first_text  # inside the text message: it started at this seq
        _, rest, _ = await get_agui(http, run_id, headers={"Last-Event-ID": str(resumed_at)})
        cut = max(i for i, a in enumerate(full) if a.id == resumed_at)
        assert [(a.id, a.event) for a in rest] == [(a.id, a.event) for a in full[cut + 1 :]]
        assert "TEXT_MESSAGE_START" not in [a.type for a in rest]
        message = next(a.event["messageId"] for a in full if a.id == resumed_at)
        check_order(rest, opened=False, open_text=message)
        _, after, _ = await get_agui(http, run_id, params={"format": "ag-ui", "after": 9999})
        assert after == []


@sqlite_only
async def test_the_agent_input_comes_from_forwarded_props_or_the_last_user_message(
    start_server: StartServer,
) -> None:
    """forwardedProps.input is the input as it is; else the last user message's text (string
    or text parts) goes into the one required string field; an agent with several required
    fields needs forwardedProps.input (422 naming it), and so does a request without text."""

    class Pair(BaseModel):
        left: str
        right: str

    registry: AgentRegistry = builtin_registry()

    @registry.agent("pair", input_model=Pair, description="two texts")
    async def pair(ctx: Any, params: Pair) -> dict[str, str]:
        return {"joined": params.left + params.right}

    server = await start_server(registry)
    messages = [
        {"id": "1", "role": "user", "content": "first"},
        {"id": "2", "role": "assistant", "content": "ok"},
        {"id": "3", "role": "user", "content": [{"type": "text", "text": "last"}]},
    ]
    async with server.client(user()) as http:
        _, events, _ = await post_agui(http, "echo", run_input(messages=messages))
        assert events[-1].event["result"] == {"message": "last", "steps": 1}
        given = run_input(forwardedProps={"input": {"left": "a", "right": "b"}})
        _, events, _ = await post_agui(http, "pair", given)
        assert events[-1].event["result"] == {"joined": "ab"}
        status, _, error = await post_agui(http, "pair", run_input("just text"))
        assert status == 422
        assert orjson.loads(error)["error"]["details"][0]["field"] == "forwardedProps.input"
        status, _, error = await post_agui(http, "echo", run_input(None))
        assert status == 422
        assert orjson.loads(error)["error"]["details"][0]["field"] == "messages"


@sqlite_only
@pytest.mark.parametrize(
    ("agent", "change", "status", "code"),
    [
        ("nope", {}, 404, "not_found"),
        ("echo", {"threadId": None}, 422, "validation_error"),
        ("echo", {"messages": "hello"}, 422, "validation_error"),
        ("echo", {"threadId": "bad\nid"}, 422, "validation_error"),
        ("echo", {"threadId": "t" * 257}, 422, "validation_error"),
        ("echo", {"forwardedProps": {"input": "text"}}, 422, "validation_error"),
        ("echo", {"forwardedProps": {"input": {"message": 5}}}, 422, "validation_error"),
    ],
)
async def test_refusals_are_json_errors_and_start_nothing(
    server: LiveServer, agent: str, change: dict[str, Any], status: int, code: str
) -> None:
    """An unknown agent, a body that is not a RunAgentInput or an input the agent refuses: the
    usual JSON error before any stream, and no run, no thread."""
    body = {k: v for k, v in {**run_input(), **change}.items() if v is not None}
    async with server.client(user()) as http:
        got, _, error = await post_agui(http, agent, body)
        assert got == status, error
        assert orjson.loads(error)["error"]["code"] == code
        assert (await http.get("/v1/runs")).json()["runs"] == []


@sqlite_only
async def test_without_a_token_it_is_401_and_another_users_run_is_404(server: LiveServer) -> None:
    """AG-UI routes authenticate like the others; another user's run in AG-UI reads like a
    missing one; an unknown format is a 422."""
    async with server.client() as anonymous:
        status, _, _ = await post_agui(anonymous, "echo", run_input())
        assert status == 401
    async with server.client(user()) as alice, server.client(user()) as bob:
        _, events, _ = await post_agui(alice, "echo", run_input())
        run_id = corral_ids(events)["run_id"]
        assert (await get_agui(bob, run_id))[0] == 404
        bad = await alice.get(f"/v1/runs/{run_id}/stream", params={"format": "xml"})
        assert bad.status_code == 422


@sqlite_only
async def test_the_routes_are_in_the_openapi_document(server: LiveServer) -> None:
    """/openapi.json documents POST /v1/ag-ui/{agent} (a RunAgentInput body) and the stream's
    format parameter."""
    async with server.client() as http:
        doc = (await http.get("/openapi.json")).json()
    operation = doc["paths"]["/v1/ag-ui/{agent}"]["post"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    stream = doc["paths"]["/v1/runs/{run_id}/stream"]["get"]
    assert "format" in [p["name"] for p in stream["parameters"]]
