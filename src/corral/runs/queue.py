"""The run queue: the seam between accepting runs and executing them.

One interface, two backends: :class:`InProcessRunQueue` (a single node: admission in memory)
and :class:`corral.cluster.queue.ClusterRunQueue` (PostgreSQL decides, Redis wakes workers up).
The service submits, cancels and delivers answers; a :class:`~corral.runs.worker.Worker`
claims, executes, renews its leases, suspends and resumes runs that wait for their user's input
(contract §9), and reports each run finished. Admission and fairness are the scheduler's
(:mod:`corral.core.admission`) in both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from corral.core.admission import Limits, Scheduler, Ticket, TicketState
from corral.errors import FencedError
from corral.store.inputs import ResumeRun
from corral.store.ops import CancelQueued, InterruptUnfinished
from corral.store.records import RunRecord
from corral.store.writer import EventWriter

log = logging.getLogger("corral.queue")


@dataclass(frozen=True, slots=True)
class Claim:
    """A run a worker may execute now; ``fenced``: its writes name ``run.attempt``."""

    run: RunRecord
    fenced: bool = False


@dataclass(frozen=True, slots=True)
class Renewal:
    lost: frozenset[str] = frozenset()  # runs whose lease is gone: stop them here
    cancels: dict[str, str] = field(default_factory=dict)  # run_id -> reason asked for
    answered: frozenset[str] = frozenset()  # waiting runs with a stored answer


class Executor(Protocol):
    """What a queue tells the process executing a run (its worker)."""

    def cancel(self, run_id: str, reason: str) -> None: ...

    def answered(self, run_id: str) -> None:
        """An answer to ``run_id``'s question is stored: read it (if the run is here)."""
        ...


class RunQueue(Protocol):
    """Submit, claim, cancel, renew, wait until settled. Every method runs on the event loop."""

    @property
    def lease_s(self) -> float | None:
        """How long a claim lasts without renewal (None: for the life of the process)."""
        ...

    @property
    def admits_locally(self) -> bool:
        """True when this queue's own scheduler grants this process's slots (a single node):
        a resumed run's slot is then the queue's to give. False in a cluster, where each
        worker also bounds the runs it executes itself."""
        ...

    def attach(self, executor: Executor) -> None:
        """The worker of this process, told about cancellations of the runs it executes."""
        ...

    async def submit(self, run: RunRecord) -> None:
        """``run`` is stored as queued; make it claimable."""
        ...

    async def claim(self, limit: int) -> list[Claim]:
        """Up to ``limit`` runs to execute now; waits until there is at least one, or for a
        while (then returns none: call again). Cancellation-safe: nothing is claimed by a
        call that was cancelled."""
        ...

    def finished(self, claim: Claim) -> None:
        """The run's terminal event is stored: its slot is free."""
        ...

    def suspend(self, claim: Claim) -> None:
        """The run waits for its user's input (its ``input_requested`` is stored): its slot
        is free, its thread stays busy."""
        ...

    async def resume(self, claim: Claim) -> None:
        """Wait until the suspended run may execute again (a slot, within its user's limit,
        ahead of the user's queued runs); its row then says ``running``. Raises
        :class:`FencedError` when the run is no longer this process's. Cancellation-safe."""
        ...

    async def answered(self, run: RunRecord) -> None:
        """An answer to ``run``'s question is stored: tell the process executing it."""
        ...

    async def cancel(self, user_id: str, run_id: str, reason: str) -> bool:
        """End a queued run of ``user_id`` now, or ask its executor to stop it; False when it
        is not queued or executing (or not theirs)."""
        ...

    async def renew(self, claims: Sequence[Claim]) -> Renewal: ...

    async def wait_settled(self, run_id: str, timeout_s: float) -> None:
        """Return when the run is finished, or after ``timeout_s``."""
        ...

    async def counts(self) -> tuple[int, int]:
        """(running, queued) runs, for the gauges."""
        ...


class InProcessRunQueue:
    """A single node's queue: the scheduler in memory, the run rows in the database.

    ``async with`` it: on entering, runs a dead process left unfinished are ended as
    ``interrupted`` (nothing else can be executing them); on leaving — after the worker
    drained — so are the runs still queued or executing.

    A suspended run's ticket keeps its thread; resumed, it waits for a slot ahead of its user's
    queued runs, and the scheduler grants it inside :meth:`claim` like any other ticket (the
    worker calls ``claim`` whenever it has room, and its room and the scheduler's are the same
    ``max_running_total``).
    """

    def __init__(self, writer: EventWriter, limits: Limits) -> None:
        self._writer = writer
        self._scheduler = Scheduler(limits)
        self._runs: dict[str, tuple[RunRecord, Ticket, asyncio.Future[None]]] = {}
        self._resuming: dict[str, asyncio.Future[None]] = {}  # run_id -> granted a slot
        self._ready = asyncio.Event()
        self._executor: Executor | None = None

    async def __aenter__(self) -> InProcessRunQueue:
        count = await self._writer.submit(
            InterruptUnfinished("the server stopped before the run finished")
        )
        if count:
            log.warning("ended %d run(s) of a previous process as interrupted", count)
        return self

    async def __aexit__(self, *exc: object) -> None:
        count = await self._writer.submit(
            InterruptUnfinished("the server shut down before the run finished")
        )
        if count:
            log.warning("ended %d unfinished run(s) as interrupted at shutdown", count)
        for _record, _ticket, settled in self._runs.values():
            if not settled.done():
                settled.set_result(None)
        self._runs.clear()

    @property
    def lease_s(self) -> float | None:
        return None

    @property
    def admits_locally(self) -> bool:
        return True

    def attach(self, executor: Executor) -> None:
        self._executor = executor

    async def submit(self, run: RunRecord) -> None:
        ticket = Ticket(run.user_id, run.thread_id, run.run_id)
        self._scheduler.add(ticket, check_queue=False)  # the store checked the queue limit
        settled = asyncio.get_running_loop().create_future()
        self._runs[run.run_id] = (run, ticket, settled)
        self._ready.set()

    async def claim(self, limit: int) -> list[Claim]:
        while True:
            claims = []
            for ticket in self._scheduler.take(limit):
                granted = self._resuming.pop(ticket.run_id, None)
                if granted is None:
                    claims.append(Claim(self._runs[ticket.run_id][0]))
                elif not granted.done():
                    granted.set_result(None)  # a resumed run: its worker task goes on
            if claims:
                return claims
            self._ready.clear()
            await self._ready.wait()

    def finished(self, claim: Claim) -> None:
        self._forget(claim.run.run_id)

    def suspend(self, claim: Claim) -> None:
        entry = self._runs.get(claim.run.run_id)
        if entry is not None:
            self._scheduler.suspend(entry[1])
            self._ready.set()  # its slot is free

    async def resume(self, claim: Claim) -> None:
        run = claim.run
        entry = self._runs.get(run.run_id)
        if entry is None:
            raise FencedError(run.run_id, run.attempt)
        granted = asyncio.get_running_loop().create_future()
        self._resuming[run.run_id] = granted
        self._scheduler.resume(entry[1])
        self._ready.set()
        try:
            await granted
        finally:
            self._resuming.pop(run.run_id, None)
        # The scheduler decided; the row follows (it also says so for a question that timed
        # out, which has no input_received event to carry the change).
        resumed = await self._writer.submit(ResumeRun(run.run_id, run.user_id, run.attempt, None))
        if resumed == "gone":
            raise FencedError(run.run_id, run.attempt)

    async def answered(self, run: RunRecord) -> None:
        if self._executor is not None:
            self._executor.answered(run.run_id)

    def _forget(self, run_id: str) -> None:
        entry = self._runs.pop(run_id, None)
        if entry is None:
            return
        _record, ticket, settled = entry
        self._scheduler.remove(ticket)
        if not settled.done():
            settled.set_result(None)
        self._ready.set()  # a slot or a thread may be free now

    async def cancel(self, user_id: str, run_id: str, reason: str) -> bool:
        entry = self._runs.get(run_id)
        if entry is None or entry[1].user_id != user_id:
            return False
        _record, ticket, _settled = entry
        if ticket.state is TicketState.QUEUED:
            self._forget(run_id)  # out of the queue before anything can claim it
            await self._writer.submit(CancelQueued(user_id, run_id, reason))
            return True
        if self._executor is not None:
            self._executor.cancel(run_id, reason)
        return True

    async def renew(self, claims: Sequence[Claim]) -> Renewal:
        return Renewal()

    async def wait_settled(self, run_id: str, timeout_s: float) -> None:
        entry = self._runs.get(run_id)
        if entry is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(entry[2]), timeout_s)

    async def counts(self) -> tuple[int, int]:
        return self._scheduler.running_total, self._scheduler.queued()
