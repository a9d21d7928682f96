"""Watches event flow for runs that went quiet, tools that hang, and unpaired tool events."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from corral.core.events import Event, EventType

log = logging.getLogger("corral.monitor")


@dataclass(slots=True)
class _RunWatch:
    user_id: str
    last_event_at: float
    open_tools: dict[str, tuple[str, float]] = field(default_factory=dict)
    stale_reported: bool = False
    waiting: bool = False  # asked its user: silence is expected until the answer


@dataclass(frozen=True, slots=True)
class MonitorReport:
    watched_runs: int
    stale_runs: int
    stuck_tools: int
    unpaired_total: int


class EventMonitor:
    """Flags running runs with no event for ``stale_after_s``, tools running past
    ``stuck_after_s``, and runs that ended with a ``tool_executing`` never completed. A run
    waiting for its user's input (after ``input_requested``) is not stale.

    ``observe`` is called for every event (cheap, synchronous); ``check`` is called
    periodically and returns counts for metrics. Finished runs are forgotten at once, so
    memory follows the runs in progress. Logs name the run, never payloads.
    """

    def __init__(
        self,
        *,
        stale_after_s: float = 30.0,
        stuck_after_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stale_after_s = stale_after_s
        self.stuck_after_s = stuck_after_s
        self._clock = clock
        self._runs: dict[str, _RunWatch] = {}
        self.unpaired_total = 0

    def observe(self, event: Event) -> None:
        now = self._clock()
        watch = self._runs.get(event.run_id)
        if watch is None:
            if event.terminal:
                return
            watch = self._runs[event.run_id] = _RunWatch(event.user_id, now)
        watch.last_event_at = now
        watch.stale_reported = False
        watch.waiting = event.type is EventType.INPUT_REQUESTED
        if event.type is EventType.TOOL_EXECUTING:
            watch.open_tools[event.data["call_id"]] = (event.data.get("tool", "?"), now)
        elif event.type is EventType.TOOL_COMPLETED:
            watch.open_tools.pop(event.data.get("call_id", ""), None)
        elif event.terminal:
            del self._runs[event.run_id]
            if watch.open_tools:
                self.unpaired_total += len(watch.open_tools)
                log.error(
                    "run ended with %d tool call(s) never completed",
                    len(watch.open_tools),
                    extra={"user_id": event.user_id, "run_id": event.run_id},
                )

    def forget(self, run_id: str) -> None:
        self._runs.pop(run_id, None)

    def check(self) -> MonitorReport:
        now = self._clock()
        stale = stuck = 0
        for run_id, watch in self._runs.items():
            if not watch.waiting and now - watch.last_event_at >= self.stale_after_s:
                stale += 1
                if not watch.stale_reported:
                    watch.stale_reported = True
                    log.warning(
                        "run has sent no event for %.0f s",
                        now - watch.last_event_at,
                        extra={"user_id": watch.user_id, "run_id": run_id},
                    )
            for tool, started in watch.open_tools.values():
                if now - started >= self.stuck_after_s:
                    stuck += 1
                    log.warning(
                        "tool %s running for %.0f s",
                        tool,
                        now - started,
                        extra={"user_id": watch.user_id, "run_id": run_id},
                    )
        return MonitorReport(len(self._runs), stale, stuck, self.unpaired_total)
