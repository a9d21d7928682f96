"""Threads bound to an id from outside corral (an AG-UI ``threadId``), one binding per user.

The first run under an outside id makes a new thread that remembers it
(``threads.external_id``); later runs under the same id continue that thread. Two users who
happen to use the same id get two threads: the lookup is always by ``(user_id, external_id)``.
"""

from __future__ import annotations

from corral.core.events import Event, now_ts
from corral.store import statements as S
from corral.store.ops import Op, lock_user
from corral.store.sql import Sql

MAX_EXTERNAL_ID = 256  # the column's width


class BindThread(Op[str]):
    """The caller's thread bound to ``external_id``; a new one (``new_thread_id``) the first
    time. Serialized per user (one SQLite writer; a PostgreSQL advisory lock per user), so
    concurrent first uses of one id make one thread."""

    __slots__ = ("external_id", "new_thread_id", "user_id")

    def __init__(self, user_id: str, external_id: str, new_thread_id: str) -> None:
        self.user_id = user_id
        self.external_id = external_id
        self.new_thread_id = new_thread_id

    def apply(self, sql: Sql, emitted: list[Event]) -> str:
        lock_user(sql, self.user_id)
        params = {"user_id": self.user_id, "external_id": self.external_id}
        found = sql.value(S.THREAD_BY_EXTERNAL_ID, params)
        if found is not None:
            return str(found)
        sql.execute(
            S.INSERT_BOUND_THREAD,
            {**params, "thread_id": self.new_thread_id, "ts": now_ts()},
        )
        return self.new_thread_id


def external_id_of(sql: Sql, user_id: str, thread_id: str) -> str | None:
    """The outside id the caller's thread is bound to, or None (also for another's thread)."""
    value = sql.value(S.EXTERNAL_ID_OF_THREAD, {"thread_id": thread_id, "user_id": user_id})
    return None if value is None else str(value)
