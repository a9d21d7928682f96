"""Admission and fairness, written once: which waiting run executes next.

The rule: a run may start when its user has fewer than ``max_running_per_user`` runs executing,
no earlier run of its thread is unfinished, and the process (or, in a cluster, the claiming
worker) has a free slot. Each free slot goes to the waiting user with the fewest runs executing;
among equals, users take turns in ring order (a user just served goes to the back). So one
user's backlog never delays another user's first run.

:class:`Scheduler` is pure bookkeeping — no I/O, no awaiting — used by the in-process run queue
and the engine factory, and by the cluster's claim, which loads a snapshot of the database's
queued and running runs into a fresh scheduler and asks it for the next runs.
"""

from __future__ import annotations

import contextlib
import enum
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from corral.errors import AdmissionError, IllegalTransition, QueueFullError


@dataclass(frozen=True, slots=True)
class Limits:
    max_running_per_user: int = 4
    max_queued_per_user: int = 100
    max_running_total: int = 256
    run_timeout_s: float = 300.0
    tool_timeout_s: float = 60.0
    input_timeout_s: float = 3600.0  # how long ctx.ask waits for an answer by default


class TicketState(enum.Enum):
    QUEUED = "queued"  # waiting for a first slot
    RUNNING = "running"  # holds a slot
    SUSPENDED = "suspended"  # waiting for its user's input: no slot, thread still busy
    RESUMING = "resuming"  # answered; waiting for a slot again (ahead of queued runs)
    DONE = "done"


@dataclass(eq=False, slots=True)
class Ticket:
    """One run's place in admission."""

    user_id: str
    thread_id: str
    run_id: str
    state: TicketState = TicketState.QUEUED


@dataclass(slots=True)
class _User:
    """A user with something queued, running or suspended; dropped when idle."""

    tickets: dict[str, Ticket] = field(default_factory=dict)  # run_id -> ticket
    waiting: deque[Ticket] = field(default_factory=deque)  # QUEUED and RESUMING, in order
    running: int = 0
    busy_threads: dict[str, int] = field(default_factory=dict)  # thread -> runs holding it


class Scheduler:
    """Tickets of waiting, running and suspended runs, and the choice of the next to start.

    Not thread-safe and never awaits: call it from one event loop. Per-user bookkeeping exists
    only while a user has a ticket, so memory follows the work in progress.
    """

    def __init__(self, limits: Limits, *, capacity: int | None = None) -> None:
        self.limits = limits
        self.capacity = limits.max_running_total if capacity is None else capacity
        self._users: dict[str, _User] = {}
        self._ring: deque[str] = deque()  # users with waiting tickets, in turn order
        self._running_total = 0

    # -- adding and removing -------------------------------------------------------------------

    def add(self, ticket: Ticket, *, check_queue: bool = True) -> None:
        """Queue ``ticket``. Raises :class:`QueueFullError` when the user's queue is full and
        :class:`AdmissionError` when the run is already known."""
        user = self._users.get(ticket.user_id)
        if user is not None:
            if ticket.run_id in user.tickets:
                raise AdmissionError(f"run {ticket.run_id} is already active")
            queued = sum(1 for t in user.waiting if t.state is TicketState.QUEUED)
            if check_queue and queued >= self.limits.max_queued_per_user:
                raise QueueFullError(ticket.user_id, self.limits.max_queued_per_user)
        else:
            user = self._users[ticket.user_id] = _User()
        ticket.state = TicketState.QUEUED
        user.tickets[ticket.run_id] = ticket
        self._enqueue(ticket.user_id, user, ticket)

    def add_running(self, user_id: str, thread_id: str, *, count: int = 1) -> None:
        """Record runs that hold slots elsewhere (a cluster snapshot): they count toward the
        user's limit and keep their thread busy, but this scheduler never releases them."""
        user = self._users.setdefault(user_id, _User())
        user.running += count
        user.busy_threads[thread_id] = user.busy_threads.get(thread_id, 0) + count

    def add_busy_thread(self, user_id: str, thread_id: str) -> None:
        """Record a thread held by a suspended run elsewhere (a cluster snapshot)."""
        user = self._users.setdefault(user_id, _User())
        user.busy_threads[thread_id] = user.busy_threads.get(thread_id, 0) + 1

    def get(self, user_id: str, run_id: str) -> Ticket | None:
        user = self._users.get(user_id)
        return None if user is None else user.tickets.get(run_id)

    def remove(self, ticket: Ticket) -> None:
        """Forget ``ticket`` whatever its state, giving back its slot; idempotent."""
        user = self._users.get(ticket.user_id)
        if user is None or user.tickets.get(ticket.run_id) is not ticket:
            return
        del user.tickets[ticket.run_id]
        if ticket.state is TicketState.RUNNING:
            user.running -= 1
            self._running_total -= 1
            self._free_thread(user, ticket.thread_id)
        elif ticket.state is TicketState.SUSPENDED:
            self._free_thread(user, ticket.thread_id)
        elif ticket.state is TicketState.RESUMING:
            self._free_thread(user, ticket.thread_id)
            self._withdraw(ticket.user_id, user, ticket)
        elif ticket.state is TicketState.QUEUED:
            self._withdraw(ticket.user_id, user, ticket)
        ticket.state = TicketState.DONE
        if not user.tickets and not user.running and not user.busy_threads:
            del self._users[ticket.user_id]

    # -- waiting for input ---------------------------------------------------------------------

    def suspend(self, ticket: Ticket) -> None:
        """A running run waits for its user: it gives back its slot, keeps its thread."""
        if ticket.state is not TicketState.RUNNING:
            raise IllegalTransition("suspend", TicketState.RUNNING.value, ticket.state.value)
        user = self._users[ticket.user_id]
        user.running -= 1
        self._running_total -= 1
        ticket.state = TicketState.SUSPENDED

    def resume(self, ticket: Ticket) -> None:
        """A suspended run was answered: it waits for a slot, ahead of the user's queued runs."""
        if ticket.state is not TicketState.SUSPENDED:
            raise IllegalTransition("resume", TicketState.SUSPENDED.value, ticket.state.value)
        user = self._users[ticket.user_id]
        ticket.state = TicketState.RESUMING
        user.waiting.appendleft(ticket)
        if len(user.waiting) == 1:
            self._ring.append(ticket.user_id)

    # -- choosing --------------------------------------------------------------------------------

    def next(self) -> Ticket | None:
        """The next ticket to run (now RUNNING), or None when nothing may start."""
        while self._ring and self._running_total < self.capacity:
            picked = self._pick()
            if picked is None:
                return None
            user_id, user, ticket = picked
            self._withdraw(user_id, user, ticket)
            if user.waiting:  # still waiting: to the back of the ring
                with contextlib.suppress(ValueError):
                    self._ring.remove(user_id)
                self._ring.append(user_id)
            if ticket.state is TicketState.QUEUED:
                user.busy_threads[ticket.thread_id] = user.busy_threads.get(ticket.thread_id, 0) + 1
            ticket.state = TicketState.RUNNING
            user.running += 1
            self._running_total += 1
            return ticket
        return None

    def take(self, limit: int) -> list[Ticket]:
        """Up to ``limit`` tickets, each chosen as :meth:`next` would."""
        out: list[Ticket] = []
        while len(out) < limit and (ticket := self.next()) is not None:
            out.append(ticket)
        return out

    # -- introspection -------------------------------------------------------------------------

    @property
    def running_total(self) -> int:
        return self._running_total

    def running(self, user_id: str) -> int:
        user = self._users.get(user_id)
        return 0 if user is None else user.running

    def queued(self, user_id: str | None = None) -> int:
        users: Iterable[_User] = (
            self._users.values() if user_id is None else filter(None, [self._users.get(user_id)])
        )
        return sum(1 for u in users for t in u.waiting if t.state is TicketState.QUEUED)

    def user_count(self) -> int:
        return len(self._users)

    def tickets(self) -> list[Ticket]:
        return [t for u in self._users.values() for t in u.tickets.values()]

    # -- internals -----------------------------------------------------------------------------

    def _enqueue(self, user_id: str, user: _User, ticket: Ticket) -> None:
        user.waiting.append(ticket)
        if len(user.waiting) == 1:
            self._ring.append(user_id)

    def _pick(self) -> tuple[str, _User, Ticket] | None:
        """The admissible ticket of the waiting user with the fewest running (ring order)."""
        best: tuple[str, _User, Ticket] | None = None
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

    def _next_admissible(self, user: _User) -> Ticket | None:
        if user.running >= self.limits.max_running_per_user:
            return None
        blocked: set[str] = set()
        for ticket in user.waiting:
            if ticket.state is TicketState.RESUMING:
                return ticket  # it holds its thread already
            thread = ticket.thread_id
            if thread in user.busy_threads or thread in blocked:
                blocked.add(thread)
                continue
            return ticket
        return None

    def _withdraw(self, user_id: str, user: _User, ticket: Ticket) -> None:
        with contextlib.suppress(ValueError):
            user.waiting.remove(ticket)
        if not user.waiting:
            with contextlib.suppress(ValueError):
                self._ring.remove(user_id)

    @staticmethod
    def _free_thread(user: _User, thread_id: str) -> None:
        left = user.busy_threads.get(thread_id, 0) - 1
        if left > 0:
            user.busy_threads[thread_id] = left
        else:
            user.busy_threads.pop(thread_id, None)
