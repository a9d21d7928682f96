"""What the store hands out: runs and threads as frozen records, and page cursors."""

from __future__ import annotations

import base64
import binascii
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
_TS = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
_THREAD_ID = re.compile(r"[A-Za-z0-9_-]{1,160}")
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
    # Known only to the process that created the run (never read back): the run started its
    # thread, so the thread's state is {} and need not be read when the run starts.
    new_thread: bool = False

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> RunRecord:
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


def encode_cursor(*parts: int | str) -> str:
    """An opaque cursor for the next page (positions, never ids of anything else)."""
    raw = "r" + "|".join(str(p) for p in parts)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, parts: int = 1) -> tuple[str, ...] | None:
    """The parts of a cursor this server gave out, or None."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if not raw.startswith("r"):
        return None
    fields = tuple(raw[1:].split("|"))
    return fields if len(fields) == parts else None


def decode_thread_cursor(cursor: str) -> tuple[str, str] | None:
    """A thread-page cursor (``encode_cursor(updated_at, thread_id)``), or None."""
    fields = decode_cursor(cursor, parts=2)
    if fields is None:
        return None
    updated_at, thread_id = fields
    if not _TS.fullmatch(updated_at) or not _THREAD_ID.fullmatch(thread_id):
        return None
    return updated_at, thread_id


def decode_row_cursor(cursor: str) -> int | None:
    """A row-id cursor (``encode_cursor(row_id)``) in the stored range, or None."""
    fields = decode_cursor(cursor)
    if fields is None or not fields[0].isascii() or not fields[0].isdigit():
        return None
    value = int(fields[0])
    return value if 0 < value <= 2**31 - 1 else None
