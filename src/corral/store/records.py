"""What the store hands out: runs and threads as frozen records, and page cursors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from corral.core.events import RunStatus, loads

# The columns every run query selects, in RunRecord.from_row's order.
RUN_COLUMNS = (
    "run_id, user_id, thread_id, agent, status, input, output, error, created_at, started_at, "
    "finished_at, last_seq, timeout_s, attempt, identity, trace, input_request, id"
)
# What a thread cursor may hold: a stored timestamp and a server-made thread id.
THREAD_COLUMNS = "thread_id, user_id, title, metadata, state, created_at, updated_at"


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
    identity: dict[str, Any] | None = None
    trace: str | None = None
    input_request: dict[str, Any] | None = None
    row_id: int = 0
    # The thread's state is {} and need not be read when the run starts: set by the process
    # that created the run when the run started its thread, and by a cluster claim when the
    # thread has no stored state.
    new_thread: bool = False

    @classmethod
    def from_row(cls, row: tuple[Any, ...], *, new_thread: bool = False) -> RunRecord:
        return cls(
            run_id=row[0],
            user_id=row[1],
            thread_id=row[2],
            agent=row[3],
            status=row[4],
            input=loads(row[5]),
            output=None if row[6] is None else loads(row[6]),
            error=None if row[7] is None else loads(row[7]),
            created_at=row[8],
            started_at=row[9],
            finished_at=row[10],
            last_seq=int(row[11]),
            timeout_s=row[12],
            attempt=int(row[13]),
            identity=None if row[14] is None else loads(row[14]),
            trace=row[15],
            input_request=None if row[16] is None else loads(row[16]),
            row_id=int(row[17]),
            new_thread=new_thread,
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


@dataclass(frozen=True, slots=True)
class ThreadRecord:
    thread_id: str
    user_id: str
    title: str | None
    metadata: dict[str, Any]
    state: dict[str, Any]
    created_at: str
    updated_at: str

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> ThreadRecord:
        return cls(
            thread_id=row[0],
            user_id=row[1],
            title=row[2],
            metadata={} if row[3] is None else loads(row[3]),
            state={} if row[4] is None else loads(row[4]),
            created_at=row[5],
            updated_at=row[6] or row[5],
        )

    def to_api(self) -> dict[str, Any]:
        """The thread object of contract §10."""
        return {
            "thread_id": self.thread_id,
            "title": self.title,
            "metadata": self.metadata,
            "state": self.state,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


# A page cursor names a position ("r" and a row id), never anything of another user: a cursor
# for a position below some other user's rows pages through the caller's rows only. Its form is
# published (the OpenAPI pattern), so every cursor that matches it is a valid request.
ROW_CURSOR_PATTERN = "^r[1-9][0-9]{0,8}$"
_ROW_CURSOR = re.compile(ROW_CURSOR_PATTERN)


def encode_row_cursor(row_id: int) -> str:
    return f"r{row_id}"


# Threads page by (updated_at, thread_id): "<updated_at>~<thread_id>", of the same published
# kind as the row cursor.
THREAD_CURSOR_PATTERN = (
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{6}Z~[A-Za-z0-9_-]{1,160}$"
)
_THREAD_CURSOR = re.compile(THREAD_CURSOR_PATTERN)


def encode_thread_cursor(updated_at: str, thread_id: str) -> str:
    return f"{updated_at}~{thread_id}"


def decode_thread_cursor(cursor: str) -> tuple[str, str] | None:
    """The (updated_at, thread_id) position of a thread cursor, or None."""
    if not _THREAD_CURSOR.fullmatch(cursor):
        return None
    updated_at, _, thread_id = cursor.partition("~")
    return updated_at, thread_id


def decode_row_cursor(cursor: str) -> int | None:
    """The position of a row cursor, or None when ``cursor`` is not of that form."""
    return int(cursor[1:]) if _ROW_CURSOR.fullmatch(cursor) else None
