"""Write operations: each runs inside the writer's batch transaction (see :mod:`.writer`).

An operation's ``apply`` gets the batch's :class:`~corral.store.sql.Sql` and a list to append
the events it writes to (they are published after the commit, like engine events). It may raise
a :class:`~corral.errors.RequestError` — a refusal for its caller — only *before* its first
write: the batch goes on without it. Anything else it raises aborts the batch, which is then
retried one operation per transaction so that only the broken one fails.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from corral.core.events import Event, EventType, RunStatus, dumps, loads, now_ts, terminal_status
from corral.errors import NOT_FOUND_THREAD, Conflict, NotFound, QueueFullError
from corral.store import statements as S
from corral.store.records import RunRecord
from corral.store.sql import Sql

T = TypeVar("T")

IDEMPOTENCY_TTL_S = 24 * 3600
IDEMPOTENCY_CONFLICT = "this idempotency key was used with a different request; use a new key"


class Op(Generic[T]):
    """One write operation; subclasses implement :meth:`apply`."""

    def apply(self, sql: Sql, emitted: list[Event]) -> T:
        raise NotImplementedError


def lock_user(sql: Sql, user_id: str) -> None:
    """PostgreSQL: serialize this transaction with others of the same user, across processes
    (a user's queue limit, idempotency keys, claims). SQLite has one writer: nothing to do."""
    if sql.dialect == "postgresql":
        sql.value(S.LOCK_USER, {"key": user_lock_key(user_id)})


def user_lock_key(user_id: str) -> int:
    """A stable 63-bit advisory-lock key for one user (the same in every process)."""
    return int.from_bytes(hashlib.blake2b(user_id.encode(), digest_size=8).digest(), "big") >> 1


# -- creating runs ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewRun:
    run_id: str
    user_id: str
    thread_id: str
    agent: str
    input: Any
    new_thread: bool
    timeout_s: float | None
    max_queued: int
    idempotency: tuple[str, str] | None = None  # (key, request hash)
    identity: dict[str, Any] | None = None
    trace: str | None = None
    attempt: int = 0


def find_idempotent(sql: Sql, user_id: str, key: str, request_hash: str) -> RunRecord | None:
    """The run an earlier request with this key made (within 24 h), or None; a different
    request with the same key is a :class:`Conflict`."""
    row = sql.one(S.IDEMPOTENCY_GET, {"user_id": user_id, "key": key})
    if row is None or float(row[2]) < time.time() - IDEMPOTENCY_TTL_S:
        return None
    if row[0] != request_hash:
        raise Conflict(IDEMPOTENCY_CONFLICT)
    found = sql.one(S.GET_RUN, {"run_id": row[1], "user_id": user_id})
    return None if found is None else RunRecord.from_row(found)


class CreateRun(Op[tuple[RunRecord, bool]]):
    """Insert a queued run (and its thread when new); returns (run, created).

    Refusals, decided before anything is written: an idempotency key seen before returns the
    earlier run (created False) or is a :class:`Conflict`; a thread that is not the caller's is
    :class:`NotFound`; a full queue is :class:`QueueFullError`.
    """

    __slots__ = ("new",)

    def __init__(self, new: NewRun) -> None:
        self.new = new

    def apply(self, sql: Sql, emitted: list[Event]) -> tuple[RunRecord, bool]:
        new = self.new
        lock_user(sql, new.user_id)
        if new.idempotency is not None:
            earlier = find_idempotent(sql, new.user_id, *new.idempotency)
            if earlier is not None:
                return earlier, False
        if not new.new_thread:
            owner = sql.value(S.THREAD_OWNER, {"thread_id": new.thread_id})
            if owner != new.user_id:
                raise NotFound(NOT_FOUND_THREAD)
        if sql.value(S.COUNT_QUEUED, {"user_id": new.user_id}) >= new.max_queued:
            raise QueueFullError(new.user_id, new.max_queued)
        ts = now_ts()
        if new.new_thread:
            sql.execute(
                S.INSERT_THREAD,
                {
                    "thread_id": new.thread_id,
                    "user_id": new.user_id,
                    "ts": ts,
                    "title": None,
                    "metadata": None,
                },
            )
        else:
            sql.execute(S.TOUCH_THREAD, {"thread_id": new.thread_id, "ts": ts})
        input_json = dumps(new.input).decode()
        identity_json = None if new.identity is None else dumps(new.identity).decode()
        row_id = sql.value(
            S.INSERT_RUN,
            {
                "run_id": new.run_id,
                "user_id": new.user_id,
                "thread_id": new.thread_id,
                "agent": new.agent,
                "input": input_json,
                "created_at": ts,
                "timeout_s": new.timeout_s,
                "attempt": new.attempt,
                "identity": identity_json,
                "trace": new.trace,
            },
        )
        if new.idempotency is not None:
            key, request_hash = new.idempotency
            sql.execute(S.IDEMPOTENCY_DELETE, {"user_id": new.user_id, "key": key})  # expired
            sql.execute(
                S.IDEMPOTENCY_INSERT,
                {
                    "user_id": new.user_id,
                    "key": key,
                    "request_hash": request_hash,
                    "run_id": new.run_id,
                    "created_at": time.time(),
                },
            )
        record = RunRecord(
            run_id=new.run_id,
            user_id=new.user_id,
            thread_id=new.thread_id,
            agent=new.agent,
            status=RunStatus.QUEUED.value,
            input=loads(input_json),
            output=None,
            error=None,
            created_at=ts,
            started_at=None,
            finished_at=None,
            last_seq=0,
            timeout_s=new.timeout_s,
            attempt=new.attempt,
            identity=new.identity,
            trace=new.trace,
            row_id=int(row_id),
            new_thread=new.new_thread,
        )
        return record, True


class PurgeIdempotencyKeys(Op[int]):
    def apply(self, sql: Sql, emitted: list[Event]) -> int:
        return sql.execute(S.IDEMPOTENCY_PURGE, {"cutoff": time.time() - IDEMPOTENCY_TTL_S})


# -- ending runs that are not executing -------------------------------------------------------


class CancelQueued(Op["Event | None"]):
    """End the caller's run if it is still queued (nobody executes it): its only event is
    ``agent_cancelled``. Returns that event, or None when the run is not queued (or not theirs)."""

    __slots__ = ("reason", "run_id", "user_id")

    def __init__(self, user_id: str, run_id: str, reason: str) -> None:
        self.user_id = user_id
        self.run_id = run_id
        self.reason = reason

    def apply(self, sql: Sql, emitted: list[Event]) -> Event | None:
        ts = now_ts()
        error = dumps({"type": "cancelled", "message": self.reason}).decode()
        row = sql.one(
            S.CANCEL_QUEUED,
            {"run_id": self.run_id, "user_id": self.user_id, "error": error, "ts": ts},
        )
        if row is None:
            return None
        thread_id, seq, agent = row[0], int(row[1]), row[2]
        event = Event(
            type=EventType.AGENT_CANCELLED,
            run_id=self.run_id,
            thread_id=thread_id,
            seq=seq,
            data={"reason": self.reason},
            user_id=self.user_id,
            ts=ts,
            agent=agent,
        )
        insert_events(sql, [event])
        sql.execute(S.TOUCH_THREAD, {"thread_id": thread_id, "ts": ts})
        emitted.append(event)
        return event


class InterruptUnfinished(Op[int]):
    """End every queued, running or waiting run as ``interrupted`` (a single node's start and
    stop: nothing else can be executing them). Returns how many."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def apply(self, sql: Sql, emitted: list[Event]) -> int:
        rows = [RunRecord.from_row(r) for r in sql.all(S.UNFINISHED_RUNS)]
        for run in rows:
            emitted.extend(interrupt(sql, run, self.message))
        return len(rows)


def interrupt(sql: Sql, run: RunRecord, message: str) -> list[Event]:
    """End ``run`` as ``interrupted``: first a ``tool_completed`` (status error) for each tool
    call left open, so every ``tool_executing`` keeps its pair, then the terminal
    ``agent_error``. Returns the events written (none if the run moved on meanwhile)."""
    open_calls: dict[str, str] = {}
    for (body,) in sql.all(S.TOOL_EVENTS, {"run_id": run.run_id}):
        doc = loads(body)
        call_id = doc["data"].get("call_id", "")
        if doc["type"] == "tool_executing":
            open_calls[call_id] = doc["data"].get("tool", "")
        else:
            open_calls.pop(call_id, None)
    error = {"type": "interrupted", "message": message}
    ts = now_ts()
    events: list[Event] = []
    seq = run.last_seq
    for call_id, tool in open_calls.items():
        seq += 1
        data = {"call_id": call_id, "tool": tool, "status": "error", "error": error}
        events.append(
            Event(
                type=EventType.TOOL_COMPLETED,
                run_id=run.run_id,
                thread_id=run.thread_id,
                seq=seq,
                user_id=run.user_id,
                data={**data, "duration_ms": 0},
                ts=ts,
                agent=run.agent,
            )
        )
    # A run that never started gets only this terminal event (seq 1).
    terminal = Event(
        type=EventType.AGENT_ERROR,
        run_id=run.run_id,
        thread_id=run.thread_id,
        seq=seq + 1,
        data={"error": error, "duration_ms": 0},
        user_id=run.user_id,
        ts=ts,
        agent=run.agent,
    )
    events.append(terminal)
    changed = sql.execute(
        S.INTERRUPT_RUN,
        {
            "run_id": run.run_id,
            "error": dumps(error).decode(),
            "ts": ts,
            "seq": terminal.seq,
            "previous_seq": run.last_seq,
        },
    )
    if changed != 1:
        return []
    insert_events(sql, events)
    sql.execute(S.TOUCH_THREAD, {"thread_id": run.thread_id, "ts": ts})
    return events


# -- events -------------------------------------------------------------------------------------


def insert_events(sql: Sql, events: Sequence[Event]) -> None:
    sql.many(
        S.INSERT_EVENT,
        (
            {"run_id": e.run_id, "seq": e.seq, "type": e.type.value, "body": e.to_json().decode()}
            for e in events
        ),
    )


def finish_params(ev: Event) -> dict[str, Any]:
    """The run row's columns a terminal event sets."""
    status = terminal_status_of(ev)
    output = ev.data.get("output") if ev.type is EventType.AGENT_COMPLETED else None
    error = ev.data.get("error")
    if ev.type is EventType.AGENT_CANCELLED:
        error = {"type": "cancelled", "message": str(ev.data.get("reason", ""))}
    return {
        "run_id": ev.run_id,
        "status": status,
        "output": None if output is None else dumps(output).decode(),
        "error": None if error is None else dumps(error).decode(),
        "ts": ev.ts,
    }


def terminal_status_of(ev: Event) -> str:
    return terminal_status(ev.type, ev.data).value
