"""Admission and engines: per-user limits, fair sharing of the global limit, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from corral.core.context import UserExecutionContext
from corral.core.engine import EventSink, IsolatedExecutionEngine, ThreadHistory
from corral.core.registry import AgentRegistry
from corral.errors import AdmissionError, QueueFullError

log = logging.getLogger("corral.factory")


@dataclass(frozen=True, slots=True)
class Limits:
    max_running_per_user: int = 4
    max_queued_per_user: int = 100
    max_running_total: int = 256
    run_timeout_s: float = 300.0
    tool_timeout_s: float = 60.0


@dataclass(eq=False, slots=True)
class _Ticket:
    """One run's place in admission; lives from ``engine_for`` until its lease closes."""

    engine: IsolatedExecutionEngine
    admitted: asyncio.Future[None]
    running: bool = False


@dataclass(slots=True)
class _UserState:
    """Bookkeeping for one user with something queued or running; dropped when idle."""

    tickets: dict[str, _Ticket] = field(default_factory=dict)  # run_id -> ticket
    waiting: deque[_Ticket] = field(default_factory=deque)
    running: int = 0
    busy_threads: set[str] = field(default_factory=set)


class EngineLease:
    """``async with`` it to wait for admission and get the run's engine; leaving releases it.

    Entering waits until the user's and the server's limits admit the run, or until the run
    is cancelled while queued (the engine is then yielded already cancelled, and its ``run``
    emits only ``agent_cancelled``). Cancelling the entering task withdraws the run.
    """

    __slots__ = ("_factory", "_ticket")

    def __init__(self, factory: ExecutionEngineFactory, ticket: _Ticket) -> None:
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

    Admission: at most ``max_running_per_user`` runs of a user execute at once and at most
    ``max_queued_per_user`` wait; each of the ``max_running_total`` slots goes to the waiting
    user with the fewest runs executing (round-robin among equals), so one user's backlog
    never delays another user's first run. Runs of
    one thread execute one after another, in submission order. Per-user bookkeeping exists
    only while the user has a run queued or running. All methods run on the event loop's
    thread; none of them blocks.
    """

    def __init__(
        self,
        registry: AgentRegistry,
        limits: Limits | None = None,
        *,
        history_limit: int = 256,
        history_loader: ThreadHistory | None = None,
    ) -> None:
        self.registry = registry
        self.limits = limits or Limits()
        self._history_limit = history_limit
        self._history_loader = history_loader
        self._users: dict[str, _UserState] = {}
        self._ring: deque[str] = deque()  # users with waiting runs, in round-robin order
        self._running_total = 0

    # -- making engines -----------------------------------------------------------------------

    def engine_for(
        self,
        context: UserExecutionContext,
        sink: EventSink,
        *,
        timeout_s: float | None = None,
    ) -> EngineLease:
        """Reserve a place for ``context``'s run and return its lease (see :class:`EngineLease`).

        Raises :class:`QueueFullError` at once when the user's queue is full, and
        :class:`AdmissionError` when the run id is already active.
        """
        user = self._users.get(context.user_id)
        if user is not None:
            if context.run_id in user.tickets:
                raise AdmissionError(f"run {context.run_id} is already active")
            if len(user.waiting) >= self.limits.max_queued_per_user:
                raise QueueFullError(context.user_id, self.limits.max_queued_per_user)
        else:
            user = self._users[context.user_id] = _UserState()
        engine = IsolatedExecutionEngine(
            context,
            self.registry,
            sink,
            timeout_s=timeout_s,
            default_timeout_s=self.limits.run_timeout_s,
            tool_timeout_s=self.limits.tool_timeout_s,
            history_limit=self._history_limit,
            history_loader=self._history_loader,
        )
        ticket = _Ticket(engine, asyncio.get_running_loop().create_future())
        user.tickets[context.run_id] = ticket
        user.waiting.append(ticket)
        if len(user.waiting) == 1:
            self._ring.append(context.user_id)
        self._pump()
        return EngineLease(self, ticket)

    # -- cancellation -------------------------------------------------------------------------

    def cancel(self, user_id: str, run_id: str, reason: str = "cancelled by the user") -> bool:
        """Cancel ``run_id`` if ``user_id`` owns it and it is queued or running.

        Returns False for a run that is unknown *or belongs to someone else* (the caller cannot
        tell which). A queued run leaves the queue at once.
        """
        user = self._users.get(user_id)
        ticket = user.tickets.get(run_id) if user is not None else None
        if ticket is None or user is None:
            return False
        ticket.engine.cancel(reason)
        if not ticket.running and not ticket.admitted.done():
            self._withdraw(user_id, user, ticket)
            ticket.admitted.set_result(None)  # enter now; the engine only emits the terminal
        return True

    def cancel_all(self, reason: str) -> int:
        """Cancel every queued and running run (shutdown). Returns how many."""
        count = 0
        for user_id, user in list(self._users.items()):
            for run_id in list(user.tickets):
                count += self.cancel(user_id, run_id, reason)
        return count

    # -- introspection ------------------------------------------------------------------------

    def is_active(self, user_id: str, run_id: str) -> bool:
        user = self._users.get(user_id)
        return user is not None and run_id in user.tickets

    def user_count(self) -> int:
        """Users with bookkeeping (something queued or running)."""
        return len(self._users)

    def running_count(self, user_id: str | None = None) -> int:
        if user_id is None:
            return self._running_total
        user = self._users.get(user_id)
        return 0 if user is None else user.running

    def queued_count(self, user_id: str | None = None) -> int:
        if user_id is None:
            return sum(len(u.waiting) for u in self._users.values())
        user = self._users.get(user_id)
        return 0 if user is None else len(user.waiting)

    def stats(self) -> dict[str, Any]:
        return {
            "users": len(self._users),
            "running": self._running_total,
            "queued": self.queued_count(),
        }

    # -- admission internals ------------------------------------------------------------------

    def _pump(self) -> None:
        """Admit waiting runs while there is room.

        Each free slot goes to the waiting user with the fewest runs executing; ties go in ring
        order and the served user moves to the back. A plain rotation is not enough: a slot
        freed by a user with a backlog would go to that user's next run whenever it happened
        to be at the front of the ring, ahead of another user's first run.
        """
        limits = self.limits
        while self._ring and self._running_total < limits.max_running_total:
            picked = self._pick()
            if picked is None:
                return
            user_id, user, ticket = picked
            self._withdraw(user_id, user, ticket)
            if user.waiting:  # still waiting: to the back of the ring
                self._ring.remove(user_id)
                self._ring.append(user_id)
            ticket.running = True
            user.running += 1
            user.busy_threads.add(ticket.engine.context.thread_id)
            self._running_total += 1
            ticket.admitted.set_result(None)

    def _pick(self) -> tuple[str, _UserState, _Ticket] | None:
        """The admissible run of the waiting user with the fewest running runs (ring order)."""
        best: tuple[str, _UserState, _Ticket] | None = None
        for user_id in self._ring:
            user = self._users[user_id]
            if best is not None and user.running >= best[1].running:
                continue
            ticket = self._next_admissible(user)
            if ticket is None:
                continue
            best = (user_id, user, ticket)
            if user.running == 0:  # nobody can have fewer
                break
        return best

    def _next_admissible(self, user: _UserState) -> _Ticket | None:
        if user.running >= self.limits.max_running_per_user:
            return None
        blocked: set[str] = set()
        for ticket in user.waiting:
            thread = ticket.engine.context.thread_id
            if thread in user.busy_threads or thread in blocked:
                blocked.add(thread)
                continue
            return ticket
        return None

    def _withdraw(self, user_id: str, user: _UserState, ticket: _Ticket) -> None:
        user.waiting.remove(ticket)
        if not user.waiting:
            with contextlib.suppress(ValueError):
                self._ring.remove(user_id)

    def _release(self, ticket: _Ticket) -> None:
        """Give back the run's slot and forget it; idempotent."""
        context = ticket.engine.context
        user = self._users.get(context.user_id)
        if user is None or user.tickets.get(context.run_id) is not ticket:
            return
        del user.tickets[context.run_id]
        if ticket.running:
            ticket.running = False
            user.running -= 1
            user.busy_threads.discard(context.thread_id)
            self._running_total -= 1
        elif ticket in user.waiting:
            self._withdraw(context.user_id, user, ticket)
        if not ticket.admitted.done():
            ticket.admitted.cancel()
        if not user.tickets:
            del self._users[context.user_id]
        self._pump()
