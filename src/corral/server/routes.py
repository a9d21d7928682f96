"""The HTTP API of contract §3: handlers and the route table they are served and documented from."""

from __future__ import annotations

import ipaddress
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from corral.core.events import dumps
from corral.errors import InvalidRequest, NotFound
from corral.runs.service import RunRequest
from corral.server.agui.request import RunAgentInput
from corral.server.agui.routes import run_agent, stream_run_agui
from corral.server.api import Answer, Operation, check_path_params
from corral.server.auth import issue_token
from corral.server.errors import invalid_field, validation_error
from corral.server.params import IDEMPOTENCY_KEY, Body, int_param, read_body, str_param
from corral.server.runtime import runtime_of
from corral.server.schemas import AgentInfo, ErrorBody, EventList, RunList, RunObject
from corral.server.sse import message, stream_run
from corral.store.records import decode_row_cursor

RUN_STATUSES = (
    "queued",
    "running",
    "waiting",
    "succeeded",
    "failed",
    "cancelled",
    "timed_out",
)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json", headers=headers)


# -- parameters (each parses and documents itself) ---------------------------------------------

RUN_ID = str_param("run_id", "path", max_length=160, description="A run id of yours")
AFTER = int_param("after", "query", default=0, description="Only events with a greater seq")
EVENTS_LIMIT = int_param("limit", "query", ge=1, le=10_000, default=1000)
RUNS_LIMIT = int_param("limit", "query", ge=1, le=200, default=50)
CURSOR = str_param("cursor", "query", description="`next_cursor` of the previous page")
THREAD_FILTER = str_param("thread_id", "query", max_length=160, description="One thread only")
STATUS_FILTER = str_param("status", "query", max_length=16, choices=RUN_STATUSES)
STREAM_AFTER = int_param("after", "query", description="Resume after this seq")
STREAM_FORMAT = str_param(
    "format",
    "query",
    max_length=16,
    choices=("corral", "ag-ui"),
    description="`ag-ui`: the events in the AG-UI protocol (contract §12); default `corral`",
)
AGENT = str_param("agent", "path", max_length=64, description="An agent name from /v1/agents")
LAST_EVENT_ID = int_param(
    "Last-Event-ID", "header", description="Resume after this seq (wins over `after`)"
)


def _cursor(request: Request) -> int | None:
    raw = CURSOR.get(request)
    if not raw:
        return None
    position = decode_row_cursor(raw)
    if position is None:
        raise invalid_field(
            CURSOR.field, "not a cursor this server gave out; pass next_cursor unchanged"
        )
    return position


# -- handlers -----------------------------------------------------------------------------------


async def list_agents(request: Request) -> Response:
    runtime = runtime_of(request)
    runtime.authenticate(request)
    return json_response(
        [
            {"name": a.name, "description": a.description, "input_schema": a.input_schema()}
            for a in runtime.registry.agents()
        ]
    )


async def create_run(request: Request) -> Response:
    runtime = runtime_of(request)
    user = runtime.authenticate(request)
    key = IDEMPOTENCY_KEY.get(request)
    body = await read_body(request, RunRequest, runtime.settings.max_body_bytes)
    record, created = await runtime.service.start(user.user_id, body, key)
    if created:
        runtime.metrics.runs_submitted.labels("http").inc()
    return json_response(record.to_api(), 202 if created else 200)


async def create_run_and_stream(request: Request) -> Response:
    """``POST /v1/runs/stream``: the checks of ``POST /v1/runs``, then the run's SSE — first
    ``event: run`` with the run object, then its events from seq 1. A retry with the same
    ``Idempotency-Key`` streams the run the first request made, from the start again."""
    runtime = runtime_of(request)
    user = runtime.authenticate(request)
    key = IDEMPOTENCY_KEY.get(request)
    body = await read_body(request, RunRequest, runtime.settings.max_body_bytes)
    record, created = await runtime.service.start(user.user_id, body, key)
    if created:
        runtime.metrics.runs_submitted.labels("http").inc()
    return stream_run(runtime, record, 0, prelude=message(dumps(record.to_api()), event="run"))


async def list_runs(request: Request) -> Response:
    runtime = runtime_of(request)
    user = runtime.authenticate(request)
    runs, next_cursor = await runtime.service.list_runs(
        user.user_id,
        thread_id=THREAD_FILTER.get(request),
        status=STATUS_FILTER.get(request),
        limit=RUNS_LIMIT.get(request) or 50,
        cursor=_cursor(request),
    )
    return json_response({"runs": [r.to_api() for r in runs], "next_cursor": next_cursor})


async def get_run(request: Request) -> Response:
    runtime = runtime_of(request)
    user = runtime.authenticate(request)
    (run_id,) = check_path_params(request, "run_id")
    record = await runtime.service.get_run(user.user_id, run_id)
    return json_response(record.to_api())


async def cancel_run(request: Request) -> Response:
    runtime = runtime_of(request)
    user = runtime.authenticate(request)
    (run_id,) = check_path_params(request, "run_id")
    record = await runtime.service.cancel(user.user_id, run_id)
    return json_response(record.to_api(), 202)


async def list_events(request: Request) -> Response:
    runtime = runtime_of(request)
    user = runtime.authenticate(request)
    (run_id,) = check_path_params(request, "run_id")
    bodies = await runtime.service.events(
        user.user_id, run_id, after=AFTER.get(request) or 0, limit=EVENTS_LIMIT.get(request) or 1
    )
    return Response(b'{"events":[' + b",".join(bodies) + b"]}", media_type="application/json")


async def stream(request: Request) -> Response:
    runtime = runtime_of(request)
    user = runtime.authenticate(request)
    (run_id,) = check_path_params(request, "run_id")
    resume_at = LAST_EVENT_ID.get(request)
    start = resume_at if resume_at is not None else STREAM_AFTER.get(request) or 0
    agui = STREAM_FORMAT.get(request) == "ag-ui"
    record = await runtime.service.get_run(user.user_id, run_id)
    if agui:
        return await stream_run_agui(runtime, record, start)
    return stream_run(runtime, record, start)


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None or runtime.shutting_down:
        return json_response({"status": "unavailable", "database": False, "bus": False}, 503)
    checks = await runtime.ready()
    ok = all(checks.values())
    return json_response({"status": "ok" if ok else "unavailable", **checks}, 200 if ok else 503)


async def metrics(request: Request) -> Response:
    runtime = runtime_of(request)
    m = runtime.metrics
    running, queued = await runtime.service.queue.counts()
    m.runs_running.set(running)
    m.runs_queued.set(queued)
    m.connections.labels("ws").set(runtime.pool.connection_count("ws"))
    m.connections.labels("sse").set(runtime.pool.connection_count("sse"))
    return Response(m.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


class DevTokenRequest(BaseModel):
    user: str = Field(min_length=1, max_length=128)


class DevToken(BaseModel):
    token: str
    user_id: str


def _from_this_machine(request: Request) -> bool:
    """A direct request from a loopback address (not relayed by a proxy)."""
    if any(h in request.headers for h in ("x-forwarded-for", "forwarded", "x-real-ip")):
        return False
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def dev_token(request: Request) -> Response:
    runtime = runtime_of(request)
    if not runtime.settings.dev_tokens_enabled or not _from_this_machine(request):
        raise NotFound("dev tokens are only given out by a loopback server")
    body = await read_body(request, DevTokenRequest, 4096)
    try:
        token = issue_token(runtime.secret, body.user, ttl_s=24 * 3600)
    except ValidationError as exc:
        raise validation_error(exc, (), "the request body") from None
    except ValueError as exc:
        raise InvalidRequest(
            str(exc), [{"field": "user", "message": str(exc), "type": "value_error"}]
        ) from None
    return json_response({"token": token, "user_id": body.user})


# -- the table ----------------------------------------------------------------------------------


def _errors(*statuses: int) -> dict[int, Answer]:
    texts = {
        401: "missing, invalid or expired token",
        404: "no such run (or not yours)",
        409: "the request conflicts with the resource's state",
        413: "body over the size limit",
        422: "invalid request; `details` names each field",
        429: "your queue is full (see Retry-After)",
        503: "starting, shutting down, or the database is unavailable (see Retry-After)",
    }
    return {s: Answer(texts[s], ErrorBody) for s in statuses}


RUN_ANSWER = Answer("the run object", RunObject)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/v1/agents",
        list_agents,
        "list_agents",
        "The agents you may run",
        "agents",
        MappingProxyType(
            {200: Answer("agents and their input schemas", AgentInfo), **_errors(401, 503)}
        ),
    ),
    Operation(
        "POST",
        "/v1/runs",
        create_run,
        "create_run",
        "Start a run (it executes in the background)",
        "runs",
        MappingProxyType(
            {
                202: Answer("the new run", RunObject),
                200: Answer("an Idempotency-Key replay: the earlier run", RunObject),
                **_errors(401, 404, 409, 413, 422, 429, 503),
            }
        ),
        params=(IDEMPOTENCY_KEY,),
        body=Body(RunRequest, "the agent, its input and options"),
    ),
    Operation(
        "POST",
        "/v1/runs/stream",
        create_run_and_stream,
        "create_run_and_stream",
        "Start a run and stream it: one request, answered with Server-Sent Events",
        "runs",
        MappingProxyType(
            {
                200: Answer(
                    "`event: run` with the run object, then `id: <seq>`, `event: <type>`, "
                    "`data: <event JSON>` per event, as in `/v1/runs/{run_id}/stream`",
                    content_type="text/event-stream",
                ),
                **_errors(401, 404, 409, 413, 422, 429, 503),
            }
        ),
        params=(IDEMPOTENCY_KEY,),
        body=Body(RunRequest, "the agent, its input and options (as for POST /v1/runs)"),
    ),
    Operation(
        "GET",
        "/v1/runs",
        list_runs,
        "list_runs",
        "Your runs, newest first",
        "runs",
        MappingProxyType({200: Answer("a page of runs", RunList), **_errors(401, 422, 503)}),
        params=(THREAD_FILTER, STATUS_FILTER, RUNS_LIMIT, CURSOR),
    ),
    Operation(
        "GET",
        "/v1/runs/{run_id}",
        get_run,
        "get_run",
        "One of your runs",
        "runs",
        MappingProxyType({200: RUN_ANSWER, **_errors(401, 404, 503)}),
        params=(RUN_ID,),
    ),
    Operation(
        "POST",
        "/v1/runs/{run_id}/cancel",
        cancel_run,
        "cancel_run",
        "Cancel one of your queued or running runs",
        "runs",
        MappingProxyType({202: RUN_ANSWER, **_errors(401, 404, 409, 503)}),
        params=(RUN_ID,),
    ),
    Operation(
        "GET",
        "/v1/runs/{run_id}/events",
        list_events,
        "list_events",
        "Stored events of your run with seq > after, in order",
        "events",
        MappingProxyType({200: Answer("events", EventList), **_errors(401, 404, 422, 503)}),
        params=(RUN_ID, AFTER, EVENTS_LIMIT),
    ),
    Operation(
        "GET",
        "/v1/runs/{run_id}/stream",
        stream,
        "stream_run",
        "Server-Sent Events of your run: stored after Last-Event-ID (or after), then live",
        "events",
        MappingProxyType(
            {
                200: Answer(
                    "`id: <seq>`, `event: <type>`, `data: <event JSON>` per event",
                    content_type="text/event-stream",
                ),
                **_errors(401, 404, 422, 503),
            }
        ),
        params=(RUN_ID, STREAM_AFTER, LAST_EVENT_ID, STREAM_FORMAT),
    ),
    Operation(
        "POST",
        "/v1/ag-ui/{agent}",
        run_agent,
        "run_agent_ag_ui",
        "Run an agent in the AG-UI protocol: a RunAgentInput in, AG-UI events out",
        "ag-ui",
        MappingProxyType(
            {
                200: Answer(
                    "AG-UI events, one per `data:` line: RUN_STARTED first, RUN_FINISHED or "
                    "RUN_ERROR last; `id: <seq>` on the last event made from each corral event",
                    content_type="text/event-stream",
                ),
                **_errors(401, 404, 409, 413, 422, 429, 503),
            }
        ),
        params=(AGENT, IDEMPOTENCY_KEY),
        body=Body(RunAgentInput, "an AG-UI RunAgentInput"),
        description="The input: forwardedProps.input, else the last user message's text in the "
        "agent's one required string field. A threadId you have not used before starts a new "
        "thread bound to it; the same threadId later continues that thread.",
    ),
    Operation(
        "POST",
        "/v1/dev/token",
        dev_token,
        "dev_token",
        "A one-day token for a user name of your choice (loopback servers only)",
        "development",
        MappingProxyType(
            {
                200: Answer("a token", DevToken),
                **_errors(413, 422, 503),
                404: Answer("not a loopback server", ErrorBody),
            }
        ),
        body=Body(DevTokenRequest, "the user name"),
        auth=False,
    ),
    Operation(
        "GET",
        "/healthz",
        healthz,
        "healthz",
        "200 while the process is alive",
        "operations",
        MappingProxyType({200: Answer("alive")}),
        auth=False,
    ),
    Operation(
        "GET",
        "/readyz",
        readyz,
        "readyz",
        "200 when the database and the bus answer",
        "operations",
        MappingProxyType({200: Answer("ready"), 503: Answer("not ready")}),
        auth=False,
    ),
    Operation(
        "GET",
        "/metrics",
        metrics,
        "metrics",
        "Prometheus text format",
        "operations",
        MappingProxyType({200: Answer("metrics", content_type="text/plain"), **_errors(503)}),
        auth=False,
    ),
)
