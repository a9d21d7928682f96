"""Each run's events once and in seq order, from a source that repeats and reorders them (a
socket that reconnects and resumes). No I/O."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from corral.client.types import TERMINAL_TYPES, Event

# Finished runs are remembered so that late copies of their events are recognised; a session
# open for days forgets the oldest (an entry is a few dozen bytes).
FINISHED_KEPT = 10_000
# Events held behind a gap per run; past this the resume that fills the gap brings them again.
HELD_MAX = 10_000


@dataclass(slots=True)
class RunProgress:
    run_id: str
    last: int = 0  # the last seq delivered
    done: bool = False
    held: dict[int, Event] = field(default_factory=dict)


class RunOrder:
    """The delivery state of every run a session knows. Not thread-safe; one per session."""

    def __init__(self) -> None:
        self._runs: dict[str, RunProgress] = {}
        self._finished: deque[str] = deque()

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._runs

    def track(self, run_id: str, after: int = 0) -> RunProgress:
        """Follow ``run_id`` (from ``after``, when it is new)."""
        run = self._runs.get(run_id)
        if run is None:
            run = self._runs[run_id] = RunProgress(run_id, after)
        return run

    def unfinished(self) -> list[RunProgress]:
        return [run for run in self._runs.values() if not run.done]

    def offer(self, event: Event) -> tuple[list[Event], bool]:
        """The events ``event`` makes deliverable (none for a duplicate; it and those held
        behind it when it fills a gap), and whether a gap is open (resume the run)."""
        run = self.track(event["run_id"])
        seq = event["seq"]
        if run.done or seq <= run.last:
            return [], False
        if seq > run.last + 1:
            if len(run.held) < HELD_MAX:
                run.held[seq] = event
            return [], True
        out = [event]
        self._advance(run, event)
        while not run.done and (following := run.held.pop(run.last + 1, None)) is not None:
            out.append(following)
            self._advance(run, following)
        for stale in [s for s in run.held if s <= run.last]:
            del run.held[stale]
        return out, bool(run.held)

    def _advance(self, run: RunProgress, event: Event) -> None:
        run.last = event["seq"]
        if event["type"] in TERMINAL_TYPES:
            run.done = True
            run.held.clear()
            self._finished.append(run.run_id)
            if len(self._finished) > FINISHED_KEPT:
                self._runs.pop(self._finished.popleft(), None)
