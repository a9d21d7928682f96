"""The HTTP API of contract §3."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, ValidationError

from corral.core.events import dumps
from corral.server.auth import AuthError, Identity, issue_token, verify_token
from corral.server.errors import NOT_FOUND_RUN, ApiError, validation_error
from corral.server.schemas import (
    AgentInfo,
    ErrorBody,
    EventList,
    RunList,
    RunObject,
)
from corral.server.service import RunRequest
from corral.server.sse import stream_run
from corral.store.runs import decode_cursor

router = APIRouter()
_bearer = HTTPBearer(auto_error=False, description="`corral token USER` prints one")


def _responses(**extra: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI error responses: 401 and 422 everywhere, plus ``extra`` (``e404="..."``)."""
    out: dict[int | str, dict[str, Any]] = {
        401: {"model": ErrorBody, "description": "missing, invalid or expired token"},
        422: {"model": ErrorBody, "description": "invalid request; `details` names each field"},
    }
    for key, description in extra.items():
        out[int(key.removeprefix("e"))] = {"model": ErrorBody, "description": description}
    return out


RUN_404 = "no such run (or not yours)"


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON Schema with its ``$defs`` inlined, for ``openapi_extra``: there a
    ``#/$defs/...`` reference would point at the OpenAPI document's root, which has none.
    (For non-recursive models, like every request body here.)"""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    result: dict[str, Any] = resolve(schema)
    return result


def runtime_of(request: Request) -> Any:
    runtime = request.app.state.runtime
    if runtime is None:
        raise ApiError("unavailable", "the server is starting or stopping; retry shortly")
    return runtime


async def identity(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Identity:
    runtime = runtime_of(request)
    if credentials is None:
        raise ApiError(
            "unauthorized", "send Authorization: Bearer <token> (`corral token USER` prints one)"
        )
    try:
        return verify_token(runtime.secret, credentials.credentials)
    except AuthError as exc:
        raise ApiError("unauthorized", str(exc)) from None


User = Annotated[Identity, Depends(identity)]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json", headers=headers)


async def read_json_body(request: Request, limit: int) -> Any:
    """The request body as JSON: 413 past ``limit`` bytes, 422 when it is not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError("payload_too_large", f"the body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError("payload_too_large", f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(
            "validation_error",
            f"the body is not valid JSON ({exc.msg} at position {exc.pos})",
            details=[{"field": "(body)", "message": "malformed JSON", "type": "json_invalid"}],
        ) from None


class _IdempotencyKey(BaseModel):
    key: str = Field(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")


@router.get("/v1/agents", response_model=list[AgentInfo], responses=_responses(), tags=["agents"])
async def list_agents(request: Request, user: User) -> Response:
    """The registered agents with the JSON Schema of their input."""
    registry = runtime_of(request).registry
    return json_response(
        [
            {"name": a.name, "description": a.description, "input_schema": a.input_schema()}
            for a in registry.agents()
        ]
    )


@router.post(
    "/v1/runs",
    status_code=202,
    response_model=RunObject,
    tags=["runs"],
    responses={
        **_responses(
            e404="unknown agent, or thread not yours",
            e409="multitask=reject on a busy thread, or an Idempotency-Key reused with another "
            "body",
            e413="body over 1 MiB",
            e429="your queue is full (see Retry-After)",
            e503="shutting down or database unavailable",
        ),
        200: {"model": RunObject, "description": "an Idempotency-Key replay: the earlier run"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline_schema(RunRequest)}},
        }
    },
)
async def create_run(
    request: Request,
    user: User,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Response:
    """Start a run of an agent; it executes in the background (202)."""
    runtime = runtime_of(request)
    doc = await read_json_body(request, runtime.settings.max_body_bytes)
    try:
        body = RunRequest.model_validate(doc)
    except ValidationError as exc:
        raise validation_error(exc, (), "the request body") from None
    if idempotency_key is not None:
        try:
            _IdempotencyKey(key=idempotency_key)
        except ValidationError as exc:
            raise validation_error(exc, ("header", "Idempotency-Key"), "Idempotency-Key") from None
    record, created = await runtime.service.start(user.user_id, body, idempotency_key)
    if created:
        runtime.metrics.runs_submitted.labels("http").inc()
    return json_response(record.to_api(), 202 if created else 200)


@router.get("/v1/runs", response_model=RunList, responses=_responses(), tags=["runs"])
async def list_runs(
    request: Request,
    user: User,
    thread_id: Annotated[str | None, Query(max_length=160)] = None,
    status: Annotated[
        Literal["queued", "running", "succeeded", "failed", "cancelled", "timed_out"] | None,
        Query(),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Your runs, newest first, one page at a time (`next_cursor` fetches the next)."""
    runtime = runtime_of(request)
    position = None
    if cursor:
        position = decode_cursor(cursor)
        if position is None:
            raise ApiError(
                "validation_error",
                "cursor is not one this server gave out; pass next_cursor unchanged",
                details=[
                    {"field": "query.cursor", "message": "invalid cursor", "type": "value_error"}
                ],
            )
    runs, next_cursor = await runtime.store.list_runs(
        user.user_id, thread_id=thread_id, status=status, limit=limit, cursor=position
    )
    return json_response({"runs": [r.to_api() for r in runs], "next_cursor": next_cursor})


@router.get(
    "/v1/runs/{run_id}", response_model=RunObject, responses=_responses(e404=RUN_404), tags=["runs"]
)
async def get_run(request: Request, user: User, run_id: str) -> Response:
    """One of your runs."""
    record = await runtime_of(request).store.get_run(user.user_id, run_id)
    if record is None:
        raise ApiError("not_found", NOT_FOUND_RUN)
    return json_response(record.to_api())


@router.post(
    "/v1/runs/{run_id}/cancel",
    status_code=202,
    response_model=RunObject,
    tags=["runs"],
    responses=_responses(e404=RUN_404, e409="the run has already finished"),
)
async def cancel_run(request: Request, user: User, run_id: str) -> Response:
    """Cancel one of your queued or running runs."""
    record = await runtime_of(request).service.cancel(user.user_id, run_id)
    return json_response(record.to_api(), 202)


@router.get(
    "/v1/runs/{run_id}/events",
    response_model=EventList,
    responses=_responses(e404=RUN_404),
    tags=["events"],
)
async def list_events(
    request: Request,
    user: User,
    run_id: str,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> Response:
    """Stored events of your run with `seq > after`, in order."""
    bodies = await runtime_of(request).store.events(user.user_id, run_id, after=after, limit=limit)
    if bodies is None:
        raise ApiError("not_found", NOT_FOUND_RUN)
    return Response(b'{"events":[' + b",".join(bodies) + b"]}", media_type="application/json")


@router.get(
    "/v1/runs/{run_id}/stream",
    tags=["events"],
    responses={
        **_responses(e404=RUN_404),
        200: {
            "content": {"text/event-stream": {}},
            "description": "`id: <seq>`, `event: <type>`, `data: <event JSON>` per event",
        },
    },
)
async def stream(
    request: Request,
    user: User,
    run_id: str,
    after: Annotated[int | None, Query(ge=0)] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    """Server-Sent Events of your run: stored ones after `Last-Event-ID` (or `after`), then live,
    ending after the terminal event."""
    runtime = runtime_of(request)
    start = after or 0
    if last_event_id is not None:
        if not last_event_id.strip().isdigit():
            raise ApiError(
                "validation_error",
                "Last-Event-ID must be the seq of an event you received",
                details=[
                    {
                        "field": "header.Last-Event-ID",
                        "message": "not an integer",
                        "type": "int_parsing",
                    }
                ],
            )
        start = int(last_event_id.strip())
    record = await runtime.store.get_run(user.user_id, run_id)
    if record is None:
        raise ApiError("not_found", NOT_FOUND_RUN)
    return await stream_run(runtime, record, start)


@router.get("/healthz", tags=["operations"])
async def healthz() -> dict[str, str]:
    """200 while the process is alive."""
    return {"status": "ok"}


@router.get("/readyz", tags=["operations"], responses={503: {"description": "not ready"}})
async def readyz(request: Request) -> Response:
    """200 when the database and the bus answer, else 503."""
    runtime = request.app.state.runtime
    if runtime is None or runtime.shutting_down:
        return json_response({"status": "unavailable", "database": False, "bus": False}, 503)
    checks = await runtime.ready()
    ok = all(checks.values())
    return json_response({"status": "ok" if ok else "unavailable", **checks}, 200 if ok else 503)


@router.get("/metrics", tags=["operations"], response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text format; names start with `corral_`."""
    runtime = runtime_of(request)
    m = runtime.metrics
    m.runs_running.set(runtime.factory.running_count())
    m.runs_queued.set(runtime.factory.queued_count())
    m.connections.labels("ws").set(runtime.pool.connection_count("ws"))
    m.connections.labels("sse").set(runtime.pool.connection_count("sse"))
    return Response(m.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def _from_this_machine(request: Request) -> bool:
    """A direct request from a loopback address (not relayed by a proxy)."""
    if any(h in request.headers for h in ("x-forwarded-for", "forwarded", "x-real-ip")):
        return False
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class DevTokenRequest(BaseModel):
    user: str = Field(min_length=1, max_length=128)


@router.post(
    "/v1/dev/token",
    tags=["development"],
    responses={404: {"model": ErrorBody, "description": "not a loopback server"}},
)
async def dev_token(request: Request) -> Response:
    """A one-day token for a user name of your choice — only on a loopback server, for the page."""
    runtime = runtime_of(request)
    if not runtime.settings.dev_tokens_enabled or not _from_this_machine(request):
        raise ApiError("not_found", "dev tokens are only given out by a loopback server")
    doc = await read_json_body(request, 4096)
    try:
        body = DevTokenRequest.model_validate(doc)
        token = issue_token(runtime.secret, body.user, ttl_s=24 * 3600)
    except ValidationError as exc:
        raise validation_error(exc, (), "the request body") from None
    except ValueError as exc:
        raise ApiError(
            "validation_error",
            str(exc),
            details=[{"field": "user", "message": str(exc), "type": "value_error"}],
        ) from None
    return json_response({"token": token, "user_id": body.user})
