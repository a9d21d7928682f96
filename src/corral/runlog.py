"""One INFO line per finished run (contract §13), from the one writer's observer.

The writer hands every stored event to its observers, whichever path wrote it — an engine, a
cancellation of a queued run, an interruption at start-up or by a cluster's reaper — so each
terminal event is seen exactly once, by the process that stored it. The line carries the run
id, user id, agent, status, duration and error type; never the run's input, output, an error
message, or anything of a token.
In text: ``run finished [user_id=… run_id=… agent=echo status=succeeded duration_ms=12.5]``;
with ``--log-json`` the same fields are keys of the line's object.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence

from corral.core.events import Event, EventType, terminal_status

log = logging.getLogger("corral.runs")

# Runs started here but never seen to end (fenced out by another process, say) are forgotten
# oldest first past this many; a process executes at most a few hundred at once.
MAX_TRACKED = 10_000


class RunLog:
    """Writes the per-run line. One per process (made by :func:`corral.assembly.open_parts`);
    called on the event loop only, after each committed batch."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self._log = logger
        # run_id -> (agent, emitted_at of agent_started): what a cancellation's line needs.
        self._started: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def observe(self, events: Sequence[Event]) -> None:
        for event in events:
            if event.type is EventType.AGENT_STARTED:
                self._started[event.run_id] = (str(event.data.get("agent", "")), event.emitted_at)
                if len(self._started) > MAX_TRACKED:
                    self._started.popitem(last=False)
            elif event.terminal:
                self._finished(event)

    def _finished(self, event: Event) -> None:
        agent, started = self._started.pop(event.run_id, (event.agent, None))
        duration = event.data.get("duration_ms")
        if not isinstance(duration, int | float):
            # A cancellation carries no duration: the time since it started here, if it did.
            duration = None if started is None else (event.emitted_at - started) * 1000
        status = terminal_status(event.type, event.data).value
        error = event.data.get("error")
        self._log.info(
            "run finished",
            extra={
                "user_id": event.user_id,
                "run_id": event.run_id,
                "agent": agent or event.agent or None,
                "status": status,
                "duration_ms": None if duration is None else round(float(duration), 3),
                # The error's type (timeout, interrupted, agent_error...), never its message.
                "error_type": error.get("type") if isinstance(error, dict) else None,
            },
        )
