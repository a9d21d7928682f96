"""Runs, threads and stored events: every query names its owner."""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from corral.core.events import (
    Event,
    EventType,
    RunStatus,
    dumps,
    loads,
    now_ts,
)
from corral.store.models import EventRow, IdempotencyRow, RunRow, ThreadRow

IDEMPOTENCY_TTL_S = 24 * 3600
UNFINISHED = (RunStatus.QUEUED.value, RunStatus.RUNNING.value)


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    user_id: str
    thread_id: str
    agent: str
    status: str
    input: Any
    output: Any
    error: Any
    created_at: str
    started_at: str | None
    finished_at: str | None
    last_seq: int
    timeout_s: float | None
    attempt: int

    @classmethod
    def from_row(cls, row: RunRow) -> RunRecord:
        return cls(
            run_id=row.run_id,
            user_id=row.user_id,
            thread_id=row.thread_id,
            agent=row.agent,
            status=row.status,
            input=loads(row.input),
            output=None if row.output is None else loads(row.output),
            error=None if row.error is None else loads(row.error),
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            last_seq=row.last_seq,
            timeout_s=row.timeout_s,
            attempt=row.attempt,
        )

    @property
    def finished(self) -> bool:
        return RunStatus(self.status).finished

    def to_api(self) -> dict[str, Any]:
        """The run object of contract §3."""
        return {
            "run_id": self.run_id,
            "thread_id": self.thread_id,
            "agent": self.agent,
            "status": self.status,
            "input": self.input,
            "output": self.output,
            "error": self.error,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "last_seq": self.last_seq,
        }


class IdempotencyConflict(Exception):
    """The key was used before with a different request body."""


class ThreadNotFound(Exception):
    """The thread does not exist or belongs to someone else (the caller cannot tell)."""


def _unstorable(value: str | None) -> bool:
    """True for a value no stored id can equal: PostgreSQL text cannot hold NUL, and asking
    it to compare one fails the query (a 503) where the answer is simply "nothing"."""
    return value is not None and "\x00" in value


def encode_cursor(row_id: int) -> str:
    return base64.urlsafe_b64encode(f"r{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("r"):
            return None
        value = int(raw[1:])
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return value if value > 0 else None


class RunStore:
    """Owner-scoped access to runs, threads and events. One session per call, never shared."""

    def __init__(self, engine: AsyncEngine, read_engine: AsyncEngine | None = None) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        # Reads that never write go to ``read_engine`` (SQLite: a read-only pool beside the
        # one writing connection); on PostgreSQL it is the same engine.
        self.read_engine = read_engine or engine
        self.read_sessions = async_sessionmaker(self.read_engine, expire_on_commit=False)

    # -- creating ---------------------------------------------------------------------------

    async def create_run(
        self,
        *,
        user_id: str,
        run_id: str,
        agent: str,
        input: Any,
        thread_id: str,
        new_thread: bool,
        timeout_s: float | None,
        idempotency: tuple[str, str] | None = None,
    ) -> tuple[RunRecord, bool]:
        """Insert a queued run (and its thread when new). Returns (run, created).

        With ``idempotency=(key, request_hash)``, a key seen before (within 24 h) returns the
        earlier run and ``created=False``; the same key with another hash raises
        :class:`IdempotencyConflict`. A ``thread_id`` that is not the caller's raises
        :class:`ThreadNotFound`.
        """
        now = now_ts()
        async with self.sessions() as session, session.begin():
            if idempotency is not None:
                earlier = await self._idempotent_run(session, user_id, *idempotency)
                if earlier is not None:
                    return earlier, False
            if new_thread:
                session.add(ThreadRow(thread_id=thread_id, user_id=user_id, created_at=now))
            else:
                owner = await session.scalar(
                    select(ThreadRow.user_id).where(ThreadRow.thread_id == thread_id)
                )
                if owner != user_id:
                    raise ThreadNotFound(thread_id)
            row = RunRow(
                run_id=run_id,
                user_id=user_id,
                thread_id=thread_id,
                agent=agent,
                status=RunStatus.QUEUED.value,
                input=dumps(input).decode(),
                created_at=now,
                last_seq=0,
                timeout_s=timeout_s,
                attempt=0,
            )
            session.add(row)
            if idempotency is not None:
                session.add(
                    IdempotencyRow(
                        user_id=user_id,
                        key=idempotency[0],
                        request_hash=idempotency[1],
                        run_id=run_id,
                        created_at=time.time(),
                    )
                )
            try:
                await session.flush()
            except IntegrityError:
                if idempotency is None:
                    raise
                await session.rollback()
                raced = True
            else:
                raced = False
        if raced:
            # Another request with the same key won; answer with its run. (Outside the
            # first session: SQLite runs on a single pooled connection.)
            assert idempotency is not None
            return await self._idempotency_race(user_id, idempotency), False
        return RunRecord.from_row(row), True

    async def find_idempotent(self, user_id: str, key: str, request_hash: str) -> RunRecord | None:
        """The run an earlier request with this key made (within 24 h), or None.

        Raises :class:`IdempotencyConflict` when the key came with a different body.
        """
        async with self.sessions() as session:
            return await self._idempotent_run(session, user_id, key, request_hash)

    async def _idempotent_run(
        self, session: AsyncSession, user_id: str, key: str, request_hash: str
    ) -> RunRecord | None:
        found = await session.get(IdempotencyRow, (user_id, key))
        if found is None:
            return None
        if found.created_at < time.time() - IDEMPOTENCY_TTL_S:
            await session.delete(found)
            await session.flush()
            return None
        if found.request_hash != request_hash:
            raise IdempotencyConflict(key)
        run = await session.scalar(
            select(RunRow).where(RunRow.run_id == found.run_id, RunRow.user_id == user_id)
        )
        return None if run is None else RunRecord.from_row(run)

    async def _idempotency_race(self, user_id: str, idem: tuple[str, str]) -> RunRecord:
        async with self.sessions() as session:
            run = await self._idempotent_run(session, user_id, *idem)
        if run is None:
            raise IdempotencyConflict(idem[0])
        return run

    async def purge_idempotency_keys(self) -> int:
        async with self.sessions() as session, session.begin():
            result = await session.execute(
                delete(IdempotencyRow).where(
                    IdempotencyRow.created_at < time.time() - IDEMPOTENCY_TTL_S
                )
            )
        return int(getattr(result, "rowcount", 0) or 0)

    # -- reading ----------------------------------------------------------------------------

    async def get_run(self, user_id: str, run_id: str) -> RunRecord | None:
        """The run if ``user_id`` owns it; None for a missing run *and* for another's."""
        if _unstorable(run_id):
            return None
        async with self.read_sessions() as session:
            row = await session.scalar(
                select(RunRow).where(RunRow.run_id == run_id, RunRow.user_id == user_id)
            )
        return None if row is None else RunRecord.from_row(row)

    async def list_runs(
        self,
        user_id: str,
        *,
        thread_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: int | None = None,
    ) -> tuple[list[RunRecord], str | None]:
        if _unstorable(thread_id):
            return [], None
        query = select(RunRow).where(RunRow.user_id == user_id)
        if thread_id is not None:
            query = query.where(RunRow.thread_id == thread_id)
        if status is not None:
            query = query.where(RunRow.status == status)
        if cursor is not None:
            query = query.where(RunRow.id < cursor)
        query = query.order_by(RunRow.id.desc()).limit(limit + 1)
        async with self.read_sessions() as session:
            rows = list(await session.scalars(query))
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].id) if more and rows else None
        return [RunRecord.from_row(r) for r in rows], next_cursor

    async def unfinished_runs_of_thread(self, user_id: str, thread_id: str) -> list[str]:
        async with self.read_sessions() as session:
            rows = await session.scalars(
                select(RunRow.run_id)
                .where(
                    RunRow.thread_id == thread_id,
                    RunRow.user_id == user_id,
                    RunRow.status.in_(UNFINISHED),
                )
                .order_by(RunRow.id)
            )
            return list(rows)

    async def thread_history(
        self, user_id: str, thread_id: str, before_run: str
    ) -> list[RunRecord]:
        """Earlier runs of the caller's thread (any status), oldest first, made before
        ``before_run``."""
        async with self.read_sessions() as session:
            anchor = await session.scalar(
                select(RunRow.id).where(RunRow.run_id == before_run, RunRow.user_id == user_id)
            )
            query = select(RunRow).where(RunRow.thread_id == thread_id, RunRow.user_id == user_id)
            if anchor is not None:
                query = query.where(RunRow.id < anchor)
            rows = await session.scalars(query.order_by(RunRow.id))
            return [RunRecord.from_row(r) for r in rows]

    async def events(
        self, user_id: str, run_id: str, *, after: int = 0, limit: int = 1000
    ) -> list[bytes] | None:
        """Stored events (wire JSON) of the caller's run, ``seq > after``; None if not theirs."""
        if _unstorable(run_id):
            return None
        async with self.read_sessions() as session:
            owner = await session.scalar(select(RunRow.user_id).where(RunRow.run_id == run_id))
            if owner != user_id:
                return None
            rows = await session.scalars(
                select(EventRow.body)
                .where(EventRow.run_id == run_id, EventRow.seq > after)
                .order_by(EventRow.seq)
                .limit(limit)
            )
            return [r.encode() for r in rows]

    # -- recovery -----------------------------------------------------------------------------

    async def interrupt_unfinished(self, *, message: str) -> list[Event]:
        """End every queued or running run with ``agent_error`` of type ``interrupted``.

        For the single-node start-up: a dead process left them. Returns the events written.
        """
        written: list[Event] = []
        async with self.sessions() as session, session.begin():
            rows = list(await session.scalars(select(RunRow).where(RunRow.status.in_(UNFINISHED))))
            for row in rows:
                written.extend(await self._interrupt(session, row, message))
        return written

    async def _interrupt(self, session: AsyncSession, row: RunRow, message: str) -> list[Event]:
        """End ``row``'s run as ``interrupted``: first a ``tool_completed`` (status error) for
        each tool call left open, so every ``tool_executing`` keeps its pair, then the
        terminal ``agent_error``. Returns the events written."""
        tool_rows = await session.scalars(
            select(EventRow.body)
            .where(
                EventRow.run_id == row.run_id,
                EventRow.type.in_(("tool_executing", "tool_completed")),
            )
            .order_by(EventRow.seq)
        )
        open_calls: dict[str, str] = {}
        for body in tool_rows:
            doc = loads(body)
            call_id = doc["data"].get("call_id", "")
            if doc["type"] == "tool_executing":
                open_calls[call_id] = doc["data"].get("tool", "")
            else:
                open_calls.pop(call_id, None)
        error = {"type": "interrupted", "message": message}
        events: list[Event] = []
        seq = row.last_seq
        for call_id, tool in open_calls.items():
            seq += 1
            events.append(
                Event(
                    type=EventType.TOOL_COMPLETED,
                    run_id=row.run_id,
                    thread_id=row.thread_id,
                    seq=seq,
                    user_id=row.user_id,
                    data={
                        "call_id": call_id,
                        "tool": tool,
                        "status": "error",
                        "error": error,
                        "duration_ms": 0,
                    },
                )
            )
        events.append(
            Event(
                type=EventType.AGENT_ERROR,
                run_id=row.run_id,
                thread_id=row.thread_id,
                seq=seq + 1,
                data={"error": error, "duration_ms": 0},
                user_id=row.user_id,
            )
        )
        await session.execute(
            insert(EventRow),
            [
                {
                    "run_id": e.run_id,
                    "seq": e.seq,
                    "type": e.type.value,
                    "body": e.to_json().decode(),
                }
                for e in events
            ],
        )
        await session.execute(
            update(RunRow)
            .where(and_(RunRow.run_id == row.run_id, RunRow.last_seq == row.last_seq))
            .values(
                status=RunStatus.FAILED.value,
                error=dumps(error).decode(),
                finished_at=events[-1].ts,
                last_seq=events[-1].seq,
            )
        )
        return events
