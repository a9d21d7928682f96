"""The threads routes of contract §10: handlers and their entries in the route table."""

from __future__ import annotations

from types import MappingProxyType

from starlette.requests import Request
from starlette.responses import Response

from corral.runs.threads import ThreadCreate, ThreadPatch
from corral.server.api import Answer, Operation, check_path_params
from corral.server.errors import invalid_field
from corral.server.params import Body, int_param, read_body, str_param
from corral.server.responses import error_answers, json_response
from corral.server.runtime import runtime_of
from corral.server.schemas import ThreadList, ThreadObject
from corral.store.records import THREAD_CURSOR_PATTERN, decode_thread_cursor

THREAD_ID = str_param("thread_id", "path", max_length=160, description="A thread id of yours")
THREADS_LIMIT = int_param("limit", "query", ge=1, le=200, default=50)
THREADS_CURSOR = str_param(
    "cursor",
    "query",
    max_length=200,
    pattern=THREAD_CURSOR_PATTERN,
    rule="a next_cursor this server gave out, passed unchanged",
    description="`next_cursor` of the previous page",
)
BODY_LIMIT = 64 * 1024  # a title and 16 KiB of metadata fit many times over


def _cursor(request: Request) -> tuple[str, str] | None:
    raw = THREADS_CURSOR.get(request)
    if not raw:
        return None
    position = decode_thread_cursor(raw)
    if position is None:
        raise invalid_field(
            THREADS_CURSOR.field, "not a cursor this server gave out; pass next_cursor unchanged"
        )
    return position


async def create_thread(request: Request) -> Response:
    runtime = runtime_of(request)
    user = await runtime.authenticate(request)
    body = await read_body(request, ThreadCreate, BODY_LIMIT)
    thread = await runtime.parts.threads.create(user.user_id, body)
    return json_response(thread.to_api(), 201)


async def list_threads(request: Request) -> Response:
    runtime = runtime_of(request)
    user = await runtime.authenticate(request)
    threads, next_cursor = await runtime.parts.threads.list(
        user.user_id, limit=THREADS_LIMIT.get(request) or 50, cursor=_cursor(request)
    )
    return json_response({"threads": [t.to_api() for t in threads], "next_cursor": next_cursor})


async def get_thread(request: Request) -> Response:
    runtime = runtime_of(request)
    user = await runtime.authenticate(request)
    (thread_id,) = check_path_params(request, "thread_id")
    thread = await runtime.parts.threads.get(user.user_id, thread_id)
    return json_response(thread.to_api())


async def update_thread(request: Request) -> Response:
    runtime = runtime_of(request)
    user = await runtime.authenticate(request)
    (thread_id,) = check_path_params(request, "thread_id")
    body = await read_body(request, ThreadPatch, BODY_LIMIT)
    thread = await runtime.parts.threads.update(user.user_id, thread_id, body)
    return json_response(thread.to_api())


async def delete_thread(request: Request) -> Response:
    runtime = runtime_of(request)
    user = await runtime.authenticate(request)
    (thread_id,) = check_path_params(request, "thread_id")
    await runtime.parts.threads.delete(user.user_id, thread_id)
    return Response(status_code=204)


THREAD_ANSWER = Answer("the thread object", ThreadObject)
NO_THREAD = "no such thread (or not yours)"

THREAD_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST",
        "/v1/threads",
        create_thread,
        "create_thread",
        "Start a new, empty thread",
        "threads",
        MappingProxyType(
            {201: Answer("the new thread", ThreadObject), **error_answers(401, 413, 422, 503)}
        ),
        body=Body(ThreadCreate, "an optional title (200 characters) and metadata (16 KiB)"),
    ),
    Operation(
        "GET",
        "/v1/threads",
        list_threads,
        "list_threads",
        "Your threads, most recently updated first",
        "threads",
        MappingProxyType(
            {200: Answer("a page of threads", ThreadList), **error_answers(401, 422, 503)}
        ),
        params=(THREADS_LIMIT, THREADS_CURSOR),
    ),
    Operation(
        "GET",
        "/v1/threads/{thread_id}",
        get_thread,
        "get_thread",
        "One of your threads, with its state",
        "threads",
        MappingProxyType({200: THREAD_ANSWER, **error_answers(401, 404, 503, not_found=NO_THREAD)}),
        params=(THREAD_ID,),
    ),
    Operation(
        "PATCH",
        "/v1/threads/{thread_id}",
        update_thread,
        "update_thread",
        "Rename one of your threads or replace its metadata",
        "threads",
        MappingProxyType(
            {200: THREAD_ANSWER, **error_answers(401, 404, 413, 422, 503, not_found=NO_THREAD)}
        ),
        params=(THREAD_ID,),
        body=Body(ThreadPatch, "the fields to replace", required=True),
    ),
    Operation(
        "DELETE",
        "/v1/threads/{thread_id}",
        delete_thread,
        "delete_thread",
        "Delete one of your threads with its runs and their events",
        "threads",
        MappingProxyType(
            {
                204: Answer("deleted: every route answers 404 for it and its runs from now on"),
                **error_answers(401, 404, 409, 503, not_found=NO_THREAD),
            }
        ),
        params=(THREAD_ID,),
        description="Its unfinished runs are cancelled first; then the thread, its runs, "
        "their events and their idempotency keys are deleted in one transaction. 409 when "
        "its runs do not stop within a few seconds: retry.",
    ),
)
