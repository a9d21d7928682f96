"""The chat agent against scripted chat-completions endpoints on loopback: trouble, and the
exact mechanics of tool calls and limits.

Each test runs a real corral server whose ``chat`` agent talks HTTP to a small local server
that answers as the test scripts it: refused connections, 429 and 5xx, broken streams, a
stream that never ends, tool calls.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from corral.loading import load_agents

from .conftest import (
    chat_registry,
    deltas,
    llm_settings,
    run_chat,
    start_run,
    stream_events,
)
from .servers import DONE, Reply, ScriptedModel, Stream, answer, chunk, free_port

Scripted = Callable[..., Awaitable[tuple[ScriptedModel, str]]]
WAIT_S = 10.0


def error_of(run: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, str]:
    assert run["status"] == "failed", run
    assert events[-1]["type"] == "agent_error", events[-1]
    assert events[-1]["data"]["error"] == run["error"]
    error: dict[str, str] = run["error"]
    return error


def thoughts(events: list[dict[str, Any]]) -> str:
    return "\n".join(e["data"]["text"] for e in events if e["type"] == "agent_thinking")


async def test_endpoint_down_ends_in_llm_error_naming_the_server(start_server: Any) -> None:
    """Nothing listening: retried, then agent_error llm_error saying what to check."""
    url = f"http://127.0.0.1:{free_port()}/v1"
    server = await start_server(registry=chat_registry(llm_settings(url, retries=1)))
    async with server.client("ann") as client:
        run, events = await run_chat(client, "hello?")
    error = error_of(run, events)
    assert error["type"] == "llm_error"
    assert url in error["message"]
    assert "refused the connection" in error["message"]
    assert "is it running" in error["message"]
    assert "retry 1 of 1" in thoughts(events)


async def test_429_then_200_succeeds_after_honouring_retry_after(
    start_server: Any, scripted: Scripted
) -> None:
    """A 429 with Retry-After: 1 is retried no sooner than a second later, then succeeds."""
    model, url = await scripted(
        Reply(429, '{"error": {"message": "slow down"}}', {"Retry-After": "1"}),
        answer("Hello", " there"),
    )
    server = await start_server(registry=chat_registry(llm_settings(url)))
    async with server.client("ann") as client:
        run, events = await run_chat(client, "hi")
    assert run["status"] == "succeeded", run
    assert run["output"]["answer"] == "Hello there" == "".join(deltas(events))
    assert len(model.requests) == 2
    assert model.requests[1].at - model.requests[0].at >= 0.95
    assert "HTTP 429" in thoughts(events)


async def test_a_retry_after_longer_than_allowed_fails_at_once(
    start_server: Any, scripted: Scripted
) -> None:
    model, url = await scripted(Reply(429, "", {"Retry-After": "3600"}), answer("never"))
    settings = llm_settings(url, retry_max_wait_s=5)
    server = await start_server(registry=chat_registry(settings))
    async with server.client("ann") as client:
        run, events = await run_chat(client, "hi")
    error = error_of(run, events)
    assert "HTTP 429" in error["message"]
    assert "3600" in error["message"]
    assert "CORRAL_LLM_RETRY_MAX_WAIT_S" in error["message"]
    assert len(model.requests) == 1


async def test_5xx_is_retried_then_ends_in_llm_error(start_server: Any, scripted: Scripted) -> None:
    model, url = await scripted(Reply(503, "model loading"))
    server = await start_server(registry=chat_registry(llm_settings(url, retries=2)))
    async with server.client("ann") as client:
        run, events = await run_chat(client, "hi")
    error = error_of(run, events)
    assert error["type"] == "llm_error"
    assert "HTTP 503: model loading" in error["message"]
    assert "logs" in error["message"]
    assert len(model.requests) == 3


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (Stream([chunk("Hi"), "data: {not json", DONE]), "not JSON"),
        (Stream([chunk("Hi"), 'data: {"choices": 7}', DONE]), "chat-completions shape"),
        (Stream([chunk("Hi"), 'data: {"error": {"message": "boom"}}']), "boom"),
        (Stream([chunk("Hi"), chunk(" there")]), "cut short"),
        (Stream([chunk("Hi"), DONE]), "--interrupt_requests false"),
        (Reply(200, '{"choices": []}', {"Content-Type": "application/json"}), "event stream"),
        (
            Stream(
                [
                    chunk(tool_calls=[{"index": 0, "function": {"arguments": "{}"}}]),
                    chunk(finish="tool_calls"),
                    DONE,
                ]
            ),
            "no function name",
        ),
    ],
    ids=[
        "not-json",
        "wrong-shape",
        "error-event",
        "cut-short",
        "done-without-finish",
        "not-a-stream",
        "nameless-tool",
    ],
)
async def test_a_malformed_stream_is_an_llm_error_not_a_crash(
    start_server: Any, scripted: Scripted, script: Any, expected: str
) -> None:
    """The run fails with llm_error; the server goes on serving the next run."""
    model, url = await scripted(script)
    server = await start_server(registry=chat_registry(llm_settings(url)))
    async with server.client("ann") as client:
        run, events = await run_chat(client, "hi")
        error = error_of(run, events)
        assert error["type"] == "llm_error"
        assert expected in error["message"]
        assert len(model.requests) == 1  # a broken stream is not retried
        echo = await start_run(client, "still here", agent="echo")
        tail = await stream_events(client, echo["run_id"])
        assert tail[-1].event["type"] == "agent_completed"


async def test_cancel_mid_stream_closes_the_model_response(
    start_server: Any, scripted: Scripted
) -> None:
    """Cancelled after the first delta: the run ends cancelled and the HTTP stream is closed."""
    model, url = await scripted(Stream([chunk(role="assistant"), chunk("Once upon")], hang=True))
    server = await start_server(registry=chat_registry(llm_settings(url)))
    async with server.client("ann") as client:
        run = await start_run(client, "tell me a story")
        run_id = run["run_id"]

        async def cancel_on_first_delta(event: dict[str, Any]) -> None:
            if event["type"] == "agent_update":
                response = await client.post(f"/v1/runs/{run_id}/cancel")
                assert response.status_code == 202

        events = [t.event for t in await stream_events(client, run_id, cancel_on_first_delta)]
        final = (await client.get(f"/v1/runs/{run_id}")).json()
    assert final["status"] == "cancelled"
    assert events[-1]["type"] == "agent_cancelled"
    assert deltas(events) == ["Once upon"]
    await asyncio.wait_for(model.requests[0].disconnected.wait(), WAIT_S)
    assert not model.requests[0].finished.is_set()


async def test_model_time_limit_ends_a_hanging_stream(
    start_server: Any, scripted: Scripted
) -> None:
    model, url = await scripted(Stream([chunk("Thinking")], hang=True))
    settings = llm_settings(url, model_time_limit_s=0.5)
    server = await start_server(registry=chat_registry(settings))
    async with server.client("ann") as client:
        run, events = await run_chat(client, "hi")
    error = error_of(run, events)
    assert error["type"] == "llm_error"
    assert "model time limit of 0.5 s" in error["message"]
    assert "CORRAL_LLM_MODEL_TIME_LIMIT_S" in error["message"]
    await asyncio.wait_for(model.requests[0].disconnected.wait(), WAIT_S)


async def test_max_tokens_is_sent_and_enforced_on_a_server_that_ignores_it(
    start_server: Any, scripted: Scripted
) -> None:
    model, url = await scripted(answer(*"abcdefghij"))
    server = await start_server(registry=chat_registry(llm_settings(url, max_tokens=3)))
    async with server.client("ann") as client:
        run, events = await run_chat(client, "hi")
    assert run["status"] == "succeeded", run
    assert run["output"]["answer"] == "abc" == "".join(deltas(events))
    assert run["output"]["finish_reason"] == "length"
    assert model.requests[0].body["max_tokens"] == 3


def tool_call(name: str, *arg_pieces: str, call_id: str = "call_a") -> Stream:
    first, *rest = arg_pieces
    lines = [
        chunk(
            role="assistant",
            tool_calls=[
                {
                    "index": 0,
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": first},
                }
            ],
        )
    ]
    lines += [chunk(tool_calls=[{"index": 0, "function": {"arguments": p}}]) for p in rest]
    return Stream([*lines, chunk(finish="tool_calls"), DONE])


async def test_tool_results_go_back_to_the_model(start_server: Any, scripted: Scripted) -> None:
    """A streamed tool call runs the registry tool (event pair) and its result is sent back."""
    model, url = await scripted(
        tool_call("calculator", '{"expression"', ': "6*7"}'),
        answer("It is ", "42."),
    )
    server = await start_server(registry=chat_registry(llm_settings(url)))
    async with server.client("ann") as client:
        run, events = await run_chat(client, "what is 6*7?")
    assert run["status"] == "succeeded", run
    assert run["output"]["answer"] == "It is 42." == "".join(deltas(events))
    assert run["output"]["tool_calls"] == 1
    pair = [e for e in events if e["type"].startswith("tool_")]
    assert [e["type"] for e in pair] == ["tool_executing", "tool_completed"]
    assert pair[0]["data"]["args"] == {"expression": "6*7"}
    assert pair[1]["data"]["status"] == "success"
    first, second = model.requests
    assert {t["function"]["name"] for t in first.body["tools"]} >= {"calculator", "search_docs"}
    assert first.body["tool_choice"] == "auto"
    assistant, tool = second.messages[-2:]
    assert assistant["role"] == "assistant"
    assert assistant["tool_calls"][0]["id"] == "call_a"
    assert tool["role"] == "tool"
    assert tool["tool_call_id"] == "call_a"
    assert json.loads(tool["content"])["value"] == 42
    assert "Calling calculator" in thoughts(events)


async def test_text_before_a_tool_call_and_after_it_make_one_answer(
    start_server: Any, scripted: Scripted
) -> None:
    """Text of every response streams; a blank line separates responses; deltas == answer."""
    call = tool_call("current_date", "{}")
    call.lines.insert(0, chunk("Let me check."))
    _model, url = await scripted(call, answer("It is today."))
    server = await start_server(registry=chat_registry(llm_settings(url)))
    async with server.client("ann") as client:
        run, events = await run_chat(client, "what day is it?")
    assert run["status"] == "succeeded", run
    assert run["output"]["answer"] == "Let me check.\n\nIt is today."
    assert "".join(deltas(events)) == run["output"]["answer"]
    types = [e["type"] for e in events]
    assert types.index("agent_update") < types.index("tool_executing")


async def test_a_failing_or_unknown_tool_is_reported_to_the_model(
    start_server: Any, scripted: Scripted
) -> None:
    model, url = await scripted(
        tool_call("calculator", '{"expression": "1/0"}', call_id="c1"),
        tool_call("rm_rf", "{}", call_id="c2"),
        answer("Sorry."),
    )
    server = await start_server(registry=chat_registry(llm_settings(url)))
    async with server.client("ann") as client:
        run, events = await run_chat(client, "divide by zero")
    assert run["status"] == "succeeded", run
    completed = [e["data"] for e in events if e["type"] == "tool_completed"]
    assert [c["status"] for c in completed] == ["error"]  # rm_rf was never run
    results = [
        json.loads(m["content"]) for r in model.requests for m in r.messages if m["role"] == "tool"
    ]
    assert "error" in results[-1]
    assert "rm_rf" in results[-1]["error"]
    assert "error" in results[0]


async def test_tool_rounds_are_bounded_then_the_model_must_answer(
    start_server: Any, scripted: Scripted
) -> None:
    model, url = await scripted(tool_call("current_date", "{}"), answer("Done"))
    # The scripted model would call tools forever; the second script repeats only if asked.
    model.scripts.appendleft(tool_call("current_date", "{}"))
    settings = llm_settings(url, max_tool_rounds=2)
    server = await start_server(registry=chat_registry(settings))
    async with server.client("ann") as client:
        run, _events = await run_chat(client, "what day is it?")
    assert run["status"] == "succeeded", run
    assert run["output"]["tool_calls"] == 2
    assert [("tools" in r.body) for r in model.requests] == [True, True, False]


async def test_forced_tool_choice_is_sent_on_the_first_response_only(
    start_server: Any, scripted: Scripted
) -> None:
    model, url = await scripted(tool_call("current_date", "{}"), answer("Today."))
    settings = llm_settings(url, tool_choice="current_date")
    server = await start_server(registry=chat_registry(settings))
    async with server.client("ann") as client:
        run, _events = await run_chat(client, "date?")
    assert run["status"] == "succeeded", run
    choices = [r.body["tool_choice"] for r in model.requests]
    assert choices == [{"type": "function", "function": {"name": "current_date"}}, "auto"]


async def test_the_run_token_limit_stops_a_tool_loop(start_server: Any, scripted: Scripted) -> None:
    _model, url = await scripted(tool_call("current_date", "{", "}"))
    settings = llm_settings(url, max_run_tokens=2)
    server = await start_server(registry=chat_registry(settings))
    async with server.client("ann") as client:
        run, events = await run_chat(client, "loop")
    error = error_of(run, events)
    assert error["type"] == "llm_error"
    assert "limit of 2 model tokens" in error["message"]
    assert "CORRAL_LLM_MAX_RUN_TOKENS" in error["message"]


async def test_the_api_key_is_sent_but_never_shown(
    start_server: Any, scripted: Scripted, caplog: pytest.LogCaptureFixture
) -> None:
    """The key goes in the Authorization header; events, errors and logs never carry it."""
    key = "sk-test-0123456789abcdef"
    model, url = await scripted(
        Reply(401, json.dumps({"error": {"message": f"Incorrect API key provided: {key}"}})),
        answer("ok"),
    )
    server = await start_server(registry=chat_registry(llm_settings(url, api_key=key)))
    caplog.set_level(logging.DEBUG)
    async with server.client("ann") as client:
        run, events = await run_chat(client, "hi")
        run2, events2 = await run_chat(client, "hi again")
    assert model.requests[0].headers["authorization"] == f"Bearer {key}"
    error = error_of(run, events)
    assert "HTTP 401" in error["message"]
    assert "CORRAL_LLM_API_KEY" in error["message"]
    assert run2["status"] == "succeeded"
    shown = json.dumps([run, events, run2, events2]) + caplog.text
    assert key not in shown


async def test_404_points_at_the_base_url_and_model(start_server: Any, scripted: Scripted) -> None:
    _model, url = await scripted(Reply(404, '{"detail": "Not Found"}'))
    server = await start_server(registry=chat_registry(llm_settings(url)))
    async with server.client("ann") as client:
        run, events = await run_chat(client, "hi")
    message = error_of(run, events)["message"]
    assert "HTTP 404: Not Found" in message
    assert "CORRAL_LLM_BASE_URL" in message
    assert "CORRAL_LLM_MODEL" in message


def test_chat_is_registered_only_when_a_model_is_configured(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("CORRAL_LLM_BASE_URL", "CORRAL_LLM_MODEL", "CORRAL_LLM_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert "chat" not in load_agents([])
    monkeypatch.setenv("CORRAL_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    assert "chat" not in load_agents([])
    assert "CORRAL_LLM_MODEL is not set" in caplog.text
    monkeypatch.setenv("CORRAL_LLM_MODEL", "m")
    registry = load_agents([])
    assert "chat" in registry
    assert registry.get_agent("chat").input_schema()["required"] == ["message"]
