"""The ``chat`` agent over AG-UI (contract §12), against scripted chat-completions endpoints:
it answers an AG-UI conversation as a chat — the last user message is what it is asked, the
thread bound to the AG-UI ``threadId`` is its memory, the answer streams as one assistant text
message. Every event is validated with the ``ag-ui-protocol`` package's models."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from support_agui import check_order, post_agui, run_input

from .conftest import chat_registry, llm_settings
from .servers import DONE, ScriptedModel, Stream, answer, chunk

Scripted = Callable[..., Awaitable[tuple[ScriptedModel, str]]]


def calculator_call(expression: str) -> Stream:
    call = {
        "index": 0,
        "id": "model-call-1",
        "type": "function",
        "function": {"name": "calculator", "arguments": f'{{"expression": "{expression}"}}'},
    }
    return Stream(
        [chunk("Let me work it out."), chunk(tool_calls=[call]), chunk(finish="tool_calls"), DONE]
    )


async def test_chat_answers_an_ag_ui_conversation_and_remembers_its_thread(
    start_server: Any, scripted: Scripted
) -> None:
    """Two turns on one threadId: each answer is one assistant text message whose content is
    the run's answer; the second request to the model carries the first exchange (the thread
    bound to the threadId is the chat's memory), and the AG-UI history is not sent twice."""
    model, url = await scripted(answer("Hello", " Ada."), answer("You said ", "hi."))
    server = await start_server(registry=chat_registry(llm_settings(url)))
    thread = f"chat-{uuid.uuid4().hex}"
    async with server.client("ada") as http:
        status, first, error = await post_agui(
            http, "chat", run_input("hi, I am Ada", thread_id=thread)
        )
        assert status == 200, error
        history = [
            {"id": "u1", "role": "user", "content": "hi, I am Ada"},
            {"id": "a1", "role": "assistant", "content": "Hello Ada."},
            {"id": "u2", "role": "user", "content": "what did I say?"},
        ]
        _, second, _ = await post_agui(http, "chat", run_input(thread_id=thread, messages=history))
    for events, expected in ((first, "Hello Ada."), (second, "You said hi.")):
        check_order(events)
        kinds = [a.type for a in events]
        assert kinds.count("TEXT_MESSAGE_START") == kinds.count("TEXT_MESSAGE_END") == 1
        text = "".join(a.event["delta"] for a in events if a.type == "TEXT_MESSAGE_CONTENT")
        assert text == expected == events[-1].event["result"]["answer"]
        assert events[-1].event["type"] == "RUN_FINISHED"
    asked = [(m["role"], m["content"]) for m in model.requests[1].messages[1:]]
    assert asked == [
        ("user", "hi, I am Ada"),
        ("assistant", "Hello Ada."),
        ("user", "what did I say?"),
    ]


async def test_chat_tool_calls_split_the_answer_into_messages_around_the_call(
    start_server: Any, scripted: Scripted
) -> None:
    """Text, then a tool call, then more text: a text message ends before TOOL_CALL_START, the
    call and its result follow (toolCallId = corral's call_id), and the rest of the answer is
    a second text message; both together are the answer."""
    _model, url = await scripted(calculator_call("6*7"), answer("It is ", "42."))
    server = await start_server(registry=chat_registry(llm_settings(url)))
    async with server.client("ann") as http:
        status, events, error = await post_agui(http, "chat", run_input("what is 6*7?"))
    assert status == 200, error
    check_order(events)
    kinds = [a.type for a in events if not a.type.startswith(("CUSTOM", "RUN_"))]
    assert kinds == [
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
        "TOOL_CALL_RESULT",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
    ]
    text = "".join(a.event["delta"] for a in events if a.type == "TEXT_MESSAGE_CONTENT")
    assert text == events[-1].event["result"]["answer"]
    assert '"value":42' in next(a.event["content"] for a in events if a.type == "TOOL_CALL_RESULT")
