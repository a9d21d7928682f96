"""The shapes the API answers with (contract §3, §4, §10), as typed dictionaries.

They are the server's JSON as it arrives: plain ``dict`` objects at run time, typed for
readers and for mypy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypedDict


class RunError(TypedDict):
    type: str
    message: str


class Run(TypedDict):
    """The run object."""

    run_id: str
    thread_id: str
    agent: str
    status: str  # queued, running, waiting, succeeded, failed, cancelled, timed_out
    input: dict[str, Any]
    output: Any
    error: RunError | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    last_seq: int


class Event(TypedDict):
    """One event of a run (contract §4)."""

    type: str
    run_id: str
    thread_id: str
    seq: int
    ts: str
    data: dict[str, Any]


class Agent(TypedDict):
    name: str
    description: str
    input_schema: dict[str, Any]


class Me(TypedDict):
    user_id: str
    roles: list[str]


class Thread(TypedDict):
    """The thread object (contract §10)."""

    thread_id: str
    title: str | None
    metadata: dict[str, Any] | None
    state: dict[str, Any] | None
    created_at: str
    updated_at: str


class RunPage(TypedDict):
    runs: list[Run]
    next_cursor: str | None


class ThreadPage(TypedDict):
    threads: list[Thread]
    next_cursor: str | None


TokenProvider = Callable[[], Awaitable[str]]
"""An async callable giving a bearer token; asked on every (re)connect and after a refusal."""

TERMINAL_TYPES = frozenset({"agent_completed", "agent_error", "agent_cancelled"})
