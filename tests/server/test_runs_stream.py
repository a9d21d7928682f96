"""``POST /v1/runs/stream`` against a real server: the checks of ``POST /v1/runs``, then the
run's Server-Sent Events in the same response — ``event: run`` first, then every event."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import orjson
import pytest

from conftest import LiveServer
from support import RUN_FIELDS, check_run_events
from support_sse import event_of, sse_messages

TIMEOUT = 15.0
TERMINAL = {"agent_completed", "agent_error", "agent_cancelled"}
ECHO = {"agent": "echo", "input": {"message": "streamed", "steps": 3, "delay_ms": 5}}


async def post_stream(
    http: httpx.AsyncClient, body: Any, *, stop_after: int | None = None, **kwargs: Any
) -> tuple[int, dict[str, Any] | None, list[dict[str, Any]], bytes]:
    """POST /v1/runs/stream: (status, the run of `event: run`, the events, an error body).
    With ``stop_after``, the connection is closed after that many events."""
    run: dict[str, Any] | None = None
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(TIMEOUT):
        async with http.stream("POST", "/v1/runs/stream", json=body, **kwargs) as response:
            if response.status_code != 200:
                return response.status_code, None, [], await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            async for message in sse_messages(response):
                if run is None:
                    assert message["event"] == "run", message
                    assert "id" not in message, message
                    run = orjson.loads(message["data"])
                    continue
                events.append(event_of(message))
                if stop_after is not None and len(events) >= stop_after:
                    break
    return 200, run, events, b""


def user() -> str:
    return f"rs-{uuid.uuid4().hex[:8]}"


async def test_one_request_starts_the_run_and_streams_every_event(server: LiveServer) -> None:
    """event: run with the run object (queued, this user's thread), then every event of the
    run in seq order, ending after the terminal event — exactly what the store holds."""
    async with server.client(user()) as http:
        status, run, events, _ = await post_stream(http, ECHO)
        assert status == 200
        assert run is not None
        assert set(run) == RUN_FIELDS
        assert (run["agent"], run["input"]) == ("echo", ECHO["input"])
        check_run_events(events)
        assert {e["run_id"] for e in events} == {run["run_id"]}
        assert events[-1]["type"] == "agent_completed"
        stored = (await http.get(f"/v1/runs/{run['run_id']}/events")).json()["events"]
        assert events == stored


async def test_a_retry_with_the_same_idempotency_key_streams_the_same_run(
    server: LiveServer,
) -> None:
    """A request cut after two events and repeated with its Idempotency-Key streams the first
    run again from seq 1: one run; the same key with another body is a 409 before any stream."""
    async with server.client(user()) as http:
        key = {"Idempotency-Key": f"k-{uuid.uuid4().hex}"}
        _, first, early, _ = await post_stream(http, ECHO, stop_after=2, headers=key)
        _, again, events, _ = await post_stream(http, ECHO, headers=key)
        assert first is not None
        assert again is not None
        assert again["run_id"] == first["run_id"]
        assert events[:2] == early
        check_run_events(events)
        other = {**ECHO, "input": {"message": "something else"}}
        status, _, _, body = await post_stream(http, other, headers=key)
        assert status == 409
        assert orjson.loads(body)["error"]["code"] == "conflict"
        assert len((await http.get("/v1/runs")).json()["runs"]) == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        ({"agent": "nope", "input": {}}, {}, 404, "not_found"),
        ({"agent": "echo", "input": {"steps": 2}}, {}, 422, "validation_error"),
        (
            {"agent": "echo", "input": {"message": "m"}, "thread_id": "thread_x"},
            {},
            404,
            "not_found",
        ),
        (ECHO, {"Idempotency-Key": "has space"}, 422, "validation_error"),
        ({"agent": "echo", "input": {"message": "m" * (1 << 20)}}, {}, 413, "payload_too_large"),
    ],
)
async def test_refusals_are_json_errors_and_start_nothing(
    server: LiveServer, body: Any, headers: dict[str, str], status: int, code: str
) -> None:
    """Every check of POST /v1/runs applies first: a refusal is the usual JSON error, not a
    stream, and no run is created."""
    async with server.client(user()) as http:
        got, _, _, answer = await post_stream(http, body, headers=headers)
        assert got == status, answer
        assert orjson.loads(answer)["error"]["code"] == code
        assert (await http.get("/v1/runs")).json()["runs"] == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_without_a_token_it_is_401(server: LiveServer) -> None:
    """No identity: 401 unauthorized, nothing streamed."""
    async with server.client() as http:
        status, _, _, answer = await post_stream(http, ECHO)
    assert status == 401
    assert orjson.loads(answer)["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_it_is_in_the_openapi_document(server: LiveServer) -> None:
    """/openapi.json documents POST /v1/runs/stream with its body and the Idempotency-Key."""
    async with server.client() as http:
        doc = (await http.get("/openapi.json")).json()
    operation = doc["paths"]["/v1/runs/stream"]["post"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert [p["name"] for p in operation["parameters"]] == ["Idempotency-Key"]
