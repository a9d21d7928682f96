"""ExecutionEngineFactory: one fresh engine per run, admission limits, fairness, races."""

from __future__ import annotations

import asyncio
import enum
import itertools
import random
import types
from collections import Counter
from datetime import datetime
from typing import Any

import pytest
from pydantic import BaseModel

from corral import (
    AgentRegistry,
    ExecutionEngineFactory,
    IsolatedExecutionEngine,
    Limits,
    RunContext,
    RunStatus,
)
from corral.core.factory import EngineLease
from corral.errors import AdmissionError, QueueFullError

from .conftest import (
    WAIT_S,
    BusSink,
    Connect,
    Signals,
    assert_run_well_formed,
    enter_and_run,
    new_ctx,
    run_to_end,
    wait_until,
)

# --- factory uniqueness -----------------------------------------------------------------------

# Leaves that are immutable (or code) and so may be shared without sharing state.
_IMMUTABLE_LEAVES = (
    str, bytes, int, float, complex, bool, type(None), enum.Enum, datetime, type,
    types.FunctionType, types.BuiltinFunctionType, types.ModuleType,
)  # fmt: skip
# Immutable containers: not state themselves, but what they hold is walked.
_IMMUTABLE_CONTAINERS = (tuple, frozenset, types.MappingProxyType)


def reachable_state(root: object, allowed: set[int], depth: int) -> dict[int, str]:
    """ids of the mutable objects reachable from ``root`` within ``depth`` hops, with paths.

    Walks attributes (``__dict__`` and ``__slots__``), dict keys and values, and the items of
    lists, sets, deques and tuples; a bound method is followed to its ``__self__``. Objects in
    ``allowed`` are neither recorded nor entered.
    """
    found: dict[int, str] = {}

    def children(obj: object) -> list[tuple[str, object]]:
        if isinstance(obj, dict | types.MappingProxyType):
            return [(f"[{k!r}]", v) for k, v in obj.items()] + [("<key>", k) for k in obj]
        if isinstance(obj, list | tuple | set | frozenset) or type(obj).__name__ == "deque":
            return [(f"[{i}]", v) for i, v in enumerate(obj)]
        attrs: list[tuple[str, object]] = [
            (f".{k}", v) for k, v in getattr(obj, "__dict__", {}).items()
        ]
        for cls in type(obj).__mro__:
            for slot in getattr(cls, "__slots__", ()):
                if hasattr(obj, slot):
                    attrs.append((f".{slot}", getattr(obj, slot)))
        return attrs

    def walk(obj: object, path: str, level: int) -> None:
        if id(obj) in allowed or isinstance(obj, _IMMUTABLE_LEAVES):
            return
        if isinstance(obj, types.MethodType):
            walk(obj.__self__, f"{path}.__self__", level)
            return
        if id(obj) in found:
            return
        if not isinstance(obj, _IMMUTABLE_CONTAINERS):
            found[id(obj)] = path
        if level < depth:
            for name, child in children(obj):
                walk(child, path + name, level + 1)

    walk(root, "engine", 0)
    return found


def assert_no_shared_state(
    engines: list[IsolatedExecutionEngine], allowed: set[int], depth: int = 4
) -> None:
    states = [reachable_state(engine, allowed, depth) for engine in engines]
    for a, b in itertools.combinations(states, 2):
        shared = a.keys() & b.keys()
        assert not shared, [(a[k], b[k]) for k in shared]
    # The walk really reached each engine's own state (so the check can fail).
    paths = set(states[0].values())
    for expected in ("engine.history", "engine._open_calls", "engine.tools",
                     "engine.tools._call_numbers", "engine.context"):  # fmt: skip
        assert expected in paths, sorted(paths)


async def test_engine_for_gives_distinct_engines_that_share_no_mutable_object(
    registry: AgentRegistry, sink: BusSink
) -> None:
    """25 engine_for calls (same and different users): 25 engines, no shared mutable object.

    Allowed shared objects, and why: the registry is frozen (its tables are read-only
    MappingProxyType views, and registration raises), so sharing it shares no state; the sink
    is the caller's outlet (store/bus) handed in to every engine on purpose — it is where
    events leave, not engine state; the tracer likewise is where spans leave (the default one
    has no state at all). Everything else must be per engine.
    """
    assert registry.frozen
    factory = ExecutionEngineFactory(registry)
    users = ["ann", "ben", "cat", "dan", "eve"]
    leases = [factory.engine_for(new_ctx(users[i % 5]), sink) for i in range(25)]
    engines = [lease.engine for lease in leases]
    assert len({id(e) for e in engines}) == 25
    assert len({id(e.tools) for e in engines}) == 25
    allowed = {id(registry), id(sink), id(factory.tracer)}
    assert_no_shared_state(engines, allowed)

    # After running (histories, tasks and call counters in use) still nothing is shared.
    outcomes = await asyncio.wait_for(
        asyncio.gather(
            *(enter_and_run(lease, "work", {"steps": 2, "canary": "c"}) for lease in leases)
        ),
        WAIT_S,
    )
    assert all(o.status is RunStatus.SUCCEEDED for o in outcomes)
    assert all(len(e.history) == 10 for e in engines)
    assert_no_shared_state(engines, allowed)


async def test_engine_for_refuses_a_run_id_already_active(
    factory: ExecutionEngineFactory, sink: BusSink
) -> None:
    ctx = new_ctx("alice")
    lease = factory.engine_for(ctx, sink)
    with pytest.raises(AdmissionError, match="already active"):
        factory.engine_for(ctx, sink)
    lease.abandon()
    lease.abandon()  # idempotent
    assert factory.user_count() == 0


# --- limits and fairness ----------------------------------------------------------------------


class Tagged(BaseModel):
    tag: str = ""
    jitter_ms: float = 0.0


async def test_a_user_never_has_more_than_max_running_per_user(
    sink: BusSink, rng: random.Random
) -> None:
    limit = 3
    running: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    registry = AgentRegistry()

    @registry.agent("count", input_model=Tagged)
    async def count(ctx: RunContext, inp: Tagged) -> None:
        running[ctx.user_id] += 1
        peak[ctx.user_id] = max(peak[ctx.user_id], running[ctx.user_id])
        try:
            await asyncio.sleep(rng.uniform(1, 3) / 1000)  # workload
        finally:
            running[ctx.user_id] -= 1

    registry.freeze()
    factory = ExecutionEngineFactory(registry, Limits(max_running_per_user=limit))
    users = [f"user-{i}" for i in range(6)]
    runs = [(user, new_ctx(user)) for user in users for _ in range(12)]
    rng.shuffle(runs)
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(run_to_end(factory, sink, ctx, "count", {}) for _, ctx in runs)),
        WAIT_S,
    )
    assert all(o.status is RunStatus.SUCCEEDED for o in outcomes)
    assert peak == {user: limit for user in users}  # reached, never passed
    assert factory.user_count() == 0
    assert factory.running_count() == 0


async def test_one_users_backlog_does_not_delay_another_users_first_run(
    sink: BusSink,
) -> None:
    """Server saturated by alice's 100 runs: bob's first run gets the very next free slot."""
    starts: list[tuple[str, str]] = []
    started = asyncio.Event()
    gates: dict[str, asyncio.Event] = {}
    registry = AgentRegistry()

    @registry.agent("gated", input_model=Tagged)
    async def gated(ctx: RunContext, inp: Tagged) -> None:
        starts.append((ctx.user_id, ctx.run_id))
        started.set()
        await gates.setdefault(ctx.run_id, asyncio.Event()).wait()

    registry.freeze()
    factory = ExecutionEngineFactory(
        registry, Limits(max_running_total=4, max_running_per_user=4, max_queued_per_user=100)
    )
    alice_leases = [factory.engine_for(new_ctx("alice"), sink) for _ in range(100)]
    tasks = [asyncio.create_task(enter_and_run(lease, "gated", {})) for lease in alice_leases]
    await wait_until(lambda: len(starts) == 4, started)
    assert factory.running_count() == 4
    assert factory.queued_count("alice") == 96

    bob = new_ctx("bob")
    tasks.append(asyncio.create_task(enter_and_run(factory.engine_for(bob, sink), "gated", {})))
    assert factory.queued_count("bob") == 1

    gates.setdefault(starts[0][1], asyncio.Event()).set()  # one slot frees
    await wait_until(lambda: len(starts) == 5, started)
    assert starts[4] == ("bob", bob.run_id)
    assert factory.queued_count("alice") == 96  # alice's next run is still waiting

    # alice: 3 running + 96 queued; bob: 1 running.
    assert factory.cancel_all("test over") == 100
    await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)
    assert factory.user_count() == 0


async def test_full_per_user_queue_raises_queue_full_at_engine_for(
    factory: ExecutionEngineFactory, sink: BusSink
) -> None:
    small = ExecutionEngineFactory(
        factory.registry, Limits(max_running_per_user=1, max_queued_per_user=3)
    )
    leases = [small.engine_for(new_ctx("alice"), sink) for _ in range(4)]  # 1 running, 3 queued
    assert (small.running_count("alice"), small.queued_count("alice")) == (1, 3)
    with pytest.raises(QueueFullError) as info:
        small.engine_for(new_ctx("alice"), sink)
    assert (info.value.user_id, info.value.limit) == ("alice", 3)
    assert info.value.retry_after >= 1
    assert small.queued_count("alice") == 3  # the refused run left no trace

    leases.append(small.engine_for(new_ctx("bob"), sink))  # other users are unaffected
    leases[1].abandon()  # one queued run leaves: there is room again
    leases.append(small.engine_for(new_ctx("alice"), sink))
    for lease in leases:
        lease.abandon()
    assert small.user_count() == 0


async def test_runs_of_one_thread_execute_in_order_one_at_a_time(
    sink: BusSink, signals: Signals, rng: random.Random
) -> None:
    log: list[tuple[str, str]] = []
    registry = AgentRegistry()

    @registry.agent("ordered", input_model=Tagged)
    async def ordered(ctx: RunContext, inp: Tagged) -> None:
        log.append(("start", inp.tag))
        signals("agent", inp.tag).set()
        if inp.tag == "t1-0":
            await signals("release", "t1-0").wait()
        await asyncio.sleep(rng.uniform(0, inp.jitter_ms) / 1000)  # workload
        log.append(("end", inp.tag))

    registry.freeze()
    factory = ExecutionEngineFactory(registry, Limits(max_running_per_user=4))
    thread_1 = new_ctx("alice").thread_id
    leases = [(f"t1-{i}", factory.engine_for(new_ctx("alice", thread_1), sink)) for i in range(8)]
    other = factory.engine_for(new_ctx("alice"), sink)  # another thread, submitted last
    tasks = [
        asyncio.create_task(enter_and_run(lease, "ordered", {"tag": tag, "jitter_ms": 2}))
        for tag, lease in leases
    ]
    tasks.append(asyncio.create_task(enter_and_run(other, "ordered", {"tag": "t2"})))

    # The other thread is not held up by thread 1's queue; thread 1's second run is.
    await asyncio.wait_for(signals("agent", "t2").wait(), WAIT_S)
    assert factory.running_count("alice") == 2
    assert factory.queued_count("alice") == 7
    signals("release", "t1-0").set()
    await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)

    thread_log = [entry for entry in log if entry[1] != "t2"]
    assert thread_log == [(kind, f"t1-{i}") for i in range(8) for kind in ("start", "end")]


async def test_cancelling_a_task_waiting_for_admission_withdraws_its_run(
    registry: AgentRegistry, sink: BusSink, signals: Signals
) -> None:
    factory = ExecutionEngineFactory(registry, Limits(max_running_per_user=1))
    first = new_ctx("alice")
    first_task = asyncio.create_task(run_to_end(factory, sink, first, "wait", {}))
    await asyncio.wait_for(signals("agent", first.run_id).wait(), WAIT_S)
    waiting = factory.engine_for(new_ctx("alice"), sink)
    entered = asyncio.Event()

    async def enter() -> None:
        entered.set()
        async with waiting:
            raise AssertionError("must not be admitted")

    task = asyncio.create_task(enter())
    await asyncio.wait_for(entered.wait(), WAIT_S)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert factory.queued_count("alice") == 0
    signals("release", first.run_id).set()
    await asyncio.wait_for(first_task, WAIT_S)
    assert factory.user_count() == 0


# --- races ------------------------------------------------------------------------------------

MODES = ("none", "before_admission", "running", "mid_tool", "anytime", "after_finish")


async def test_cancel_at_random_points_never_breaks_a_runs_events(
    registry: AgentRegistry,
    sink: BusSink,
    signals: Signals,
    rng: random.Random,
    connect: Connect,
) -> None:
    """50 users x 20 runs, cancelled before admission, while running, mid-tool, at a random
    moment or after finishing: no exception escapes, every run has exactly one terminal
    event, tool events are paired and seq is contiguous — as stored and as delivered."""
    factory = ExecutionEngineFactory(registry, Limits(max_running_per_user=4))
    users = [f"user-{u:02d}" for u in range(50)]
    transports = {user: (await connect(user))[1] for user in users}
    modes: dict[str, str] = {}
    owners: dict[str, str] = {}
    cancel_results: dict[str, bool] = {}

    async def drive(user: str, mode: str, steps: int, delay_ms: float) -> RunStatus:
        ctx = new_ctx(user)
        modes[ctx.run_id] = mode
        owners[ctx.run_id] = user
        payload = {"canary": user, "steps": steps, "jitter_ms": 2, "hold_tool": mode == "mid_tool"}
        lease: EngineLease = factory.engine_for(ctx, sink)
        if mode == "before_admission":
            cancel_results[ctx.run_id] = factory.cancel(user, ctx.run_id)
        task = asyncio.create_task(enter_and_run(lease, "work", payload))
        if mode == "running":
            await asyncio.wait_for(signals("agent", ctx.run_id).wait(), WAIT_S)
            cancel_results[ctx.run_id] = factory.cancel(user, ctx.run_id)
        elif mode == "mid_tool":
            await asyncio.wait_for(signals("tool", ctx.run_id).wait(), WAIT_S)
            cancel_results[ctx.run_id] = factory.cancel(user, ctx.run_id)
        elif mode == "anytime":
            await asyncio.sleep(delay_ms / 1000)  # a random moment, not a synchronisation
            factory.cancel(user, ctx.run_id)  # may be queued, running or finished by now
        outcome = await task
        if mode == "after_finish":
            cancel_results[ctx.run_id] = factory.cancel(user, ctx.run_id)
        return outcome.status

    jobs = [
        (user, rng.choice(MODES), rng.randint(1, 3), rng.uniform(0, 8))
        for user in users
        for _ in range(20)
    ]
    rng.shuffle(jobs)
    statuses = await asyncio.wait_for(asyncio.gather(*(drive(*job) for job in jobs)), 60)

    assert len(sink.runs) == len(jobs) == 1000
    for run_id, events in sink.runs.items():
        wire = sink.wire(run_id)
        assert_run_well_formed(wire)
        mode, terminal = modes[run_id], wire[-1]["type"]
        if mode == "before_admission":
            assert [e["type"] for e in wire] == ["agent_cancelled"]
        elif mode in ("running", "mid_tool"):
            assert terminal == "agent_cancelled"
        elif mode in ("none", "after_finish"):
            assert terminal == "agent_completed"
        if mode == "mid_tool":
            tool_done = [e for e in wire if e["type"] == "tool_completed"]
            assert tool_done[-1]["data"]["status"] == "error"
        assert {e.user_id for e in events} == {owners[run_id]}
    cancelled_on_purpose = ("before_admission", "running", "mid_tool")
    assert all(cancel_results[r] for r, m in modes.items() if m in cancelled_on_purpose)
    assert not any(cancel_results[r] for r, m in modes.items() if m == "after_finish")
    assert Counter(statuses)[RunStatus.CANCELLED] >= sum(
        m in cancelled_on_purpose for m in modes.values()
    )
    assert factory.user_count() == 0
    assert (factory.running_count(), factory.queued_count()) == (0, 0)

    # What each user's connection received is exactly what was stored, run by run.
    for user, transport in transports.items():
        runs = [run_id for run_id, owner in owners.items() if owner == user]
        await transport.wait_for_frames(sum(len(sink.runs[r]) for r in runs))
        received: dict[str, list[dict[str, Any]]] = {}
        for doc in transport.decoded():
            received.setdefault(doc["run_id"], []).append(doc)
        assert received == {run_id: sink.wire(run_id) for run_id in runs}
