"""Response shapes, for the OpenAPI schema (responses are serialized directly with orjson)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, JsonValue, RootModel


class ErrorDetail(BaseModel):
    field: str
    message: str
    type: str


class ErrorInfo(BaseModel):
    code: Literal[
        "unauthorized",
        "forbidden",
        "not_found",
        "conflict",
        "payload_too_large",
        "validation_error",
        "rate_limited",
        "unavailable",
    ]
    message: str
    details: list[ErrorDetail] | None = None


class ErrorBody(BaseModel):
    error: ErrorInfo


class Me(BaseModel):
    """The caller, as the server's authenticator established it (claims are not shown)."""

    user_id: str
    roles: list[str]


class AgentInfo(BaseModel):
    name: str
    description: str
    input_schema: dict[str, Any]


class AgentList(RootModel[list[AgentInfo]]):
    """``GET /v1/agents``: the agents the caller may run."""


class RunError(BaseModel):
    type: str
    message: str


class RunObject(BaseModel):
    run_id: str
    thread_id: str
    agent: str
    status: Literal["queued", "running", "waiting", "succeeded", "failed", "cancelled", "timed_out"]
    input: JsonValue
    output: JsonValue
    error: RunError | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    last_seq: int


class RunList(BaseModel):
    runs: list[RunObject]
    next_cursor: str | None


class EventObject(BaseModel):
    type: Literal[
        "agent_started",
        "agent_thinking",
        "tool_executing",
        "tool_completed",
        "agent_update",
        "input_requested",
        "input_received",
        "agent_completed",
        "agent_error",
        "agent_cancelled",
    ]
    run_id: str
    thread_id: str
    seq: int
    ts: str
    data: dict[str, Any]


class EventList(BaseModel):
    events: list[EventObject]


class ThreadObject(BaseModel):
    thread_id: str
    title: str | None
    metadata: dict[str, Any]
    state: dict[str, Any]
    created_at: str
    updated_at: str


class ThreadList(BaseModel):
    threads: list[ThreadObject]
    next_cursor: str | None
