"""The HTTP API of contract §3: handlers and the route table they are served and documented from."""

from __future__ import annotations

import ipaddress
import re
from types import MappingProxyType

from pydantic import BaseModel, Field, ValidationError, field_validator
from starlette.requests import Request
from starlette.responses import Response

from corral.core.context import ID_JSON_PATTERN
from corral.core.events import dumps
from corral.errors import InvalidRequest, NotFound
from corral.runs.service import InputAnswer, RunRequest
from corral.server.agui.request import RunAgentInput
from corral.server.agui.routes import run_agent, stream_run_agui
from corral.server.api import Answer, Operation, check_path_params
from corral.server.auth import issue_token
from corral.server.errors import invalid_field, validation_error
from corral.server.params import IDEMPOTENCY_KEY, Body, int_param, read_body, str_param
from corral.server.responses import error_answers as _errors
from corral.server.responses import json_response
from corral.server.runtime import runtime_of
from corral.server.schemas import AgentList, ErrorBody, EventList, Me, RunList, RunObject
from corral.server.sse import message, stream_run
from corral.server.thread_routes import THREAD_OPERATIONS
from corral.server.tracing import run_trace
from corral.store.records import ROW_CURSOR_PATTERN, decode_row_cursor

RUN_STATUSES = ("queued", "running", "waiting", "succeeded", "failed", "cancelled", "timed_out")


# -- parameters (each parses and documents itself) ---------------------------------------------

RUN_ID = str_param("run_id", "path", max_length=160, description="A run id of yours")
AFTER = int_param("after", "query", default=0, description="Only events with a greater seq")
EVENTS_LIMIT = int_param("limit", "query", ge=1, le=10_000, default=1000)
RUNS_LIMIT = int_param("limit", "query", ge=1, le=200, default=50)
CURSOR = str_param(
    "cursor",
    "query",
    max_length=10,
    pattern=ROW_CURSOR_PATTERN,
    rule="a next_cursor this server gave out, passed unchanged",
    description="`next_cursor` of the previous page",
)
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


async def me(request: Request) -> Response:
    runtime = runtime_of(request)
    user = await runtime.authenticate(request)
    return json_response({"user_id": user.user_id, "roles": sorted(user.roles)})


async def list_agents(request: Request) -> Response:
    runtime = runtime_of(request)
    user = await runtime.authenticate(request)
    return json_response(
        [
            {"name": a.name, "description": a.description, "input_schema": a.input_schema()}
            for a in runtime.service.agents(user)
        ]
    )


async def create_run(request: Request) -> Response:
    runtime = runtime_of(request)
    user = await runtime.authenticate(request)
    key = IDEMPOTENCY_KEY.get(request)
    body = await read_body(request, RunRequest, runtime.settings.max_body_bytes)
    trace = run_trace(request, runtime.parts.tracer)
    record, created = await runtime.service.start(user, body, key, trace=trace)
    if created:
        runtime.metrics.runs_submitted.labels("http").inc()
    return json_response(record.to_api(), 202 if created else 200)


async def create_run_and_stream(request: Request) -> Response:
    """``POST /v1/runs/stream``: the checks of ``POST /v1/runs``, then the run's SSE — first
    ``event: run`` with the run object, then its events from seq 1. A retry with the same
    ``Idempotency-Key`` streams the run the first request made, from the start again."""
    runtime = runtime_of(request)
    user = await runtime.authenticate(request, "sse")
    key = IDEMPOTENCY_KEY.get(request)
    body = await read_body(request, RunRequest, runtime.settings.max_body_bytes)
    trace = run_trace(request, runtime.parts.tracer)
    record, created = await runtime.service.start(user, body, key, trace=trace)
    if created:
        runtime.metrics.runs_submitted.labels("http").inc()
    return stream_run(
        runtime,
        record,
        0,
        prelude=message(dumps(record.to_api()), event="run"),
        until=runtime.signin.valid_until(user),
    )


async def list_runs(request: Request) -> Response:
    runtime = runtime_of(request)
    user = await runtime.authenticate(request)
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
    user = await runtime.authenticate(request)
    (run_id,) = check_path_params(request, "run_id")
    record = await runtime.service.get_run(user.user_id, run_id)
    return json_response(record.to_api())


async def cancel_run(request: Request) -> Response:
    runtime = runtime_of(request)
    user = await runtime.authenticate(request)
    (run_id,) = check_path_params(request, "run_id")
    record = await runtime.service.cancel(user.user_id, run_id)
    return json_response(record.to_api(), 202)


async def send_input(request: Request) -> Response:
    runtime = runtime_of(request)
    user = await runtime.authenticate(request)
    (run_id,) = check_path_params(request, "run_id")
    body = await read_body(request, InputAnswer, runtime.settings.max_body_bytes)
    record = await runtime.service.send_input(user.user_id, run_id, body)
    return json_response(record.to_api(), 202)


async def list_events(request: Request) -> Response:
    runtime = runtime_of(request)
    user = await runtime.authenticate(request)
    (run_id,) = check_path_params(request, "run_id")
    bodies = await runtime.service.events(
        user.user_id, run_id, after=AFTER.get(request) or 0, limit=EVENTS_LIMIT.get(request) or 1
    )
    return Response(b'{"events":[' + b",".join(bodies) + b"]}", media_type="application/json")


async def stream(request: Request) -> Response:
    runtime = runtime_of(request)
    user = await runtime.authenticate(request, "sse")
    (run_id,) = check_path_params(request, "run_id")
    resume_at = LAST_EVENT_ID.get(request)
    start = resume_at if resume_at is not None else STREAM_AFTER.get(request) or 0
    agui = STREAM_FORMAT.get(request) == "ag-ui"
    record = await runtime.service.get_run(user.user_id, run_id)
    # The stream ends when the caller's sign-in expires (contract §2).
    until = runtime.signin.valid_until(user)
    if agui:
        return await stream_run_agui(runtime, record, start, until=until)
    return stream_run(runtime, record, start, until=until)


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


# A development user name: letters, digits and a few marks — what a person types in the page —
# and not a placeholder. The same rule is the schema's pattern, so no request the schema allows
# is refused (validate_id applies on top, and agrees for these characters).
DEV_USER_PATTERN = ID_JSON_PATTERN.replace(
    "(?=\\S)(?=[\\s\\S]*\\S$)[^\\x00-\\x1f\\x7f-\\x9f]{1,128}$",
    "[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$",
)
_DEV_USER = re.compile(DEV_USER_PATTERN)


class DevTokenRequest(BaseModel):
    user: str = Field(min_length=1, max_length=128, json_schema_extra={"pattern": DEV_USER_PATTERN})

    @field_validator("user")
    @classmethod
    def _simple_name(cls, value: str) -> str:
        if not _DEV_USER.fullmatch(value):
            raise ValueError(
                "a development user name is letters, digits and . _ @ + - (not a placeholder)"
            )
        return value


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


class DevTokens(BaseModel):
    available: bool


def _dev_secret(request: Request) -> str:
    """The secret dev tokens are signed with; :class:`NotFound` saying why there is none."""
    runtime = runtime_of(request)
    if not runtime.settings.dev_tokens_enabled or not _from_this_machine(request):
        raise NotFound("dev tokens are only given out by a loopback server")
    if runtime.secret is None:
        raise NotFound(
            "dev tokens are off: this server verifies sign-ins with a hook, a public key or "
            "a JWKS, where corral's own tokens could not sign in; sign in with your identity "
            "provider"
        )
    return runtime.secret


async def dev_tokens(request: Request) -> Response:
    """Whether ``POST /v1/dev/token`` gives this caller a token (the page asks first)."""
    try:
        _dev_secret(request)
    except NotFound:
        return json_response({"available": False})
    return json_response({"available": True})


async def dev_token(request: Request) -> Response:
    secret = _dev_secret(request)
    body = await read_body(request, DevTokenRequest, 4096)
    try:
        token = issue_token(secret, body.user, ttl_s=24 * 3600)
    except ValidationError as exc:
        raise validation_error(exc, (), "the request body") from None
    except ValueError as exc:
        raise InvalidRequest(
            str(exc), [{"field": "user", "message": str(exc), "type": "value_error"}]
        ) from None
    return json_response({"token": token, "user_id": body.user})


# -- the table ----------------------------------------------------------------------------------


RUN_ANSWER = Answer("the run object", RunObject)
DEV_TOKEN_HOST = Answer(
    "addressed by a name that is not a loopback name, or not one of this server's", ErrorBody
)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/v1/me",
        me,
        "get_me",
        "Who you are signed in as: your user id and roles",
        "identity",
        MappingProxyType({200: Answer("the caller", Me), **_errors(401, 503)}),
    ),
    Operation(
        "GET",
        "/v1/agents",
        list_agents,
        "list_agents",
        "The agents you may run (agents gated by roles only for holders of one)",
        "agents",
        MappingProxyType(
            {200: Answer("agents and their input schemas", AgentList), **_errors(401, 503)}
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
        "Cancel one of your queued, running or waiting runs",
        "runs",
        MappingProxyType({202: RUN_ANSWER, **_errors(401, 404, 409, 503)}),
        params=(RUN_ID,),
    ),
    Operation(
        "POST",
        "/v1/runs/{run_id}/input",
        send_input,
        "send_input",
        "Answer your waiting run's open input request",
        "runs",
        MappingProxyType({202: RUN_ANSWER, **_errors(401, 404, 409, 413, 422, 503)}),
        params=(RUN_ID,),
        body=Body(InputAnswer, "the open request's id and the answer"),
        description="The value must match the request's JSON Schema (422 with `details` "
        "otherwise; the run keeps waiting). 409 for a run that is not waiting, or a "
        "`request_id` that is not its open, unanswered request. The run then emits "
        "`input_received` and goes on as soon as a running slot is free.",
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
                403: DEV_TOKEN_HOST,
                404: Answer("not a loopback server", ErrorBody),
            }
        ),
        body=Body(DevTokenRequest, "the user name"),
        auth=False,
    ),
    *THREAD_OPERATIONS,
    Operation(
        "GET",
        "/v1/dev/token",
        dev_tokens,
        "dev_tokens",
        "Whether development tokens are given out here (loopback, HS256 servers only)",
        "development",
        MappingProxyType(
            {200: Answer("available or not", DevTokens), **_errors(503), 403: DEV_TOKEN_HOST}
        ),
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
        MappingProxyType(
            {
                200: Answer("metrics", content_type="text/plain"),
                **_errors(503),
                401: Answer(
                    "CORRAL_METRICS_TOKEN is set and not given as the bearer token", ErrorBody
                ),
            }
        ),
        auth=False,
    ),
)
