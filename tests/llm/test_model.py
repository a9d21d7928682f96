"""The chat agent against a real model: SmolLM2-135M on llama.cpp's OpenAI-compatible server.

The model is small and weak, so these tests check mechanics — what is streamed and when, what
is sent to the model, who sees what — never the quality of an answer. A recording proxy sits
between corral and the model server so the tests can read every request corral makes.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import pytest

from .conftest import (
    chat_registry,
    deltas,
    llm_settings,
    run_chat,
    start_run,
    stream_events,
)
from .servers import RecordingProxy

Proxy = tuple[RecordingProxy, str]
WAIT_S = 20.0


def plain_chat(url: str, **overrides: Any) -> Any:
    """A chat registry whose model is offered no tools (a smaller, faster prompt)."""
    return chat_registry(llm_settings(url, tools="", **overrides))


async def test_the_answer_streams_live_and_concatenates_to_the_output(
    start_server: Any, proxy: Proxy
) -> None:
    """The first text_delta arrives while the model is still answering; deltas == answer."""
    recorder, url = proxy
    recorder.hold = asyncio.Event()
    server = await start_server(registry=plain_chat(url))
    async with server.client("ann") as client:
        run = await start_run(client, "Say hello to me in one short sentence.")
        run_id = run["run_id"]
        mid: dict[str, Any] = {}

        async def on_event(event: dict[str, Any]) -> None:
            if event["type"] == "agent_update" and not mid:
                # The proxy holds the model's response after its first text: mid-stream.
                mid.update((await client.get(f"/v1/runs/{run_id}")).json())
                assert recorder.hold is not None
                recorder.hold.set()

        timed = await stream_events(client, run_id, on_event)
        final = (await client.get(f"/v1/runs/{run_id}")).json()
    events = [t.event for t in timed]
    assert final["status"] == "succeeded", final
    assert mid["status"] == "running"
    first_delta = next(t for t in timed if t.event["type"] == "agent_update")
    assert first_delta.event["seq"] < timed[-1].event["seq"]
    assert first_delta.at < timed[-1].at
    texts = deltas(events)
    assert texts
    assert "".join(texts) == final["output"]["answer"]
    assert final["output"]["answer"].strip()
    [request] = recorder.requests
    assert request.body["stream"] is True
    assert request.body["temperature"] == 0
    assert request.body["max_tokens"] == 24
    assert "tools" not in request.body
    assert any(e["type"] == "agent_thinking" for e in events)


async def test_a_thread_remembers_its_exchanges_and_a_new_thread_starts_fresh(
    start_server: Any, proxy: Proxy
) -> None:
    """Run 2 on the thread sends run 1's exchange to the model; a run on a new thread does not."""
    recorder, url = proxy
    server = await start_server(registry=plain_chat(url, max_tokens=8))
    first_msg = "My favourite colour is teal. Reply with OK."
    second_msg = "What is my favourite colour?"
    async with server.client("ann") as client:
        first, _ = await run_chat(client, first_msg)
        second, _ = await run_chat(client, second_msg, thread_id=first["thread_id"])
        third, _ = await run_chat(client, second_msg)
    assert [r["status"] for r in (first, second, third)] == ["succeeded"] * 3
    assert second["thread_id"] == first["thread_id"] != third["thread_id"]
    req1, req2, req3 = (r.messages for r in recorder.requests)
    system = req1[0]
    assert system["role"] == "system"
    assert req1 == [system, {"role": "user", "content": first_msg}]
    assert req2 == [
        system,
        {"role": "user", "content": first_msg},
        {"role": "assistant", "content": first["output"]["answer"]},
        {"role": "user", "content": second_msg},
    ]
    assert req3 == [system, {"role": "user", "content": second_msg}]


@pytest.mark.slow
async def test_ten_users_chat_at_once_and_no_canary_crosses_users(
    start_server: Any, proxy: Proxy
) -> None:
    """Each user tells the model a private canary, then asks for it on the same thread.

    No canary of one user appears in another user's events, answers or stored history, and no
    request to the model carries two users' canaries.
    """
    recorder, url = proxy
    server = await start_server(registry=plain_chat(url, max_tokens=4))
    users = [f"user{i}" for i in range(10)]
    canaries = {user: f"CANARY{secrets.token_hex(4).upper()}" for user in users}

    async def converse(user: str) -> str:
        async with server.client(user) as client:
            first, events1 = await run_chat(
                client, f"Remember my secret codeword {canaries[user]}. Reply OK."
            )
            second, events2 = await run_chat(
                client, "What is my secret codeword?", thread_id=first["thread_id"]
            )
            assert first["status"] == second["status"] == "succeeded", (first, second)
            assert "".join(deltas(events2)) == second["output"]["answer"]
            listing = await client.get("/v1/runs", params={"thread_id": first["thread_id"]})
            stored = [
                (await client.get(f"/v1/runs/{run['run_id']}/events")).json()
                for run in (first, second)
            ]
            return json.dumps([first, second, events1, events2, listing.json(), stored])

    seen = await asyncio.gather(*(converse(user) for user in users))
    for user, blob in zip(users, seen, strict=True):
        assert canaries[user] in blob
        leaked = [other for other in users if other != user and canaries[other] in blob]
        assert not leaked, f"{user} saw the canaries of {leaked}"
    assert len(recorder.requests) == 2 * len(users)
    for request in recorder.requests:
        carried = [user for user in users if canaries[user] in request.text()]
        assert len(carried) == 1, f"a model request carried canaries of {carried}"
    # Each user's second request carried the first exchange (its own canary) as history.
    asks = [r for r in recorder.requests if r.messages[-1]["content"].startswith("What is")]
    assert len(asks) == len(users)
    assert all(len(r.messages) == 4 for r in asks)


async def test_a_forced_tool_call_runs_the_tool_and_returns_its_result_to_the_model(
    start_server: Any, proxy: Proxy
) -> None:
    """tool_choice=current_date: the model calls it, the event pair is emitted, and the result
    is the tool message of the next request.

    current_date takes no arguments, so the grammar-constrained call is short and always
    complete; a 135M model asked for a calculator expression may ramble past max_tokens.
    """
    recorder, url = proxy
    settings = llm_settings(
        url,
        tools="calculator,current_date",
        tool_choice="current_date",
        max_tool_rounds=1,
        max_tokens=32,
    )
    server = await start_server(registry=chat_registry(settings))
    async with server.client("ann") as client:
        run, events = await run_chat(client, "What is the date today?")
    assert run["status"] == "succeeded", run
    assert "".join(deltas(events)) == run["output"]["answer"]
    executing = [e["data"] for e in events if e["type"] == "tool_executing"]
    completed = [e["data"] for e in events if e["type"] == "tool_completed"]
    assert [e["tool"] for e in executing] == ["current_date"]
    assert [c["call_id"] for c in completed] == [executing[0]["call_id"]]
    first, second = recorder.requests
    assert first.body["tool_choice"] == {"type": "function", "function": {"name": "current_date"}}
    assert {t["function"]["name"] for t in first.body["tools"]} == {"calculator", "current_date"}
    assert "tools" not in second.body  # the last allowed round must answer in text
    assistant, tool = second.messages[-2:]
    [call] = assistant["tool_calls"]
    assert call["function"]["name"] == "current_date"
    assert json.loads(call["function"]["arguments"]) == executing[0]["args"]
    assert tool["role"] == "tool"
    assert tool["tool_call_id"] == call["id"]
    done = completed[0]
    sent_back = json.loads(tool["content"])
    if done["status"] == "success":
        assert sent_back == done["result"]
    else:
        assert sent_back == {"error": done["error"]["message"]}


async def test_cancel_mid_stream_ends_the_run_and_closes_the_model_stream(
    start_server: Any, proxy: Proxy
) -> None:
    recorder, url = proxy
    recorder.hold = asyncio.Event()
    server = await start_server(registry=plain_chat(url, max_tokens=64))
    async with server.client("ann") as client:
        run = await start_run(client, "Tell me a long story about a cat.")
        run_id = run["run_id"]
        cancelled: list[int] = []

        async def cancel_on_first_delta(event: dict[str, Any]) -> None:
            if event["type"] == "agent_update" and not cancelled:
                response = await client.post(f"/v1/runs/{run_id}/cancel")
                cancelled.append(response.status_code)

        events = [t.event for t in await stream_events(client, run_id, cancel_on_first_delta)]
        final = (await client.get(f"/v1/runs/{run_id}")).json()
    assert cancelled == [202]
    assert final["status"] == "cancelled"
    assert events[-1]["type"] == "agent_cancelled"
    [request] = recorder.requests
    await asyncio.wait_for(request.disconnected.wait(), WAIT_S)
    assert not request.finished.is_set()
