"""Engines for runs: one new engine each; admission (per-user limits, fairness) for plain-Python
use, on the scheduler of :mod:`corral.core.admission`."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from corral.auth.identity import Identity
from corral.core.admission import Limits, Scheduler, Ticket, TicketState
from corral.core.asking import InputGate
from corral.core.context import UserExecutionContext
from corral.core.engine import EventSink, IsolatedExecutionEngine, SecretSource, ThreadMemory
from corral.core.registry import AgentRegistry
from corral.core.tracing import NO_TRACER, Tracer
from corral.errors import AdmissionError

log = logging.getLogger("corral.factory")


@dataclass(eq=False, slots=True)
class _Lease:
    """One run's reservation; lives from ``engine_for`` until its lease closes."""

    ticket: Ticket
    engine: IsolatedExecutionEngine
    admitted: asyncio.Future[None]


class EngineLease:
    """``async with`` it to wait for admission and get the run's engine; leaving releases it.

    Entering waits until the user's and the server's limits admit the run, or until the run
    is cancelled while queued (the engine is then yielded already cancelled, and its ``run``
    emits only ``agent_cancelled``). Cancelling the entering task withdraws the run.
    """

    __slots__ = ("_factory", "_ticket")

    def __init__(self, factory: ExecutionEngineFactory, ticket: _Lease) -> None:
        self._factory = factory
        self._ticket = ticket

    @property
    def engine(self) -> IsolatedExecutionEngine:
        return self._ticket.engine

    def abandon(self) -> None:
        """Give the reservation back without running (idempotent)."""
        self._factory._release(self._ticket)

    async def __aenter__(self) -> IsolatedExecutionEngine:
        try:
            await self._ticket.admitted
        except BaseException:
            self._factory._release(self._ticket)
            raise
        return self._ticket.engine

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._factory._release(self._ticket)


class ExecutionEngineFactory:
    """App-scoped maker of :class:`IsolatedExecutionEngine`, one new engine per run.

    :meth:`create_engine` makes an engine for a run that is already admitted (the server's
    workers: their run queue admits). :meth:`engine_for` admits too, for plain-Python use: at
    most ``max_running_per_user`` runs of a user execute at once and at most
    ``max_queued_per_user`` wait; the ``max_running_total`` slots go fairly — see
    :mod:`corral.core.admission`, the one place those rules are written. Runs of one thread
    execute one after another, in submission order. All methods run on the event loop's thread;
    none of them blocks. ``secrets`` resolves every engine's ``ctx.secret(name)``.
    """

    def __init__(
        self,
        registry: AgentRegistry,
        limits: Limits | None = None,
        *,
        history_limit: int = 256,
        threads: ThreadMemory | None = None,
        secrets: SecretSource | None = None,
        tracer: Tracer = NO_TRACER,
    ) -> None:
        self.registry = registry
        self.limits = limits or Limits()
        self._history_limit = history_limit
        self._threads = threads
        self._secrets = secrets
        self.tracer = tracer
        self._scheduler = Scheduler(self.limits)
        self._leases: dict[str, _Lease] = {}  # run_id -> reservation

    # -- making engines -----------------------------------------------------------------------

    def create_engine(
        self,
        context: UserExecutionContext,
        sink: EventSink,
        *,
        timeout_s: float | None = None,
        identity: Identity | None = None,
        input_gate: InputGate | None = None,
        new_thread: bool = False,
    ) -> IsolatedExecutionEngine:
        """A new engine for ``context``'s run, admitted elsewhere (never reused).

        ``identity`` is who the run acts for (``ctx.identity``); without one, the context's
        user with no roles or claims. Its questions wait at ``input_gate`` (the server's gives
        back the run's slot meanwhile); without one, at the engine's own in-memory gate.
        ``new_thread``: the run started its thread (its state is ``{}`` without reading it).
        """
        return IsolatedExecutionEngine(
            context,
            self.registry,
            sink,
            timeout_s=timeout_s,
            default_timeout_s=self.limits.run_timeout_s,
            tool_timeout_s=self.limits.tool_timeout_s,
            history_limit=self._history_limit,
            threads=self._threads,
            input_gate=input_gate,
            input_timeout_s=self.limits.input_timeout_s,
            new_thread=new_thread,
            identity=identity,
            secrets=self._secrets,
            tracer=self.tracer,
        )

    def engine_for(
        self,
        context: UserExecutionContext,
        sink: EventSink,
        *,
        timeout_s: float | None = None,
        identity: Identity | None = None,
    ) -> EngineLease:
        """Reserve a place for ``context``'s run and return its lease (see :class:`EngineLease`).

        Raises :class:`QueueFullError` at once when the user's queue is full, and
        :class:`AdmissionError` when the run id is already active.
        """
        if self._scheduler.get(context.user_id, context.run_id) is not None:
            raise AdmissionError(f"run {context.run_id} is already active")
        ticket = Ticket(context.user_id, context.thread_id, context.run_id)
        self._scheduler.add(ticket)
        engine = self.create_engine(context, sink, timeout_s=timeout_s, identity=identity)
        lease = _Lease(ticket, engine, asyncio.get_running_loop().create_future())
        self._leases[context.run_id] = lease
        self._pump()
        return EngineLease(self, lease)

    # -- cancellation -------------------------------------------------------------------------

    def cancel(self, user_id: str, run_id: str, reason: str = "cancelled by the user") -> bool:
        """Cancel ``run_id`` if ``user_id`` owns it and it is queued or running.

        Returns False for a run that is unknown *or belongs to someone else* (the caller cannot
        tell which). A queued run leaves the queue at once.
        """
        ticket = self._scheduler.get(user_id, run_id)
        lease = self._leases.get(run_id)
        if ticket is None or lease is None or lease.ticket is not ticket:
            return False
        lease.engine.cancel(reason)
        if ticket.state is TicketState.QUEUED:
            self._scheduler.remove(ticket)
            lease.admitted.set_result(None)  # enter now; the engine only emits the terminal
        return True

    def cancel_all(self, reason: str) -> int:
        """Cancel every queued and running run (shutdown). Returns how many."""
        return sum(self.cancel(t.user_id, t.run_id, reason) for t in self._scheduler.tickets())

    # -- introspection ------------------------------------------------------------------------

    def is_active(self, user_id: str, run_id: str) -> bool:
        return self._scheduler.get(user_id, run_id) is not None

    def user_count(self) -> int:
        """Users with bookkeeping (something queued or running)."""
        return self._scheduler.user_count()

    def running_count(self, user_id: str | None = None) -> int:
        if user_id is None:
            return self._scheduler.running_total
        return self._scheduler.running(user_id)

    def queued_count(self, user_id: str | None = None) -> int:
        return self._scheduler.queued(user_id)

    def stats(self) -> dict[str, Any]:
        return {
            "users": self._scheduler.user_count(),
            "running": self._scheduler.running_total,
            "queued": self._scheduler.queued(),
        }

    # -- admission internals ------------------------------------------------------------------

    def _pump(self) -> None:
        """Admit waiting runs while there is room (the scheduler picks which)."""
        while (ticket := self._scheduler.next()) is not None:
            lease = self._leases[ticket.run_id]
            if not lease.admitted.done():
                lease.admitted.set_result(None)

    def _release(self, lease: _Lease) -> None:
        """Give back the run's slot and forget it; idempotent."""
        if self._leases.get(lease.ticket.run_id) is not lease:
            return
        del self._leases[lease.ticket.run_id]
        self._scheduler.remove(lease.ticket)
        if not lease.admitted.done():
            lease.admitted.cancel()
        self._pump()


__all__ = ["EngineLease", "ExecutionEngineFactory", "Limits"]
