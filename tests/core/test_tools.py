"""UnifiedToolExecutionEngine: every call emits exactly one tool_executing/tool_completed pair."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from corral import AgentRegistry, EventType, ToolCallError, UnifiedToolExecutionEngine
from corral.core.events import REDACTED

from .conftest import WAIT_S, Signals, new_ctx

Recorded = list[tuple[EventType, dict[str, Any]]]


def tool_registry(signals: Signals) -> AgentRegistry:
    registry = AgentRegistry()

    @registry.tool()
    async def add(a: int, b: int) -> int:
        return a + b

    @registry.tool()
    async def login(username: str, password: str) -> dict[str, str]:
        return {"user": username, "token": f"tok-{password}", "note": "password=hunter2"}

    @registry.tool()
    async def explode(reason: str) -> None:
        raise ValueError(f"broken: {reason}")

    @registry.tool(timeout_s=0.05)
    async def hang() -> None:
        signals("tool", "hang").set()
        await asyncio.Event().wait()

    @registry.tool()
    async def block() -> None:  # no own timeout: the engine default applies
        signals("tool", "block").set()
        await asyncio.Event().wait()

    @registry.tool()
    async def unserializable() -> object:
        return object()

    registry.freeze()
    return registry


def make_engine(
    signals: Signals, *, default_timeout_s: float = 60.0
) -> tuple[UnifiedToolExecutionEngine, Recorded]:
    recorded: Recorded = []

    async def emit(type_: EventType, data: dict[str, Any]) -> None:
        recorded.append((type_, data))

    engine = UnifiedToolExecutionEngine(
        new_ctx("alice"), tool_registry(signals), emit, default_timeout_s=default_timeout_s
    )
    return engine, recorded


def assert_one_pair(recorded: Recorded, tool: str) -> dict[str, Any]:
    """Exactly one executing/completed pair for ``tool``, in that order; returns completed."""
    assert [t for t, _ in recorded] == [EventType.TOOL_EXECUTING, EventType.TOOL_COMPLETED]
    executing, completed = recorded[0][1], recorded[1][1]
    assert executing["tool"] == completed["tool"] == tool
    assert executing["call_id"] == completed["call_id"]
    assert completed["duration_ms"] >= 0
    return completed


async def test_success_emits_pair_with_args_and_result(signals: Signals) -> None:
    engine, recorded = make_engine(signals)
    assert await engine.call("add", a=2, b=3) == 5
    completed = assert_one_pair(recorded, "add")
    assert recorded[0][1]["args"] == {"a": 2, "b": 3}
    assert completed["status"] == "success"
    assert completed["result"] == 5
    assert "error" not in completed


async def test_call_ids_are_unique_within_the_run(signals: Signals) -> None:
    engine, recorded = make_engine(signals)
    await asyncio.gather(*(engine.call("add", a=i, b=i) for i in range(5)))
    executing = [d["call_id"] for t, d in recorded if t is EventType.TOOL_EXECUTING]
    completed = [d["call_id"] for t, d in recorded if t is EventType.TOOL_COMPLETED]
    assert len(set(executing)) == 5
    assert sorted(executing) == sorted(completed)


async def test_secret_args_and_results_are_redacted_in_events_but_returned_as_produced(
    signals: Signals,
) -> None:
    """The events carry the key-redacted forms; the caller gets the tool's result unchanged
    (contract §4: redaction changes only what is stored and sent)."""
    engine, recorded = make_engine(signals)
    result = await engine.call("login", username="alice", password="hunter2")
    completed = assert_one_pair(recorded, "login")
    assert recorded[0][1]["args"] == {"username": "alice", "password": REDACTED}
    assert completed["result"]["token"] == REDACTED
    assert completed["result"]["user"] == "alice"
    assert "hunter2" not in repr(recorded)
    assert result == {"user": "alice", "token": "tok-hunter2", "note": "password=hunter2"}


async def test_tool_exception_ends_in_error_status_and_tool_call_error(
    signals: Signals,
) -> None:
    engine, recorded = make_engine(signals)
    with pytest.raises(ToolCallError) as info:
        await engine.call("explode", reason="password=hunter2")
    completed = assert_one_pair(recorded, "explode")
    assert completed["status"] == "error"
    assert completed["error"]["type"] == "tool_error"
    assert "ValueError" in completed["error"]["message"]
    assert "hunter2" not in completed["error"]["message"]
    assert "result" not in completed
    assert (info.value.tool, info.value.status) == ("explode", "error")


async def test_unknown_tool_still_emits_a_pair(signals: Signals) -> None:
    engine, recorded = make_engine(signals)
    with pytest.raises(ToolCallError):
        await engine.call("no_such_tool", x=1)
    completed = assert_one_pair(recorded, "no_such_tool")
    assert completed["status"] == "error"
    assert completed["error"]["type"] == "unknown_tool"


@pytest.mark.parametrize("args", [{"a": 1}, {"a": 1, "b": 2, "c": 3}, {"a": "x", "b": 2}])
async def test_invalid_args_still_emit_a_pair(signals: Signals, args: dict[str, Any]) -> None:
    engine, recorded = make_engine(signals)
    with pytest.raises(ToolCallError):
        await engine.call("add", **args)
    completed = assert_one_pair(recorded, "add")
    assert completed["error"]["type"] == "invalid_args"


async def test_non_json_result_ends_in_error(signals: Signals) -> None:
    engine, recorded = make_engine(signals)
    with pytest.raises(ToolCallError):
        await engine.call("unserializable")
    assert assert_one_pair(recorded, "unserializable")["error"]["type"] == "invalid_result"


async def test_tool_past_its_own_timeout_ends_in_timeout_status(signals: Signals) -> None:
    engine, recorded = make_engine(signals)
    with pytest.raises(ToolCallError) as info:
        await engine.call("hang")
    completed = assert_one_pair(recorded, "hang")
    assert completed["status"] == "timeout"
    assert completed["error"]["type"] == "timeout"
    assert info.value.status == "timeout"


async def test_engine_default_timeout_applies_to_tools_without_one(signals: Signals) -> None:
    engine, recorded = make_engine(signals, default_timeout_s=0.05)
    with pytest.raises(ToolCallError):
        await engine.call("block")
    assert assert_one_pair(recorded, "block")["status"] == "timeout"


async def test_cancelled_mid_tool_emits_completed_then_propagates(signals: Signals) -> None:
    engine, recorded = make_engine(signals)
    task = asyncio.create_task(engine.call("block"))
    await asyncio.wait_for(signals("tool", "block").wait(), WAIT_S)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    completed = assert_one_pair(recorded, "block")
    assert completed["status"] == "error"
    assert completed["error"]["type"] == "cancelled"


async def test_second_cancellation_does_not_lose_tool_completed(signals: Signals) -> None:
    """While tool_completed is being emitted a second cancel arrives; the event still lands."""
    recorded: Recorded = []
    emitting = asyncio.Event()
    committed = asyncio.Event()

    async def slow_emit(type_: EventType, data: dict[str, Any]) -> None:
        if type_ is EventType.TOOL_COMPLETED:
            emitting.set()
            await committed.wait()  # e.g. a store commit in progress
        recorded.append((type_, data))

    engine = UnifiedToolExecutionEngine(new_ctx("alice"), tool_registry(signals), slow_emit)
    task = asyncio.create_task(engine.call("block"))
    await asyncio.wait_for(signals("tool", "block").wait(), WAIT_S)
    task.cancel()
    await asyncio.wait_for(emitting.wait(), WAIT_S)
    task.cancel()  # the run is cancelled again while the pair is being completed
    assert not task.done()
    committed.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert assert_one_pair(recorded, "block")["status"] == "error"
