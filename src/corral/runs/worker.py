"""The worker: claims runs from a run queue and executes them — the same code on every node.

A single node's ``corral serve`` runs one beside its API, on the in-process queue; ``corral
worker`` runs one on the cluster's queue. ``async with Worker(...)`` starts its loops: claim
(up to its capacity) and, when the queue's claims are leases, heartbeat (renew them; a lost
lease or a recorded cancellation stops the local run). Leaving it drains: no more claims,
running runs get the grace period, the rest are interrupted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass, field

from corral.auth.identity import Identity
from corral.core.context import UserExecutionContext, new_id
from corral.core.engine import IsolatedExecutionEngine, RunOutcome
from corral.core.events import RunStatus
from corral.core.factory import ExecutionEngineFactory
from corral.core.tracing import NO_SPAN, Span
from corral.errors import ContextError
from corral.outage import Outage
from corral.runs.inputs import StoreInputGate
from corral.runs.queue import Claim, RunQueue
from corral.store.reads import Reads
from corral.store.records import RunRecord
from corral.store.writer import EventWriter

log = logging.getLogger("corral.worker")


def identity_of(run: RunRecord) -> Identity:
    """The identity the run was started for (stored with it, so any worker has it); the bare
    user when none was stored (runs made before identities were) or it is unusable."""
    if run.identity is not None:
        try:
            identity = Identity.from_dict(run.identity)
        except ContextError as exc:
            log.warning(
                "the stored identity of the run is unusable (%s); the agent gets the bare user",
                exc.field,
                extra={"user_id": run.user_id, "run_id": run.run_id},
            )
        else:
            if identity.user_id == run.user_id:
                return identity
            log.error(
                "the stored identity names another user than the run's; the agent gets the "
                "bare user",
                extra={"user_id": run.user_id, "run_id": run.run_id},
            )
    return Identity(run.user_id)


@dataclass(slots=True)
class _Running:
    claim: Claim
    task: asyncio.Task[None]
    engine: IsolatedExecutionEngine | None = None
    cancel_reason: str | None = None  # asked for before the engine existed
    answer_hint: asyncio.Event = field(default_factory=asyncio.Event)  # an answer may be stored


class _Slot:
    """One run's hold on its worker's capacity (a :class:`~corral.runs.inputs.RunSlot`)."""

    __slots__ = ("_run_id", "_worker")

    def __init__(self, worker: Worker, run_id: str) -> None:
        self._worker = worker
        self._run_id = run_id

    def suspend(self) -> None:
        self._worker._suspend(self._run_id)

    async def resume(self) -> None:
        await self._worker._resume(self._run_id)


class Worker:
    """Executes the runs ``queue`` hands it, at most ``capacity`` at once (runs waiting for
    input not counted)."""

    def __init__(
        self,
        queue: RunQueue,
        writer: EventWriter,
        factory: ExecutionEngineFactory,
        reads: Reads,
        *,
        capacity: int | None = None,
        grace_s: float = 10.0,
        worker_id: str | None = None,
    ) -> None:
        self.queue = queue
        self.writer = writer
        self.factory = factory
        self.reads = reads
        self.capacity = capacity or factory.limits.max_running_total
        self.grace_s = grace_s
        self.worker_id = worker_id or self.new_id()
        self._running: dict[str, _Running] = {}
        self._waiting: set[str] = set()  # runs waiting for input: no slot held here
        self._resuming = 0  # runs waiting for a slot here to go on (ahead of new claims)
        self._slot_freed = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False
        self._claiming = Outage(log, "could not claim runs", "claiming runs works again")
        self._renewing = Outage(log, "could not renew leases", "renewing leases works again")

    @staticmethod
    def new_id() -> str:
        """A worker id that names its host and process (seen in ``lease_owner``)."""
        return f"{socket.gethostname()}-{os.getpid()}-{new_id('w')[2:10]}"

    @property
    def running(self) -> int:
        """Runs executing here, waiting ones included."""
        return len(self._running)

    @property
    def waiting(self) -> int:
        """Runs waiting for their user's input here."""
        return len(self._waiting)

    def _free(self) -> int:
        return self.capacity - (len(self._running) - len(self._waiting)) - self._resuming

    async def __aenter__(self) -> Worker:
        self.queue.attach(self)
        loop = asyncio.get_running_loop()
        self._loops = [loop.create_task(self._claim_loop(), name="worker-claim")]
        lease_s = self.queue.lease_s
        if lease_s is not None:
            self._loops.append(loop.create_task(self._heartbeat(lease_s), name="worker-lease"))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.drain(self.grace_s)

    async def drain(self, grace_s: float) -> None:
        """Take no more runs; let running ones finish within ``grace_s``; interrupt the rest
        (their engines end them with ``agent_error`` of type ``interrupted``). Idempotent."""
        if not self._stopping:
            self._stopping = True
            for task in self._loops[:1]:  # claiming stops now; leases are kept while draining
                task.cancel()
        for run_id in list(self._waiting):  # its user may answer in an hour: interrupt it now
            self._running[run_id].task.cancel()
        tasks = [r.task for r in self._running.values()]
        if tasks:
            log.info("waiting up to %.0f s for %d run(s) to finish", grace_s, len(tasks))
            await asyncio.wait(tasks, timeout=grace_s)
        leftovers = [r.task for r in self._running.values() if not r.task.done()]
        for task in leftovers:
            task.cancel()
        if leftovers:
            await asyncio.wait(leftovers, timeout=5.0)
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)

    def cancel(self, run_id: str, reason: str) -> None:
        """Stop ``run_id`` if this worker executes it (the queue checked the owner)."""
        running = self._running.get(run_id)
        if running is None:
            return
        if running.engine is not None:
            running.engine.cancel(reason)
        elif running.cancel_reason is None:
            running.cancel_reason = reason

    def answered(self, run_id: str) -> None:
        """An answer to ``run_id``'s question may be stored: its gate reads it."""
        running = self._running.get(run_id)
        if running is not None:
            running.answer_hint.set()

    # -- waiting for input ------------------------------------------------------------------------

    def _suspend(self, run_id: str) -> None:
        entry = self._running[run_id]
        self._waiting.add(run_id)
        self.queue.suspend(entry.claim)
        self._slot_freed.set()
        if self._stopping:  # draining: a run that starts waiting now is interrupted at once
            entry.task.cancel()

    async def _resume(self, run_id: str) -> None:
        entry = self._running[run_id]
        if self.queue.admits_locally:
            # The queue's scheduler grants this process's slots: its word is final here.
            await self.queue.resume(entry.claim)
            self._waiting.discard(run_id)
            return
        self._resuming += 1
        try:
            while self.capacity - (len(self._running) - len(self._waiting)) <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
        finally:
            self._resuming -= 1
        self._waiting.discard(run_id)  # holds a slot here from now on
        await self.queue.resume(entry.claim)  # and, across the cluster, within its user's limit

    # -- loops ----------------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while not self._stopping:
            free = self._free()
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                claims = await self.queue.claim(free)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._claiming.failed(exc)
                await asyncio.sleep(0.5)
                continue
            self._claiming.succeeded()
            loop = asyncio.get_running_loop()
            for claim in claims:
                run_id = claim.run.run_id
                task = loop.create_task(self._execute(claim), name=f"run {run_id}")
                self._running[run_id] = _Running(claim, task)

    async def _execute(self, claim: Claim) -> None:
        run = claim.run
        entry = self._running[run.run_id]
        context = UserExecutionContext(
            user_id=run.user_id, thread_id=run.thread_id, run_id=run.run_id
        )
        if claim.fenced:
            self.writer.fence(run.run_id, run.attempt)
        gate = StoreInputGate(
            run, _Slot(self, run.run_id), entry.answer_hint, self.reads.db, self.writer
        )
        try:
            engine = self.factory.create_engine(
                context,
                self.writer,
                timeout_s=run.timeout_s,
                identity=identity_of(run),
                input_gate=gate,
                new_thread=run.new_thread,
            )
            entry.engine = engine
            if entry.cancel_reason is not None:
                engine.cancel(entry.cancel_reason)
            # The run's span continues the trace of the request that started it (stored with
            # the run, so on any node); tool and model spans nest under it through the context
            # the agent's task inherits.
            tracer = self.factory.tracer
            span_context = (
                tracer.span(
                    "corral.run",
                    {"corral.run_id": run.run_id, "corral.agent": run.agent},
                    parent=run.trace,
                )
                if tracer.enabled
                else NO_SPAN
            )
            with span_context as span:
                _outcome_on(span, await engine.run(run.agent, run.input))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "run ended without its terminal event here (%s: %s)",
                type(exc).__name__,
                exc,
                extra={"user_id": run.user_id, "run_id": run.run_id},
            )
        finally:
            self._running.pop(run.run_id, None)
            self._waiting.discard(run.run_id)
            if claim.fenced:
                self.writer.unfence(run.run_id)
            self.queue.finished(claim)
            self._slot_freed.set()

    async def _heartbeat(self, lease_s: float) -> None:
        while True:
            await asyncio.sleep(lease_s / 3)
            claims = [r.claim for r in self._running.values()]
            if not claims:
                continue
            try:
                renewal = await self.queue.renew(claims)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._renewing.failed(exc)
                continue
            self._renewing.succeeded()
            for run_id in renewal.lost:
                if run_id in self._running:
                    log.warning(
                        "lease lost (another process took the run over); stopping it here",
                        extra={"run_id": run_id, "worker_id": self.worker_id},
                    )
                    self.cancel(run_id, "the worker lost its lease")
            for run_id, reason in renewal.cancels.items():
                self.cancel(run_id, reason)
            for run_id in renewal.answered:
                self.answered(run_id)


def _outcome_on(span: Span, outcome: RunOutcome) -> None:
    span.set_attribute("corral.status", outcome.status.value)
    if outcome.status in (RunStatus.FAILED, RunStatus.TIMED_OUT):
        span.set_error((outcome.error or {}).get("type", outcome.status.value))
