"""ctx.ask, the pausable deadline and thread state, in the core: an engine with its in-memory
input gate, no server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest
from pydantic import BaseModel

from corral import (
    AgentRegistry,
    Event,
    EventType,
    InputTimeout,
    IsolatedExecutionEngine,
    RunContext,
    RunStatus,
)
from corral.core.asking import LocalInputGate, answer_problems, json_schema_of
from corral.core.deadline import RunDeadline
from corral.core.events import REDACTED, loads
from corral.errors import Conflict, InvalidRequest

from .conftest import WAIT_S, assert_run_well_formed, new_ctx

SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer", "minimum": 1}, "tags": {"type": "array"}},
    "required": ["n"],
}


class Pick(BaseModel):
    colour: str
    sure: bool = False


class Opts(BaseModel):
    """Every test agent's input (a field per knob; the tests set what they need)."""

    prompt: Any = "Which?"
    answer_schema: Any = None
    model: bool = False
    timeout_s: Any = None
    catch: bool = False
    new: Any = None
    fail: bool = False


class Recorder:
    """A sink that keeps every event and wakes waiters on each."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.changed = asyncio.Event()

    def emit(self, event: Event) -> Awaitable[None]:
        self.events.append(event)
        self.changed.set()
        return asyncio.sleep(0)

    async def wait_for(self, type_: EventType) -> Event:
        async with asyncio.timeout(WAIT_S):
            while True:
                found = [e for e in self.events if e.type is type_]
                if found:
                    return found[-1]
                self.changed.clear()
                await self.changed.wait()

    def wire(self) -> list[dict[str, Any]]:
        return [loads(e.to_json()) for e in self.events]


def make_registry() -> AgentRegistry:
    registry = AgentRegistry()

    @registry.agent("ask", input_model=Opts)
    async def ask(ctx: RunContext, input: Opts) -> Any:
        schema = Pick if input.model else input.answer_schema
        try:
            value = await ctx.ask(input.prompt, schema, input.timeout_s)
        except InputTimeout:
            if input.catch:
                return {"timed_out": True, "remaining": ctx.remaining_s()}
            raise
        if isinstance(value, BaseModel):
            return {"type": type(value).__name__, **value.model_dump()}
        return {"value": value}

    @registry.agent("ask_secret", input_model=Opts)
    async def ask_secret(ctx: RunContext, input: Opts) -> Any:
        value = await ctx.ask("Your password?")
        return {"agent_saw_it": value == {"password": "hunter2", "user": "al"}}

    @registry.agent("ask_twice_at_once", input_model=Opts)
    async def ask_twice(ctx: RunContext, input: Opts) -> Any:
        await asyncio.gather(ctx.ask("one?"), ctx.ask("two?"))

    @registry.agent("state", input_model=Opts)
    async def state(ctx: RunContext, input: Opts) -> Any:
        seen = dict(ctx.state)
        ctx.set_state(input.new)
        if input.fail:
            raise RuntimeError("after set_state")
        return {"seen": seen, "now": ctx.state}

    return registry


def engine(sink: Recorder, **kwargs: Any) -> IsolatedExecutionEngine:
    return IsolatedExecutionEngine(new_ctx("alice"), make_registry(), sink, **kwargs)


async def open_request(engine: IsolatedExecutionEngine, sink: Recorder) -> str:
    asked = await sink.wait_for(EventType.INPUT_REQUESTED)
    return str(asked.data["request_id"])


# -- asking -----------------------------------------------------------------------------------


async def test_ask_emits_the_question_waits_and_goes_on_with_the_answer() -> None:
    """input_requested {request_id, prompt, schema}; the answer becomes input_received and
    the agent's return value."""
    sink = Recorder()
    eng = engine(sink)
    run = asyncio.create_task(eng.run("ask", {"answer_schema": SCHEMA, "prompt": "How many?"}))
    request_id = await open_request(eng, sink)
    assert isinstance(eng.input_gate, LocalInputGate)
    eng.input_gate.answer(request_id, {"n": 3})
    outcome = await asyncio.wait_for(run, WAIT_S)
    assert outcome.status is RunStatus.SUCCEEDED
    assert outcome.output == {"value": {"n": 3}}
    events = sink.wire()
    assert_run_well_formed(events)
    assert [e["type"] for e in events] == [
        "agent_started",
        "input_requested",
        "input_received",
        "agent_completed",
    ]
    assert events[1]["data"] == {"request_id": request_id, "prompt": "How many?", "schema": SCHEMA}
    assert events[2]["data"] == {"request_id": request_id, "value": {"n": 3}}


async def test_a_model_schema_is_sent_as_json_schema_and_answers_become_instances() -> None:
    sink = Recorder()
    eng = engine(sink)
    run = asyncio.create_task(eng.run("ask", {"model": True}))
    request_id = await open_request(eng, sink)
    sent = sink.events[-1].data["schema"]
    assert sent == Pick.model_json_schema()
    assert isinstance(eng.input_gate, LocalInputGate)
    eng.input_gate.answer(request_id, {"colour": "teal", "sure": True})
    outcome = await asyncio.wait_for(run, WAIT_S)
    assert outcome.output == {"type": "Pick", "colour": "teal", "sure": True}


async def test_the_local_gate_refuses_other_request_ids_and_values_that_fail_the_schema() -> None:
    """Conflict for a request id that is not open; InvalidRequest with details for a bad
    value; the question stays open and a good answer still completes the run."""
    sink = Recorder()
    eng = engine(sink)
    run = asyncio.create_task(eng.run("ask", {"answer_schema": SCHEMA}))
    request_id = await open_request(eng, sink)
    gate = eng.input_gate
    assert isinstance(gate, LocalInputGate)
    with pytest.raises(Conflict):
        gate.answer("input_other", {"n": 1})
    with pytest.raises(InvalidRequest) as bad:
        gate.answer(request_id, {"n": 0, "tags": "x"})
    assert bad.value.details is not None
    assert {(d["field"], d["type"]) for d in bad.value.details} == {
        ("value.n", "minimum"),
        ("value.tags", "type"),
    }
    assert [r.request_id for r in gate.open_requests] == [request_id]
    gate.answer(request_id, {"n": 1})
    assert (await asyncio.wait_for(run, WAIT_S)).output == {"value": {"n": 1}}
    assert gate.open_requests == []


async def test_an_answer_is_redacted_in_the_event_but_reaches_the_agent_unchanged() -> None:
    sink = Recorder()
    eng = engine(sink)
    run = asyncio.create_task(eng.run("ask_secret", {}))
    request_id = await open_request(eng, sink)
    assert isinstance(eng.input_gate, LocalInputGate)
    eng.input_gate.answer(request_id, {"password": "hunter2", "user": "al"})
    outcome = await asyncio.wait_for(run, WAIT_S)
    assert outcome.output == {"agent_saw_it": True}
    received = next(e for e in sink.events if e.type is EventType.INPUT_RECEIVED)
    assert received.data["value"] == {"password": REDACTED, "user": "al"}
    assert b"hunter2" not in b"".join(e.to_json() for e in sink.events)


async def test_no_answer_in_time_raises_input_timeout() -> None:
    """Uncaught: agent_error of type input_timeout (status failed). Caught: the run goes on."""
    sink = Recorder()
    outcome = await asyncio.wait_for(engine(sink).run("ask", {"timeout_s": 0.05}), WAIT_S)
    assert outcome.status is RunStatus.FAILED
    assert outcome.error is not None
    assert outcome.error["type"] == "input_timeout"
    assert [e.type.value for e in sink.events][-2:] == ["input_requested", "agent_error"]
    caught = Recorder()
    outcome = await engine(caught).run("ask", {"timeout_s": 0.05, "catch": True})
    assert outcome.status is RunStatus.SUCCEEDED
    assert outcome.output["timed_out"] is True


async def test_waiting_for_an_answer_does_not_count_toward_the_run_timeout() -> None:
    """A run with a 0.2 s timeout answered after 0.4 s succeeds; its deadline moved later by
    the time it waited."""
    sink = Recorder()
    eng = engine(sink, timeout_s=0.2)
    run = asyncio.create_task(eng.run("ask", {}))
    request_id = await open_request(eng, sink)
    before = eng.deadline
    assert before is not None
    await asyncio.sleep(0.4)  # the scenario: a user slower than the run's timeout
    assert eng.deadline is not None
    assert eng.deadline >= before + 0.35
    assert isinstance(eng.input_gate, LocalInputGate)
    eng.input_gate.answer(request_id, "ok")
    outcome = await asyncio.wait_for(run, WAIT_S)
    assert outcome.status is RunStatus.SUCCEEDED


async def test_the_run_timeout_still_applies_outside_the_wait() -> None:
    """A caught InputTimeout does not stop the clock: the rest of the run is timed."""
    registry = make_registry()

    @registry.agent("ask_then_hang", input_model=Opts)
    async def ask_then_hang(ctx: RunContext, input: Opts) -> None:
        with pytest.raises(InputTimeout):
            await ctx.ask("?", timeout_s=0.3)
        await asyncio.sleep(10)

    sink = Recorder()
    eng = IsolatedExecutionEngine(new_ctx("alice"), registry, sink, timeout_s=0.2)
    outcome = await asyncio.wait_for(eng.run("ask_then_hang", {}), WAIT_S)
    assert outcome.status is RunStatus.TIMED_OUT


async def test_cancelling_a_waiting_run_ends_it_cancelled_at_once() -> None:
    sink = Recorder()
    eng = engine(sink)
    run = asyncio.create_task(eng.run("ask", {}))
    await open_request(eng, sink)
    eng.cancel("changed my mind")
    outcome = await asyncio.wait_for(run, WAIT_S)
    assert outcome.status is RunStatus.CANCELLED
    assert sink.events[-1].data == {"reason": "changed my mind"}
    assert isinstance(eng.input_gate, LocalInputGate)
    assert eng.input_gate.open_requests == []


async def test_one_question_at_a_time() -> None:
    sink = Recorder()
    outcome = await asyncio.wait_for(engine(sink).run("ask_twice_at_once", {}), WAIT_S)
    assert outcome.status is RunStatus.FAILED
    assert outcome.error is not None
    assert "one open question at a time" in outcome.error["message"]


@pytest.mark.parametrize(
    ("input", "fragment"),
    [
        ({"prompt": "  "}, "prompt must be text"),
        ({"answer_schema": {"type": "not-a-type"}}, "not a valid JSON Schema"),
        ({"answer_schema": ["a", "list"]}, "schema must be a JSON Schema"),
        ({"timeout_s": 0}, "timeout_s must be a positive number"),
    ],
)
async def test_a_bad_question_fails_in_the_agent_not_at_its_user(
    input: dict[str, Any], fragment: str
) -> None:
    sink = Recorder()
    outcome = await asyncio.wait_for(engine(sink).run("ask", input), WAIT_S)
    assert outcome.status is RunStatus.FAILED
    assert outcome.error is not None
    assert fragment in outcome.error["message"]
    assert EventType.INPUT_REQUESTED not in {e.type for e in sink.events}


def test_schema_helpers() -> None:
    """json_schema_of accepts dicts, models and None; answer_problems names paths."""
    assert json_schema_of(None) is None
    assert json_schema_of(SCHEMA) == SCHEMA
    assert json_schema_of(Pick)["required"] == ["colour"]
    assert answer_problems(None, {"anything": 1}) == []
    assert answer_problems(SCHEMA, {"n": 2}) == []
    problems = answer_problems({"type": "array", "items": {"type": "string"}}, ["a", 2])
    assert problems == [
        {"field": "value.1", "message": "2 is not of type 'string'", "type": "type"}
    ]
    unresolvable = {"$ref": "#/$defs/missing"}
    assert answer_problems(unresolvable, 1)[0]["type"] == "schema"


# -- the deadline -----------------------------------------------------------------------------


async def test_run_deadline_pauses_and_moves_later_by_the_pause() -> None:
    deadline = RunDeadline()
    deadline.start(0.2)
    first = deadline.deadline
    assert first is not None
    deadline.pause()
    hung = asyncio.get_running_loop().create_future()
    waiter = asyncio.create_task(deadline.wait(hung))
    await asyncio.sleep(0.3)  # longer than the timeout, while paused
    assert not waiter.done()
    deadline.resume()
    assert deadline.deadline is not None
    assert deadline.deadline >= first + 0.25
    assert await asyncio.wait_for(waiter, WAIT_S) is False  # then it does time out
    done = asyncio.get_running_loop().create_future()
    done.set_result(None)
    assert await deadline.wait(done) is True
    unbounded = RunDeadline()
    unbounded.start(None)
    assert unbounded.deadline is None


# -- thread state -----------------------------------------------------------------------------


async def test_set_state_rides_on_agent_completed_only() -> None:
    """The new state is carried by agent_completed (never serialized); a failed run carries
    none; a state that is not an object or over 1 MiB is refused in the agent."""
    sink = Recorder()
    outcome = await engine(sink).run("state", {"new": {"k": [1, 2]}})
    assert outcome.output == {"seen": {}, "now": {"k": [1, 2]}}
    completed = sink.events[-1]
    assert completed.type is EventType.AGENT_COMPLETED
    assert completed.thread_state == b'{"k":[1,2]}'
    assert b"thread_state" not in completed.to_json()

    failed = Recorder()
    await engine(failed).run("state", {"new": {"k": 1}, "fail": True})
    assert all(e.thread_state is None for e in failed.events)

    for bad, error in (
        (["a"], "JSON object"),
        ({"blob": "x" * (1024 * 1024)}, "1 MiB"),
    ):
        refused = Recorder()
        outcome = await engine(refused).run("state", {"new": bad})
        assert outcome.status is RunStatus.FAILED
        assert outcome.error is not None
        assert error in outcome.error["message"]


async def test_thread_history_without_thread_memory_is_empty_and_checks_its_limit() -> None:
    registry = AgentRegistry()

    @registry.agent("hist", input_model=Opts)
    async def hist(ctx: RunContext, input: Opts) -> Any:
        with pytest.raises(ValueError, match="limit"):
            await ctx.thread_history(0)
        with pytest.raises(ValueError, match="limit"):
            await ctx.thread_history(True)
        return await ctx.thread_history(5)

    outcome = await IsolatedExecutionEngine(new_ctx("alice"), registry, Recorder()).run("hist", {})
    assert outcome.output == []
