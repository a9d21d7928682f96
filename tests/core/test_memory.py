"""Memory follows what is in progress, not what has ever run."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

import pytest
from pydantic import BaseModel

from corral import (
    AgentRegistry,
    Connection,
    ExecutionEngineFactory,
    InProcessEventBus,
    RunContext,
    RunStatus,
    WebSocketBridgeFactory,
    WebSocketConnectionPool,
)

from .conftest import WAIT_S, BusSink, RecordingTransport, new_ctx, run_to_end

USERS = 1_000
RUNS_PER_USER = 5
# Two rounds of the same shape: each user connects, runs 5 runs at once, disconnects.
# The first (5,000 runs) is the warm-up that lets every table and the loop's task set reach
# their working size; the second (5,000 runs) is measured.
# Bytes the measured 5,000 runs may leave allocated: ~200 B a run. What stays is allocator
# free lists and asyncio's own bookkeeping (about 170 KiB when this was written); keeping
# just each run's two events (~400 B each with their bytes) would be about 4 MiB.
GROWTH_BOUND = 1024 * 1024


class Nothing(BaseModel):
    pass


def trivial_registry() -> AgentRegistry:
    registry = AgentRegistry()

    @registry.agent("trivial", input_model=Nothing)
    async def trivial(ctx: RunContext, inp: Nothing) -> str:
        return "ok"

    registry.freeze()
    return registry


@pytest.mark.slow
async def test_ten_thousand_runs_leave_nothing_behind_and_memory_stays_bounded() -> None:
    """10,000 runs of 1,000 users, each user connected while its run goes: afterwards no user
    bookkeeping, no subscription, an empty pool; and what the measured 5,000 runs left
    allocated stays under GROWTH_BOUND (1 MiB), i.e. does not grow with the number of runs."""
    bus = InProcessEventBus()
    pool = WebSocketConnectionPool()
    bridge = WebSocketBridgeFactory(pool, bus)
    factory = ExecutionEngineFactory(trivial_registry())
    sink = BusSink(bus, keep=False)  # counts only: a store is not under test here

    async def one_user(user_id: str, runs: int) -> None:
        """Connect, run ``runs`` runs at once, see their events arrive, disconnect."""
        transport = RecordingTransport(keep=False)
        conn = Connection(user_id, transport)
        conn.start()
        await bridge.attach(conn)
        try:
            outcomes = await asyncio.gather(
                *(run_to_end(factory, sink, new_ctx(user_id), "trivial", {}) for _ in range(runs))
            )
            assert all(o.status is RunStatus.SUCCEEDED for o in outcomes)
            await transport.wait_for_frames(2 * runs)  # agent_started, agent_completed each
        finally:
            await bridge.detach(conn)
            await conn.close()

    async def one_round(runs_per_user: int) -> None:
        users = (one_user(f"user-{i:04d}", runs_per_user) for i in range(USERS))
        await asyncio.wait_for(asyncio.gather(*users), WAIT_S * 3)
        assert factory.user_count() == 0
        assert bus.subscribed_users() == 0
        assert bridge.subscribed_users() == 0
        assert pool.user_count() == 0
        assert pool.connection_count() == 0

    await one_round(RUNS_PER_USER)  # warm-up
    gc.collect()
    # Only what is allocated while tracing is seen: the growth is what the measured runs
    # allocated and is still alive at the end.
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        await one_round(RUNS_PER_USER)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()

    assert sink.accepted == 2 * 2 * USERS * RUNS_PER_USER == 2 * 10_000
    assert (factory.running_count(), factory.queued_count()) == (0, 0)
    stats = after.compare_to(before, "lineno")
    growth = sum(stat.size_diff for stat in stats)
    top = "\n".join(str(stat) for stat in stats[:10])
    assert growth < GROWTH_BOUND, f"grew {growth} bytes over 5,000 runs:\n{top}"
    await bus.close()
