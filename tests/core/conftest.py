"""Real core objects for the pure core tests, and the few in-test seams they need.

Nothing here imitates a corral component: the bus, pool, bridge, connections, engines and
factory are the real ones. What the tests supply are the seams the core leaves open — a
transport (``send``/``close``), an event sink, and agents and tools registered per test.
Waiting is always on an event or a condition, never on the clock.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import pytest
from pydantic import BaseModel

from corral import (
    AgentFailed,
    AgentRegistry,
    Connection,
    Event,
    ExecutionEngineFactory,
    InProcessEventBus,
    RunContext,
    RunOutcome,
    UserExecutionContext,
    WebSocketBridgeFactory,
    WebSocketConnectionPool,
)
from corral.core.context import new_id
from corral.core.events import loads
from corral.core.factory import EngineLease

WAIT_S = 10.0  # upper bound for anything a test waits on; hitting it is a failure
TERMINAL = frozenset({"agent_completed", "agent_error", "agent_cancelled"})


# --- small helpers ----------------------------------------------------------------------------


def new_ctx(user_id: str, thread_id: str | None = None) -> UserExecutionContext:
    """A fresh context with server-style unguessable thread and run ids."""
    return UserExecutionContext(
        user_id=user_id, thread_id=thread_id or new_id("thr"), run_id=new_id("run")
    )


async def wait_until(
    predicate: Callable[[], bool], changed: asyncio.Event, within_s: float = WAIT_S
) -> None:
    """Wait until ``predicate()`` holds, re-checking each time ``changed`` is set."""
    async with asyncio.timeout(within_s):
        while not predicate():
            changed.clear()
            await changed.wait()


async def run_to_end(
    factory: ExecutionEngineFactory,
    sink: Any,
    ctx: UserExecutionContext,
    agent: str,
    payload: Any,
    **kwargs: Any,
) -> RunOutcome:
    """What a server does with one run: wait for admission, run, release the slot."""
    async with factory.engine_for(ctx, sink, **kwargs) as engine:
        return await engine.run(agent, payload)


async def enter_and_run(lease: EngineLease, agent: str, payload: Any) -> RunOutcome:
    """Run a run whose place was already reserved with ``factory.engine_for``."""
    async with lease as engine:
        return await engine.run(agent, payload)


def assert_run_well_formed(events: Sequence[Mapping[str, Any]]) -> None:
    """Contract §4 for one run: seq 1..n, agent_started first, one terminal last, tools paired.

    A run that never started (cancelled while queued) has its terminal event as its only one.
    """
    assert events, "the run has no events"
    assert len({e["run_id"] for e in events}) == 1, "events of several runs mixed together"
    assert len({e["thread_id"] for e in events}) == 1
    types = [e["type"] for e in events]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), types
    assert [i for i, t in enumerate(types) if t in TERMINAL] == [len(types) - 1], types
    if len(events) > 1:
        assert types[0] == "agent_started", types
    open_calls: dict[str, str] = {}
    seen_calls: set[str] = set()
    for event in events:
        data = event["data"]
        if event["type"] == "tool_executing":
            assert data["call_id"] not in seen_calls, f"call id reused: {types}"
            seen_calls.add(data["call_id"])
            open_calls[data["call_id"]] = data["tool"]
        elif event["type"] == "tool_completed":
            assert open_calls.pop(data["call_id"]) == data["tool"], types
            assert data["status"] in ("success", "error", "timeout")
            assert isinstance(data["duration_ms"], int | float)
    assert not open_calls, f"tool_executing without tool_completed: {open_calls}"


# --- seams: sink and transports ---------------------------------------------------------------


class BusSink:
    """The event sink of these tests: keeps each event (the "store"), then publishes it.

    EventSink contract (engine.py): the event is accepted — appended to its run's log, which
    fixes its place — synchronously inside ``emit``, before any suspension point. The returned
    coroutine publishes; the in-process bus delivers without suspending, so a caller that is
    cancelled while awaiting it loses nothing. ``keep=False`` only counts (memory tests).
    """

    def __init__(self, bus: InProcessEventBus, *, keep: bool = True) -> None:
        self.bus = bus
        self.keep = keep
        self.accepted = 0
        self.runs: dict[str, list[Event]] = {}

    def emit(self, event: Event) -> Awaitable[None]:
        self.accepted += 1
        if self.keep:
            self.runs.setdefault(event.run_id, []).append(event)
        return self.bus.publish([(event, event.to_json())])

    def wire(self, run_id: str) -> list[dict[str, Any]]:
        """The run's stored events as a client decodes them."""
        return [loads(e.to_json()) for e in self.runs.get(run_id, [])]

    def types(self, run_id: str) -> list[str]:
        return [e.type.value for e in self.runs.get(run_id, [])]


class RecordingTransport:
    """Keeps every frame it is sent; lets a test wait for a number of frames."""

    def __init__(self, *, keep: bool = True) -> None:
        self.keep = keep
        self.frames: list[bytes] = []
        self.frame_count = 0
        self.close_code: int | None = None
        self.close_reason = ""
        self.changed = asyncio.Event()

    async def send(self, data: bytes) -> None:
        if self.keep:
            self.frames.append(data)
        self.frame_count += 1
        self.changed.set()
        await asyncio.sleep(0)  # a socket write gives the loop a turn; so does this one

    async def close(self, code: int, reason: str) -> None:
        self.close_code = code
        self.close_reason = reason
        self.changed.set()

    def decoded(self) -> list[dict[str, Any]]:
        return [loads(frame) for frame in self.frames]

    async def wait_for_frames(self, count: int, within_s: float = WAIT_S) -> None:
        await wait_until(lambda: self.frame_count >= count, self.changed, within_s)


class NeverReadsTransport:
    """A peer that never reads: ``send`` blocks forever on an event nobody sets."""

    def __init__(self) -> None:
        self._never = asyncio.Event()
        self.sends_started = 0
        self.close_code: int | None = None
        self.closed = asyncio.Event()

    async def send(self, data: bytes) -> None:
        self.sends_started += 1
        await self._never.wait()

    async def close(self, code: int, reason: str) -> None:
        self.close_code = code
        self.closed.set()


class Signals:
    """asyncio.Events by name, made on first use: "the agent of run R has started", etc."""

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], asyncio.Event] = {}

    def __call__(self, name: str, key: str) -> asyncio.Event:
        return self._events.setdefault((name, key), asyncio.Event())


# --- a registry of test agents ----------------------------------------------------------------


class WorkInput(BaseModel):
    canary: str = ""
    steps: int = 1
    jitter_ms: float = 0.0
    hold_tool: bool = False  # the echo tool waits for signals("release", run_id)
    fail: bool = False


class EmptyInput(BaseModel):
    pass


def build_registry(signals: Signals, rng: random.Random) -> AgentRegistry:
    """Agents and tools the core tests share; frozen, as an app would have it.

    ``work``: per step — think (text has the canary), call ``echo`` (args and result carry the
    canary), emit an update — then return the canary. ``wait``: waits for its release signal.
    ``hang``: calls the ``hang`` tool, which never returns and has a 50 ms timeout.
    """
    registry = AgentRegistry()

    async def jitter(ms: float) -> None:
        if ms:
            await asyncio.sleep(rng.uniform(0, ms) / 1000)  # workload, not synchronisation

    @registry.tool(description="Return the text; optionally wait until released.")
    async def echo(text: str, run: str = "", hold: bool = False) -> dict[str, str]:
        signals("tool", run).set()
        if hold:
            await signals("release", run).wait()
        return {"text": text}

    @registry.tool("hang", timeout_s=0.05)
    async def hang_tool(run: str = "") -> None:
        signals("tool", run).set()
        await asyncio.Event().wait()

    @registry.agent("work", input_model=WorkInput, description="Think, echo, update.")
    async def work(ctx: RunContext, inp: WorkInput) -> dict[str, Any]:
        signals("agent", ctx.run_id).set()
        for step in range(1, inp.steps + 1):
            await ctx.think(f"considering {inp.canary}", step=step, total_steps=inp.steps)
            await jitter(inp.jitter_ms)
            result = await ctx.tools.call(
                "echo", text=inp.canary, run=ctx.run_id, hold=inp.hold_tool
            )
            await ctx.update("partial", text=result["text"])
            await jitter(inp.jitter_ms)
        if inp.fail:
            raise AgentFailed(f"gave up on {inp.canary}")
        return {"canary": inp.canary, "steps": inp.steps}

    @registry.agent("wait", input_model=EmptyInput)
    async def wait(ctx: RunContext, inp: EmptyInput) -> str:
        signals("agent", ctx.run_id).set()
        await signals("release", ctx.run_id).wait()
        return "released"

    @registry.agent("hang", input_model=EmptyInput)
    async def hang(ctx: RunContext, inp: EmptyInput) -> str:
        signals("agent", ctx.run_id).set()
        await ctx.tools.call("hang", run=ctx.run_id)
        return "unreachable"

    registry.freeze()
    return registry


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Fail a test when any task dies with an exception nobody retrieved."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield errors
    loop.set_exception_handler(previous)
    assert not errors, f"unhandled errors in the event loop: {errors}"


@pytest.fixture
def rng() -> random.Random:
    return random.Random(20261127)


@pytest.fixture
def signals() -> Signals:
    return Signals()


@pytest.fixture
def registry(signals: Signals, rng: random.Random) -> AgentRegistry:
    return build_registry(signals, rng)


@pytest.fixture
async def bus() -> AsyncIterator[InProcessEventBus]:
    bus = InProcessEventBus()
    yield bus
    await bus.close()


@pytest.fixture
def sink(bus: InProcessEventBus) -> BusSink:
    return BusSink(bus)


@pytest.fixture
def factory(registry: AgentRegistry) -> ExecutionEngineFactory:
    return ExecutionEngineFactory(registry)


@pytest.fixture
def violations() -> list[Event]:
    return []


@pytest.fixture
def pool() -> WebSocketConnectionPool:
    return WebSocketConnectionPool(max_per_user=10)


@pytest.fixture
def bridge(
    pool: WebSocketConnectionPool, bus: InProcessEventBus, violations: list[Event]
) -> WebSocketBridgeFactory:
    return WebSocketBridgeFactory(pool, bus, on_violation=violations.append)


Connect = Callable[..., Awaitable[tuple[Connection, Any]]]


@pytest.fixture
async def connect(bridge: WebSocketBridgeFactory) -> AsyncIterator[Connect]:
    """Open a started, attached connection for a user; everything is detached and closed after."""
    made: list[Connection] = []

    async def _connect(
        user_id: str, transport: Any = None, **kwargs: Any
    ) -> tuple[Connection, Any]:
        transport = transport if transport is not None else RecordingTransport()
        conn = Connection(user_id, transport, **kwargs)
        conn.start()
        made.append(conn)
        await bridge.attach(conn)
        return conn, transport

    yield _connect
    for conn in made:
        await bridge.detach(conn)
        await conn.close()
