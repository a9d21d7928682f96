"""EventMonitor: stale runs, stuck tools and unpaired tool events, on an injected clock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from corral import (
    AgentRegistry,
    Event,
    EventMonitor,
    EventType,
    ExecutionEngineFactory,
    InProcessEventBus,
)

from .conftest import WAIT_S, Signals, new_ctx, run_to_end


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ev(type_: EventType, seq: int, run_id: str = "run_a", **data: Any) -> Event:
    return Event(type=type_, run_id=run_id, thread_id="thr_a", seq=seq, data=data, user_id="al")


def test_run_without_events_for_stale_after_is_reported_stale() -> None:
    clock = FakeClock()
    monitor = EventMonitor(stale_after_s=30, stuck_after_s=60, clock=clock)
    monitor.observe(ev(EventType.AGENT_STARTED, 1, agent="x"))
    clock.now += 29.9
    assert monitor.check().stale_runs == 0
    clock.now += 0.1
    report = monitor.check()
    assert (report.watched_runs, report.stale_runs) == (1, 1)
    assert monitor.check().stale_runs == 1  # still stale; reported in the count each time

    monitor.observe(ev(EventType.AGENT_THINKING, 2, text="alive"))  # any event: fresh again
    assert monitor.check().stale_runs == 0
    clock.now += 30
    assert monitor.check().stale_runs == 1


def test_tool_running_past_stuck_after_is_reported_until_it_completes() -> None:
    clock = FakeClock()
    monitor = EventMonitor(stale_after_s=1000, stuck_after_s=60, clock=clock)
    monitor.observe(ev(EventType.AGENT_STARTED, 1))
    monitor.observe(ev(EventType.TOOL_EXECUTING, 2, call_id="call_1", tool="search"))
    clock.now += 59
    assert monitor.check().stuck_tools == 0
    monitor.observe(ev(EventType.TOOL_EXECUTING, 3, call_id="call_2", tool="fetch"))
    clock.now += 1
    assert monitor.check().stuck_tools == 1  # call_1 only: call_2 started a minute later
    clock.now += 60
    assert monitor.check().stuck_tools == 2
    monitor.observe(ev(EventType.TOOL_COMPLETED, 4, call_id="call_1", tool="search"))
    assert monitor.check().stuck_tools == 1
    monitor.observe(ev(EventType.TOOL_COMPLETED, 5, call_id="call_2", tool="fetch"))
    assert monitor.check().stuck_tools == 0


def test_terminal_with_open_tool_calls_counts_them_unpaired() -> None:
    monitor = EventMonitor(clock=FakeClock())
    monitor.observe(ev(EventType.AGENT_STARTED, 1))
    monitor.observe(ev(EventType.TOOL_EXECUTING, 2, call_id="call_1", tool="a"))
    monitor.observe(ev(EventType.TOOL_EXECUTING, 3, call_id="call_2", tool="b"))
    monitor.observe(ev(EventType.TOOL_COMPLETED, 4, call_id="call_2", tool="b"))
    monitor.observe(ev(EventType.AGENT_ERROR, 5, error={"type": "x", "message": ""}))
    assert monitor.unpaired_total == 1
    assert monitor.check().unpaired_total == 1


def test_runs_are_forgotten_at_their_terminal_event() -> None:
    clock = FakeClock()
    monitor = EventMonitor(stale_after_s=1, clock=clock)
    for i in range(100):
        monitor.observe(ev(EventType.AGENT_STARTED, 1, run_id=f"run_{i}"))
        monitor.observe(ev(EventType.AGENT_COMPLETED, 2, run_id=f"run_{i}"))
    # A run cancelled while queued has only a terminal event: it is never watched.
    monitor.observe(ev(EventType.AGENT_CANCELLED, 1, run_id="run_queued"))
    clock.now += 1000
    report = monitor.check()
    assert (report.watched_runs, report.stale_runs, report.unpaired_total) == (0, 0, 0)

    monitor.observe(ev(EventType.AGENT_STARTED, 1, run_id="run_x"))
    monitor.forget("run_x")
    assert monitor.check().watched_runs == 0


async def test_monitor_fed_by_real_runs_ends_with_nothing_watched_or_unpaired(
    registry: AgentRegistry, bus: InProcessEventBus, signals: Signals
) -> None:
    clock = FakeClock()
    monitor = EventMonitor(stale_after_s=5, stuck_after_s=5, clock=clock)

    class MonitoredSink:
        """Stores (observes) each event when accepted, then publishes it."""

        def emit(self, event: Event) -> Awaitable[None]:
            monitor.observe(event)
            return bus.publish([(event, event.to_json())])

    factory = ExecutionEngineFactory(registry)
    held = new_ctx("alice")
    held_task = asyncio.create_task(
        run_to_end(factory, MonitoredSink(), held, "work", {"hold_tool": True})
    )
    await asyncio.wait_for(signals("tool", held.run_id).wait(), WAIT_S)
    clock.now += 5
    assert monitor.check().stuck_tools == 1
    assert monitor.check().stale_runs == 1

    others = [
        run_to_end(factory, MonitoredSink(), new_ctx(f"user-{i}"), agent, payload)
        for i in range(10)
        for agent, payload in [("work", {"steps": 3}), ("hang", {}), ("work", {"fail": True})]
    ]
    await asyncio.wait_for(asyncio.gather(*others), WAIT_S)
    assert monitor.check().watched_runs == 1  # only the held run is still going
    factory.cancel("alice", held.run_id)
    await asyncio.wait_for(held_task, WAIT_S)
    report = monitor.check()
    assert (report.watched_runs, report.stuck_tools, report.unpaired_total) == (0, 0, 0)
