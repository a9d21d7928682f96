"""The chat agent keeps its conversation in the thread's state (contract §10), against a
scripted chat-completions endpoint: bounded, saved only by a reply that succeeded, and read
from the thread's runs once for a thread that has no state yet."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from corral.store.sql import Q, Sql

from .conftest import chat_registry, llm_settings, run_chat
from .servers import Reply, ScriptedModel, answer

Scripted = Callable[..., Awaitable[tuple[ScriptedModel, str]]]


def said(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The (role, content) of a request's messages after the system prompt."""
    return [(m["role"], m["content"]) for m in messages[1:]]


async def test_the_conversation_lives_in_thread_state_bounded_to_history_runs(
    start_server: Any, scripted: Scripted
) -> None:
    """With CORRAL_LLM_HISTORY_RUNS=2, each message goes with the latest two exchanges, and
    the thread's state holds exactly those."""
    model, url = await scripted(answer("A1"), answer("A2"), answer("A3"), answer("A4"))
    server = await start_server(registry=chat_registry(llm_settings(url, history_runs=2)))
    async with server.client("ann") as client:
        first, _ = await run_chat(client, "Q1")
        thread_id = first["thread_id"]
        for n in (2, 3, 4):
            run, _ = await run_chat(client, f"Q{n}", thread_id=thread_id)
            assert run["status"] == "succeeded", run
        thread = (await client.get(f"/v1/threads/{thread_id}")).json()
    requests = [said(r.messages) for r in model.requests]
    assert requests[0] == [("user", "Q1")]
    assert requests[1] == [("user", "Q1"), ("assistant", "A1"), ("user", "Q2")]
    assert requests[3] == [
        ("user", "Q2"),
        ("assistant", "A2"),
        ("user", "Q3"),
        ("assistant", "A3"),
        ("user", "Q4"),
    ]
    assert thread["state"] == {
        "chat": {
            "exchanges": [
                {"user": "Q3", "assistant": "A3"},
                {"user": "Q4", "assistant": "A4"},
            ]
        }
    }


async def test_a_failed_reply_is_not_remembered(start_server: Any, scripted: Scripted) -> None:
    """A message whose model call failed (llm_error) is not in the state nor sent again."""
    model, url = await scripted(answer("A1"), Reply(400, "bad request"), answer("A3"))
    server = await start_server(registry=chat_registry(llm_settings(url, retries=0)))
    async with server.client("ann") as client:
        first, _ = await run_chat(client, "Q1")
        failed, _ = await run_chat(client, "lost", thread_id=first["thread_id"])
        assert failed["status"] == "failed", failed
        third, _ = await run_chat(client, "Q3", thread_id=first["thread_id"])
        state = (await client.get(f"/v1/threads/{first['thread_id']}")).json()["state"]
    assert third["status"] == "succeeded"
    assert said(model.requests[-1].messages) == [
        ("user", "Q1"),
        ("assistant", "A1"),
        ("user", "Q3"),
    ]
    assert [e["user"] for e in state["chat"]["exchanges"]] == ["Q1", "Q3"]


async def test_a_thread_without_chat_state_is_continued_from_its_runs(
    start_server: Any, scripted: Scripted
) -> None:
    """A thread whose earlier exchange is only in its runs (as before thread state) is
    continued from them once; from then on its state carries the conversation."""
    model, url = await scripted(answer("A1"), answer("A2"))
    server = await start_server(registry=chat_registry(llm_settings(url)))
    async with server.client("ann") as client:
        first, _ = await run_chat(client, "Q1")
        thread_id = first["thread_id"]
        forget = Q("UPDATE threads SET state = NULL WHERE thread_id = :t")

        def write(sql: Sql) -> None:
            sql.execute(forget, {"t": thread_id})

        await server.runtime.parts.db.write(write)
        assert (await client.get(f"/v1/threads/{thread_id}")).json()["state"] == {}
        second, _ = await run_chat(client, "Q2", thread_id=thread_id)
        state = (await client.get(f"/v1/threads/{thread_id}")).json()["state"]
    assert second["status"] == "succeeded"
    assert said(model.requests[1].messages) == [("user", "Q1"), ("assistant", "A1"), ("user", "Q2")]
    assert [e["user"] for e in state["chat"]["exchanges"]] == ["Q1", "Q2"]
