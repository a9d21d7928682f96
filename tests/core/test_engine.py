"""IsolatedExecutionEngine: the run state machine, its events, timeouts and cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from corral import (
    AgentRegistry,
    EventType,
    ExecutionEngineFactory,
    IsolatedExecutionEngine,
    Limits,
    RunContext,
    RunStatus,
)
from corral.core.events import REDACTED
from corral.errors import IllegalTransition

from .conftest import (
    WAIT_S,
    BusSink,
    Connect,
    Signals,
    assert_run_well_formed,
    enter_and_run,
    new_ctx,
    run_to_end,
)


def engine_for(registry: AgentRegistry, sink: BusSink, **kwargs: Any) -> IsolatedExecutionEngine:
    return IsolatedExecutionEngine(new_ctx("alice"), registry, sink, **kwargs)


async def test_run_emits_started_steps_and_one_completed_in_seq_order(
    registry: AgentRegistry, sink: BusSink
) -> None:
    engine = engine_for(registry, sink)
    outcome = await engine.run("work", {"canary": "c-1", "steps": 2})
    run_id = engine.context.run_id
    events = sink.wire(run_id)
    assert_run_well_formed(events)
    assert [e["type"] for e in events] == [
        "agent_started",
        *["agent_thinking", "tool_executing", "tool_completed", "agent_update"] * 2,
        "agent_completed",
    ]
    assert events[0]["data"] == {"agent": "work"}
    assert events[1]["data"] == {"text": "considering c-1", "step": 1, "total_steps": 2}
    assert events[2]["data"]["args"] == {"text": "c-1", "run": run_id, "hold": False}
    assert events[3]["data"]["result"] == {"text": "c-1"}
    assert events[4]["data"] == {"kind": "partial", "text": "c-1"}
    assert events[-1]["data"]["output"] == {"canary": "c-1", "steps": 2}
    assert events[-1]["data"]["duration_ms"] >= 0
    assert outcome.status is RunStatus.SUCCEEDED
    assert outcome.output == {"canary": "c-1", "steps": 2}
    assert engine.last_seq == len(events)
    assert [e.seq for e in engine.history] == list(range(1, len(events) + 1))


async def test_engine_runs_once(registry: AgentRegistry, sink: BusSink) -> None:
    engine = engine_for(registry, sink)
    await engine.run("work", {})
    with pytest.raises(IllegalTransition, match="expected created, got finished"):
        await engine.run("work", {})
    assert sink.types(engine.context.run_id).count("agent_started") == 1


async def test_no_event_after_terminal_and_started_must_come_first(
    registry: AgentRegistry, sink: BusSink
) -> None:
    fresh = engine_for(registry, sink)
    with pytest.raises(IllegalTransition, match="agent_started"):
        fresh.emit(EventType.AGENT_THINKING, {"text": "too early"})
    done = engine_for(registry, sink)
    await done.run("work", {})
    with pytest.raises(IllegalTransition, match="terminal"):
        done.emit(EventType.AGENT_THINKING, {"text": "too late"})
    assert sink.types(done.context.run_id)[-1] == "agent_completed"
    assert sink.types(fresh.context.run_id) == []


async def test_history_is_bounded(registry: AgentRegistry, sink: BusSink) -> None:
    engine = engine_for(registry, sink, history_limit=5)
    await engine.run("work", {"steps": 10})
    assert len(engine.history) == 5
    assert [e.seq for e in engine.history] == list(range(engine.last_seq - 4, engine.last_seq + 1))


@pytest.mark.parametrize(
    ("agent", "payload", "error_type"),
    [
        ("nope", {}, "unknown_agent"),
        ("work", {"steps": "many"}, "validation_error"),
        ("work", {"canary": "c-2", "fail": True}, "agent_failed"),
        ("hang", {}, "tool_error"),
    ],
)
async def test_failures_end_in_one_typed_agent_error(
    registry: AgentRegistry, sink: BusSink, agent: str, payload: Any, error_type: str
) -> None:
    engine = engine_for(registry, sink)
    outcome = await engine.run(agent, payload)
    events = sink.wire(engine.context.run_id)
    assert_run_well_formed(events)
    assert events[0]["type"] == "agent_started"
    assert events[-1]["type"] == "agent_error"
    assert events[-1]["data"]["error"]["type"] == error_type
    assert outcome.status is RunStatus.FAILED
    assert outcome.error == events[-1]["data"]["error"]


class Anything(BaseModel):
    secret_in_output: bool = False


class Fanout(BaseModel):
    calls: int = 5
    hold: bool = False


def special_registry(signals: Signals) -> AgentRegistry:
    registry = AgentRegistry()

    @registry.agent("leaky", input_model=Anything)
    async def leaky(ctx: RunContext, inp: Anything) -> dict[str, Any]:
        return {"api_key": "sk-123", "answer": 42}

    @registry.agent("crash", input_model=Anything)
    async def crash(ctx: RunContext, inp: Anything) -> None:
        raise KeyError("password=hunter2")

    @registry.agent("not_json", input_model=Anything)
    async def not_json(ctx: RunContext, inp: Anything) -> object:
        return object()

    @registry.agent("stubborn", input_model=Anything)
    async def stubborn(ctx: RunContext, inp: Anything) -> None:
        signals("agent", ctx.run_id).set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("translated the cancellation") from None

    @registry.agent("deadline", input_model=Anything)
    async def deadline(ctx: RunContext, inp: Anything) -> dict[str, Any]:
        remaining = ctx.remaining_s()
        return {"has_deadline": ctx.deadline is not None, "remaining": remaining}

    @registry.agent("fanout", input_model=Fanout)
    async def fanout(ctx: RunContext, inp: Fanout) -> list[Any]:
        async def one(i: int) -> Any:
            if inp.hold:
                return await ctx.tools.call("block", run=f"{ctx.run_id}-{i}")
            return await ctx.tools.call("jitter_echo", i=i)

        return await asyncio.gather(*(one(i) for i in range(inp.calls)))

    @registry.tool()
    async def block(run: str) -> None:
        signals("tool", run).set()
        await asyncio.Event().wait()

    @registry.tool()
    async def jitter_echo(i: int) -> int:
        await asyncio.sleep((2 - i % 3) / 1000)  # workload: later calls finish first
        return i

    registry.freeze()
    return registry


async def test_agent_output_is_redacted(signals: Signals, sink: BusSink) -> None:
    engine = engine_for(special_registry(signals), sink)
    outcome = await engine.run("leaky", {})
    assert outcome.output == {"api_key": REDACTED, "answer": 42}
    assert sink.wire(engine.context.run_id)[-1]["data"]["output"] == outcome.output


async def test_unhandled_agent_exception_ends_in_redacted_agent_error(
    signals: Signals, sink: BusSink
) -> None:
    engine = engine_for(special_registry(signals), sink)
    outcome = await engine.run("crash", {})
    assert outcome.status is RunStatus.FAILED
    assert outcome.error is not None
    assert outcome.error["type"] == "agent_error"
    assert "KeyError" in outcome.error["message"]
    assert "hunter2" not in repr(sink.wire(engine.context.run_id))


async def test_non_json_output_ends_in_invalid_output(signals: Signals, sink: BusSink) -> None:
    engine = engine_for(special_registry(signals), sink)
    outcome = await engine.run("not_json", {})
    assert outcome.error is not None
    assert outcome.error["type"] == "invalid_output"
    assert_run_well_formed(sink.wire(engine.context.run_id))


async def test_agent_sees_its_deadline(signals: Signals, sink: BusSink) -> None:
    engine = engine_for(special_registry(signals), sink, timeout_s=30)
    outcome = await engine.run("deadline", {})
    assert outcome.output["has_deadline"] is True
    assert 0 < outcome.output["remaining"] <= 30


# --- timeouts and cancellation ----------------------------------------------------------------


async def test_hanging_tool_ends_in_tool_completed_timeout(
    registry: AgentRegistry, sink: BusSink
) -> None:
    engine = engine_for(registry, sink)
    await engine.run("hang", {})
    events = sink.wire(engine.context.run_id)
    assert_run_well_formed(events)
    completed = [e for e in events if e["type"] == "tool_completed"]
    assert len(completed) == 1
    assert completed[0]["data"]["tool"] == "hang"
    assert completed[0]["data"]["status"] == "timeout"
    assert completed[0]["data"]["error"]["type"] == "timeout"


async def test_run_past_its_deadline_ends_in_timeout_and_closes_open_tool(
    registry: AgentRegistry, sink: BusSink
) -> None:
    factory = ExecutionEngineFactory(registry, Limits(run_timeout_s=0.25, tool_timeout_s=60))
    ctx = new_ctx("alice")
    outcome = await run_to_end(factory, sink, ctx, "work", {"hold_tool": True})
    events = sink.wire(ctx.run_id)
    assert_run_well_formed(events)
    assert [e["type"] for e in events] == [
        "agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_error",
    ]  # fmt: skip
    assert events[3]["data"]["status"] == "error"
    assert events[-1]["data"]["error"]["type"] == "timeout"
    assert outcome.status is RunStatus.TIMED_OUT
    assert outcome.error is not None
    assert outcome.error["type"] == "timeout"


async def test_cancel_mid_tool_completes_the_tool_then_cancels_the_run(
    registry: AgentRegistry, sink: BusSink, signals: Signals, factory: ExecutionEngineFactory
) -> None:
    ctx = new_ctx("alice")
    task = asyncio.create_task(run_to_end(factory, sink, ctx, "work", {"hold_tool": True}))
    await asyncio.wait_for(signals("tool", ctx.run_id).wait(), WAIT_S)
    assert factory.cancel("alice", ctx.run_id, reason="changed my mind")
    assert factory.cancel("alice", ctx.run_id)  # idempotent
    outcome = await asyncio.wait_for(task, WAIT_S)
    events = sink.wire(ctx.run_id)
    assert_run_well_formed(events)
    assert [e["type"] for e in events][-3:] == [
        "tool_executing", "tool_completed", "agent_cancelled",
    ]  # fmt: skip
    assert events[-2]["data"]["status"] == "error"
    assert events[-1]["data"] == {"reason": "changed my mind"}
    assert outcome.status is RunStatus.CANCELLED
    assert not factory.is_active("alice", ctx.run_id)


async def test_cancel_while_queued_emits_only_agent_cancelled_with_seq_1(
    registry: AgentRegistry, sink: BusSink, signals: Signals
) -> None:
    factory = ExecutionEngineFactory(registry, Limits(max_running_per_user=1))
    first, queued = new_ctx("alice"), new_ctx("alice")
    first_task = asyncio.create_task(run_to_end(factory, sink, first, "wait", {}))
    await asyncio.wait_for(signals("agent", first.run_id).wait(), WAIT_S)
    lease = factory.engine_for(queued, sink)
    assert factory.queued_count("alice") == 1
    queued_task = asyncio.create_task(enter_and_run(lease, "work", {}))
    assert factory.running_count("alice") == 1  # the queued run holds no slot

    assert factory.cancel("alice", queued.run_id)
    assert factory.queued_count("alice") == 0
    outcome = await asyncio.wait_for(queued_task, WAIT_S)
    assert outcome.status is RunStatus.CANCELLED
    events = sink.wire(queued.run_id)
    assert [(e["type"], e["seq"]) for e in events] == [("agent_cancelled", 1)]
    assert not signals("agent", queued.run_id).is_set()

    signals("release", first.run_id).set()
    assert (await asyncio.wait_for(first_task, WAIT_S)).status is RunStatus.SUCCEEDED
    assert factory.user_count() == 0


async def test_cancel_by_another_user_is_refused_and_the_run_continues(
    sink: BusSink, signals: Signals, factory: ExecutionEngineFactory
) -> None:
    ctx = new_ctx("alice")
    task = asyncio.create_task(run_to_end(factory, sink, ctx, "wait", {}))
    await asyncio.wait_for(signals("agent", ctx.run_id).wait(), WAIT_S)
    assert factory.cancel("mallory", ctx.run_id) is False
    assert factory.is_active("alice", ctx.run_id)
    signals("release", ctx.run_id).set()
    outcome = await asyncio.wait_for(task, WAIT_S)
    assert outcome.status is RunStatus.SUCCEEDED
    assert sink.types(ctx.run_id) == ["agent_started", "agent_completed"]


async def test_cancel_of_unknown_or_finished_run_returns_false(
    sink: BusSink, factory: ExecutionEngineFactory
) -> None:
    ctx = new_ctx("alice")
    await run_to_end(factory, sink, ctx, "work", {})
    assert factory.cancel("alice", ctx.run_id) is False
    assert factory.cancel("alice", "run_never_existed") is False
    assert sink.types(ctx.run_id)[-1] == "agent_completed"


async def test_engine_cancelled_before_run_emits_only_agent_cancelled(
    registry: AgentRegistry, sink: BusSink
) -> None:
    engine = engine_for(registry, sink)
    engine.cancel("no longer needed")
    outcome = await engine.run("work", {})
    assert outcome.status is RunStatus.CANCELLED
    events = sink.wire(engine.context.run_id)
    assert [(e["type"], e["seq"]) for e in events] == [("agent_cancelled", 1)]
    assert events[0]["data"] == {"reason": "no longer needed"}


async def test_agent_that_translates_cancellation_still_ends_cancelled(
    signals: Signals, sink: BusSink
) -> None:
    engine = engine_for(special_registry(signals), sink)
    task = asyncio.create_task(engine.run("stubborn", {}))
    await asyncio.wait_for(signals("agent", engine.context.run_id).wait(), WAIT_S)
    engine.cancel()
    outcome = await asyncio.wait_for(task, WAIT_S)
    assert outcome.status is RunStatus.CANCELLED
    assert sink.types(engine.context.run_id) == ["agent_started", "agent_cancelled"]


async def test_cancelling_the_task_running_the_engine_ends_in_interrupted(
    registry: AgentRegistry, sink: BusSink, signals: Signals
) -> None:
    """Shutdown: the run's own task is cancelled; the run still gets its terminal event."""
    engine = engine_for(registry, sink)
    run_id = engine.context.run_id
    task = asyncio.create_task(engine.run("work", {"hold_tool": True}))
    await asyncio.wait_for(signals("tool", run_id).wait(), WAIT_S)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT_S)
    events = sink.wire(run_id)
    assert_run_well_formed(events)
    assert events[-2]["type"] == "tool_completed"
    assert events[-1]["type"] == "agent_error"
    assert events[-1]["data"]["error"]["type"] == "interrupted"


async def test_concurrent_tool_calls_of_one_agent_keep_seq_order_and_pairs(
    signals: Signals, sink: BusSink, connect: Connect
) -> None:
    _, transport = await connect("alice")
    engine = engine_for(special_registry(signals), sink)
    outcome = await engine.run("fanout", {"calls": 6})
    assert outcome.output == [0, 1, 2, 3, 4, 5]
    events = sink.wire(engine.context.run_id)
    assert_run_well_formed(events)
    started = [e["data"]["call_id"] for e in events if e["type"] == "tool_executing"]
    finished = [e["data"]["call_id"] for e in events if e["type"] == "tool_completed"]
    assert sorted(started) == sorted(finished)
    assert started != finished  # the calls really overlapped
    await transport.wait_for_frames(len(events))
    assert transport.decoded() == events  # delivered in seq order


async def test_cancel_with_concurrent_tool_calls_completes_every_open_call(
    signals: Signals, sink: BusSink
) -> None:
    engine = engine_for(special_registry(signals), sink)
    run_id = engine.context.run_id
    task = asyncio.create_task(engine.run("fanout", {"calls": 4, "hold": True}))
    for i in range(4):
        await asyncio.wait_for(signals("tool", f"{run_id}-{i}").wait(), WAIT_S)
    engine.cancel("stop")
    outcome = await asyncio.wait_for(task, WAIT_S)
    assert outcome.status is RunStatus.CANCELLED
    events = sink.wire(run_id)
    assert_run_well_formed(events)
    types = [e["type"] for e in events]
    assert types == ["agent_started", *["tool_executing"] * 4, *["tool_completed"] * 4,
                     "agent_cancelled"]  # fmt: skip
    assert {e["data"]["status"] for e in events if e["type"] == "tool_completed"} == {"error"}
