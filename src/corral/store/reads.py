"""Reads: every query names its owner, and another user's row reads like a missing one."""

from __future__ import annotations

from typing import Any

from corral.core.events import RunStatus, loads
from corral.store import statements as S
from corral.store.database import Database
from corral.store.inputs import OpenInput, read_open_input
from corral.store.records import RunRecord, ThreadRecord, encode_row_cursor, encode_thread_cursor
from corral.store.sql import Sql


def _storable(value: str | None) -> bool:
    """False for a value no stored id can equal: PostgreSQL text cannot hold NUL, and asking
    it to compare one fails the query where the answer is simply "nothing"."""
    return value is None or "\x00" not in value


class Reads:
    """Owner-scoped reads on one :class:`Database` (safe from any task, concurrently)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_run(self, user_id: str, run_id: str) -> RunRecord | None:
        """The run if ``user_id`` owns it; None for a missing run *and* for another's."""
        if not _storable(run_id):
            return None

        def read(sql: Sql) -> RunRecord | None:
            row = sql.one(S.GET_RUN, {"run_id": run_id, "user_id": user_id})
            return None if row is None else RunRecord.from_row(row)

        return await self.db.read(read)

    async def open_input(self, user_id: str, run_id: str) -> OpenInput | None:
        """The caller's run's question and answer state; None for a missing run or another's."""
        if not _storable(run_id):
            return None
        return await self.db.read(lambda sql: read_open_input(sql, user_id, run_id))

    async def run_status(self, run_id: str) -> RunStatus | None:
        """Any run's status (internal: the caller checked ownership already)."""
        status = await self.db.read(lambda sql: sql.value(S.RUN_STATUS, {"run_id": run_id}))
        return None if status is None else RunStatus(status)

    async def list_runs(
        self,
        user_id: str,
        *,
        thread_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: int | None = None,
    ) -> tuple[list[RunRecord], str | None]:
        """A page of the caller's runs, newest first, and the next page's cursor (or None)."""
        if not _storable(thread_id):
            return [], None
        query = S.list_runs_query(
            thread=thread_id is not None, status=status is not None, cursor=cursor is not None
        )
        params = {
            "user_id": user_id,
            "thread_id": thread_id,
            "status": status,
            "cursor": cursor,
            "limit": limit + 1,
        }
        params = {k: v for k, v in params.items() if v is not None}
        rows = await self.db.read(lambda sql: sql.all(query, params))
        records = [RunRecord.from_row(r) for r in rows[:limit]]
        more = len(rows) > limit
        return records, encode_row_cursor(records[-1].row_id) if more and records else None

    async def unfinished_runs_of_thread(self, user_id: str, thread_id: str) -> list[str]:
        if not _storable(thread_id):
            return []
        rows = await self.db.read(
            lambda sql: sql.all(
                S.UNFINISHED_OF_THREAD, {"thread_id": thread_id, "user_id": user_id}
            )
        )
        return [r[0] for r in rows]

    async def thread_history(
        self, user_id: str, thread_id: str, before_run: str, limit: int = 50
    ) -> list[RunRecord]:
        """At most ``limit`` runs of the caller's thread made before ``before_run``: the latest
        ones, oldest first."""

        def read(sql: Sql) -> list[RunRecord]:
            anchor = sql.value(S.RUN_ROW_ID, {"run_id": before_run, "user_id": user_id})
            rows = sql.all(
                S.THREAD_HISTORY,
                {
                    "thread_id": thread_id,
                    "user_id": user_id,
                    "before": anchor if anchor is not None else 2**31 - 1,
                    "limit": limit,
                },
            )
            return [RunRecord.from_row(r) for r in reversed(rows)]

        return await self.db.read(read)

    async def events(
        self, user_id: str, run_id: str, *, after: int = 0, limit: int = 1000
    ) -> list[bytes] | None:
        """Stored events (wire JSON) of the caller's run, ``seq > after``; None if not theirs."""
        if not _storable(run_id):
            return None

        def read(sql: Sql) -> list[bytes] | None:
            if sql.value(S.RUN_OWNER, {"run_id": run_id}) != user_id:
                return None
            rows = sql.all(S.EVENTS_AFTER, {"run_id": run_id, "after": after, "limit": limit})
            return [body.encode() for (body,) in rows]

        return await self.db.read(read)

    # -- threads ----------------------------------------------------------------------------------

    async def get_thread(self, user_id: str, thread_id: str) -> ThreadRecord | None:
        """The thread if ``user_id`` owns it; None for a missing thread *and* for another's."""
        if not _storable(thread_id):
            return None

        def read(sql: Sql) -> ThreadRecord | None:
            row = sql.one(S.GET_THREAD, {"thread_id": thread_id, "user_id": user_id})
            return None if row is None else ThreadRecord.from_row(row)

        return await self.db.read(read)

    async def list_threads(
        self, user_id: str, *, limit: int = 50, cursor: tuple[str, str] | None = None
    ) -> tuple[list[ThreadRecord], str | None]:
        """A page of the caller's threads, most recently updated first, and the next page's
        cursor (or None). ``cursor`` is the (updated_at, thread_id) the last page ended at."""
        params: dict[str, Any] = {"user_id": user_id, "limit": limit + 1}
        if cursor is not None:
            params["ts"], params["thread_id"] = cursor
        query = S.LIST_THREADS_AFTER if cursor is not None else S.LIST_THREADS
        rows = await self.db.read(lambda sql: sql.all(query, params))
        records = [ThreadRecord.from_row(r) for r in rows[:limit]]
        if len(rows) <= limit or not records:
            return records, None
        last = records[-1]
        return records, encode_thread_cursor(last.updated_at, last.thread_id)

    async def thread_state(self, user_id: str, thread_id: str) -> dict[str, Any]:
        """The caller's thread's saved state (``{}`` when none, or not theirs)."""
        raw = await self.db.read(
            lambda sql: sql.value(S.THREAD_STATE, {"thread_id": thread_id, "user_id": user_id})
        )
        state = {} if raw is None else loads(raw)
        return state if isinstance(state, dict) else {}
