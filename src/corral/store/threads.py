"""Write operations on threads (contract §10): create, update, delete, and the retention sweep.

Deleting removes a thread with its runs, their events and the idempotency keys that point at
them, in one transaction — and only when none of its runs is unfinished (the caller cancels
them first), so that no process is left writing events of a run whose row is gone.
"""

from __future__ import annotations

from typing import Any

from corral.core.events import Event, dumps, now_ts
from corral.errors import NOT_FOUND_THREAD, NotFound
from corral.store import statements as S
from corral.store.ops import Op, lock_user
from corral.store.records import ThreadRecord
from corral.store.sql import Q, Sql

_UPDATE_TITLE = Q("UPDATE threads SET title = :title WHERE thread_id = :thread_id")
_UPDATE_METADATA = Q("UPDATE threads SET metadata = :metadata WHERE thread_id = :thread_id")
_UNFINISHED = Q(
    "SELECT run_id FROM runs WHERE thread_id = :thread_id AND user_id = :user_id "
    f"AND status IN {S.UNFINISHED_STATUSES} ORDER BY id"
)
_DELETE_KEYS = Q(
    "DELETE FROM idempotency_keys WHERE user_id = :user_id AND run_id IN "
    "(SELECT run_id FROM runs WHERE thread_id = :thread_id)"
)
_DELETE_EVENTS = Q(
    "DELETE FROM events WHERE run_id IN (SELECT run_id FROM runs WHERE thread_id = :thread_id)"
)
_DELETE_RUNS = Q("DELETE FROM runs WHERE thread_id = :thread_id")
_DELETE_THREAD = Q("DELETE FROM threads WHERE thread_id = :thread_id")
# Idle: updated (made, or a run of it created or finished) before the cutoff, nothing unfinished.
_IDLE = Q(
    "SELECT t.thread_id, t.user_id FROM threads t WHERE t.updated_at < :cutoff "
    "AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.thread_id = t.thread_id "
    f"AND r.status IN {S.UNFINISHED_STATUSES}) ORDER BY t.updated_at LIMIT :limit"
)
_STILL_IDLE = Q(
    "SELECT 1 FROM threads t WHERE t.thread_id = :thread_id AND t.updated_at < :cutoff "
    "AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.thread_id = t.thread_id "
    f"AND r.status IN {S.UNFINISHED_STATUSES})"
)


class CreateThread(Op[ThreadRecord]):
    """A new, empty thread of ``user_id`` (its id made by the caller)."""

    __slots__ = ("metadata", "thread_id", "title", "user_id")

    def __init__(
        self, user_id: str, thread_id: str, title: str | None, metadata: dict[str, Any]
    ) -> None:
        self.user_id = user_id
        self.thread_id = thread_id
        self.title = title
        self.metadata = metadata

    def apply(self, sql: Sql, emitted: list[Event]) -> ThreadRecord:
        ts = now_ts()
        sql.execute(
            S.INSERT_THREAD,
            {
                "thread_id": self.thread_id,
                "user_id": self.user_id,
                "ts": ts,
                "title": self.title,
                "metadata": dumps(self.metadata).decode(),
            },
        )
        return ThreadRecord(self.thread_id, self.user_id, self.title, self.metadata, {}, ts, ts)


class UpdateThread(Op[ThreadRecord]):
    """Change the caller's thread's title and/or metadata (``changes`` holds what to change);
    :class:`NotFound` for a thread that is not theirs."""

    __slots__ = ("changes", "thread_id", "user_id")

    def __init__(self, user_id: str, thread_id: str, changes: dict[str, Any]) -> None:
        self.user_id = user_id
        self.thread_id = thread_id
        self.changes = changes

    def apply(self, sql: Sql, emitted: list[Event]) -> ThreadRecord:
        if sql.value(S.THREAD_OWNER, {"thread_id": self.thread_id}) != self.user_id:
            raise NotFound(NOT_FOUND_THREAD)
        if "title" in self.changes:
            sql.execute(
                _UPDATE_TITLE, {"thread_id": self.thread_id, "title": self.changes["title"]}
            )
        if "metadata" in self.changes:
            metadata = dumps(self.changes["metadata"]).decode()
            sql.execute(_UPDATE_METADATA, {"thread_id": self.thread_id, "metadata": metadata})
        row = sql.one(S.GET_THREAD, {"thread_id": self.thread_id, "user_id": self.user_id})
        assert row is not None
        return ThreadRecord.from_row(row)


def delete_thread(sql: Sql, user_id: str, thread_id: str) -> None:
    """Remove the thread, its runs, their events and idempotency keys (no unfinished run)."""
    params = {"thread_id": thread_id, "user_id": user_id}
    sql.execute(_DELETE_KEYS, params)
    sql.execute(_DELETE_EVENTS, params)
    sql.execute(_DELETE_RUNS, params)
    sql.execute(_DELETE_THREAD, params)


class DeleteThread(Op[list[str]]):
    """Delete the caller's thread with everything in it, if none of its runs is unfinished.

    Returns the unfinished runs' ids instead (nothing deleted: cancel them and try again), or
    ``[]`` once deleted. :class:`NotFound` for a thread that is not theirs.
    """

    __slots__ = ("thread_id", "user_id")

    def __init__(self, user_id: str, thread_id: str) -> None:
        self.user_id = user_id
        self.thread_id = thread_id

    def apply(self, sql: Sql, emitted: list[Event]) -> list[str]:
        # Serialized with the user's run creation: no run can join the thread meanwhile.
        lock_user(sql, self.user_id)
        if sql.value(S.THREAD_OWNER, {"thread_id": self.thread_id}) != self.user_id:
            raise NotFound(NOT_FOUND_THREAD)
        unfinished = sql.all(_UNFINISHED, {"thread_id": self.thread_id, "user_id": self.user_id})
        if unfinished:
            return [row[0] for row in unfinished]
        delete_thread(sql, self.user_id, self.thread_id)
        return []


class SweepIdleThreads(Op[int]):
    """Delete up to ``limit`` threads idle since before ``cutoff`` (an event timestamp), with
    their runs and events (``CORRAL_RETENTION_DAYS``). Returns how many were deleted."""

    __slots__ = ("cutoff", "limit")

    def __init__(self, cutoff: str, limit: int = 500) -> None:
        self.cutoff = cutoff
        self.limit = limit

    def apply(self, sql: Sql, emitted: list[Event]) -> int:
        idle = sql.all(_IDLE, {"cutoff": self.cutoff, "limit": self.limit})
        # Each owner's lock (in one order, so that two sweeping nodes cannot deadlock), then
        # the check again: a run may have joined the thread since it was picked.
        for user_id in sorted({user_id for _thread_id, user_id in idle}):
            lock_user(sql, user_id)
        deleted = 0
        for thread_id, user_id in idle:
            if sql.one(_STILL_IDLE, {"thread_id": thread_id, "cutoff": self.cutoff}) is not None:
                delete_thread(sql, user_id, thread_id)
                deleted += 1
        return deleted
