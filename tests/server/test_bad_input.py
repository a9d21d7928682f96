"""Bad input gets the contract's error answers, never a 500, and leaves the server healthy.

Every error body must be exactly ``{"error": {"code", "message"[, "details"]}}`` with the code
that belongs to its status, and a 422 names each bad field in ``details``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

CODE_OF = {
    401: "unauthorized",
    404: "not_found",
    409: "conflict",
    413: "payload_too_large",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}
MIB = 1024 * 1024


def check_error(resp: httpx.Response, status: int, *fields: str) -> dict[str, Any]:
    """Assert the status and the exact error shape; for a 422, that ``details`` names each of
    ``fields`` (a detail's field may be more specific, e.g. ``input.steps`` for ``input``)."""
    assert resp.status_code < 500, f"{resp.status_code}: {resp.text}"
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert isinstance(body, dict)
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict)
    assert set(error) in ({"code", "message"}, {"code", "message", "details"}), error
    assert error["code"] == CODE_OF[status], error
    assert isinstance(error["message"], str)
    assert error["message"].strip(), error
    if status == 422:
        details = error.get("details")
        assert isinstance(details, list), error
        assert details, error
        for detail in details:
            assert isinstance(detail.get("field"), str), detail
            assert isinstance(detail.get("message"), str), detail
        named = [d["field"] for d in details]
        for field in fields:
            assert any(n == field or n.endswith("." + field) for n in named), (field, named)
    return error


async def post_run(http: httpx.AsyncClient, body: Any, **kwargs: Any) -> httpx.Response:
    return await http.post("/v1/runs", content=json.dumps(body), **kwargs)


async def assert_healthy(http: httpx.AsyncClient) -> None:
    """/healthz answers and an ordinary run still succeeds, start to end."""
    assert (await http.get("/healthz")).status_code == 200
    assert (await http.get("/readyz")).status_code == 200
    resp = await post_run(http, {"agent": "echo", "input": {"message": "still fine"}})
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["run_id"]
    async with http.stream("GET", f"/v1/runs/{run_id}/stream") as stream:
        assert stream.status_code == 200
        async for _ in stream.aiter_lines():
            pass
    run = (await http.get(f"/v1/runs/{run_id}")).json()
    assert run["status"] == "succeeded", run
    assert run["output"] == {"message": "still fine", "steps": 1}


# -- POST /v1/runs ----------------------------------------------------------------------------


async def test_malformed_or_non_object_json_body_is_422(server) -> None:
    """A body that is not JSON, or JSON that is not an object, is a 422 validation_error."""
    async with server.client("alice") as http:
        for raw in (
            b'{"agent": "echo",',
            b"",
            b"not json",
            b"\xff\xfe",
            b"[1, 2]",
            b'"x"',
            b"null",
        ):
            resp = await http.post(
                "/v1/runs", content=raw, headers={"Content-Type": "application/json"}
            )
            check_error(resp, 422)
        for body in ({}, {"input": {"message": "no agent"}}):
            check_error(await post_run(http, body), 422, "agent")
        assert (await http.get("/v1/runs")).json()["runs"] == []
        await assert_healthy(http)


async def test_wrong_types_in_the_body_are_422_naming_each_field(server) -> None:
    """agent: 5, input: "x", multitask: "sometimes", timeout_s: -1, thread_id: 7 and an
    unknown field each get 422 naming that field; all at once, details name all of them."""
    ok = {"agent": "echo", "input": {"message": "m"}}
    bad = {
        "agent": 5,
        "input": "x",
        "multitask": "sometimes",
        "timeout_s": -1,
        "thread_id": 7,
        "colour": "blue",
    }
    async with server.client("alice") as http:
        for field, value in bad.items():
            check_error(await post_run(http, {**ok, field: value}), 422, field)
        for field, value in {"timeout_s": 0, "agent": "", "input": [1], "multitask": None}.items():
            check_error(await post_run(http, {**ok, field: value}), 422, field)
        error = check_error(await post_run(http, bad), 422, *bad)
        assert len(error["details"]) >= len(bad)
        assert (await http.get("/v1/runs")).json()["runs"] == []
        await assert_healthy(http)


async def test_unknown_agent_is_404_and_bad_agent_input_is_422(server) -> None:
    """An unknown agent is 404 not_found; input failing echo's schema is 422 naming the input
    field (steps 0 or 101, message over 8192 characters or missing, delay_ms 10001, ...)."""
    async with server.client("alice") as http:
        unknown = await post_run(http, {"agent": "no-such-agent", "input": {}})
        check_error(unknown, 404)
        cases: list[tuple[dict[str, Any], str]] = [
            ({"message": "m", "steps": 0}, "input.steps"),
            ({"message": "m", "steps": 101}, "input.steps"),
            ({"message": "m", "steps": "many"}, "input.steps"),
            ({"message": "x" * 8193}, "input.message"),
            ({}, "input.message"),
            ({"message": 5}, "input.message"),
            ({"message": "m", "delay_ms": 10_001}, "input.delay_ms"),
            ({"message": "m", "delay_ms": -1}, "input.delay_ms"),
            ({"message": "m", "fail": [1]}, "input.fail"),
            ({"message": "m", "colour": "blue"}, "input.colour"),
        ]
        for input, field in cases:
            error = check_error(await post_run(http, {"agent": "echo", "input": input}), 422)
            named = [d["field"] for d in error["details"]]
            assert field in named, (input if len(str(input)) < 200 else field, named)
        several = {"steps": 0, "delay_ms": 10_001}
        error = check_error(await post_run(http, {"agent": "echo", "input": several}), 422)
        assert {"input.message", "input.steps", "input.delay_ms"} <= {
            d["field"] for d in error["details"]
        }
        # The edges themselves are accepted.
        edge = {"message": "x" * 8192, "steps": 100, "delay_ms": 0}
        resp = await post_run(http, {"agent": "echo", "input": edge})
        assert resp.status_code == 202, resp.text
        assert (await http.post(f"/v1/runs/{resp.json()['run_id']}/cancel")).status_code in (
            202,
            409,
        )
        await assert_healthy(http)


async def test_body_over_one_mib_is_413_with_or_without_content_length(server) -> None:
    """A body over 1 MiB is 413 payload_too_large whether it declares its length or comes
    chunked; a body just under the limit is read (and judged on its content)."""
    prefix = b'{"agent": "echo", "input": {"message": "'
    suffix = b'"}}'

    def body_of(size: int) -> bytes:
        return prefix + b"x" * (size - len(prefix) - len(suffix)) + suffix

    async def chunked(data: bytes) -> AsyncIterator[bytes]:
        for i in range(0, len(data), 64 * 1024):
            yield data[i : i + 64 * 1024]

    async with server.client("alice") as http:
        headers = {"Content-Type": "application/json"}
        big = body_of(MIB + 1)
        check_error(await http.post("/v1/runs", content=big, headers=headers), 413)
        check_error(await http.post("/v1/runs", content=chunked(big), headers=headers), 413)
        huge = body_of(3 * MIB)
        check_error(await http.post("/v1/runs", content=chunked(huge), headers=headers), 413)
        # Just under the limit: read, then refused for its content (the message is too long).
        under = await http.post("/v1/runs", content=body_of(MIB - 16), headers=headers)
        check_error(under, 422, "input.message")
        under = await http.post("/v1/runs", content=chunked(body_of(MIB)), headers=headers)
        check_error(under, 422, "input.message")
        assert (await http.get("/v1/runs")).json()["runs"] == []
        await assert_healthy(http)


async def test_bad_idempotency_key_is_422(server) -> None:
    """An Idempotency-Key over 255 characters (or empty, or with spaces) is 422 and makes no
    run; one of 255 printable characters is fine."""
    body = {"agent": "echo", "input": {"message": "m"}}
    async with server.client("alice") as http:
        for key in ("k" * 256, "k" * 5000, "", "has space"):
            resp = await post_run(http, body, headers={"Idempotency-Key": key})
            error = check_error(resp, 422)
            assert any("idempotency" in d["field"].lower() for d in error["details"]), error
        assert (await http.get("/v1/runs")).json()["runs"] == []
        resp = await post_run(http, body, headers={"Idempotency-Key": "k" * 255})
        assert resp.status_code == 202, resp.text
        await assert_healthy(http)


# -- query parameters, headers and paths ------------------------------------------------------


async def test_bad_query_parameters_and_ids_are_422_or_404_never_500(server) -> None:
    """limit=lots/0/201, after=-1, a garbage cursor, an unknown status, a bad Last-Event-ID →
    422 naming the parameter; odd run ids → 404. No 500 anywhere."""
    async with server.client("alice") as http:
        resp = await post_run(http, {"agent": "echo", "input": {"message": "m"}})
        run_id = resp.json()["run_id"]
        runs_cases: list[tuple[dict[str, str], str]] = [
            ({"limit": "lots"}, "limit"),
            ({"limit": "0"}, "limit"),
            ({"limit": "201"}, "limit"),
            ({"limit": "-5"}, "limit"),
            ({"limit": "1.5"}, "limit"),
            ({"cursor": "garbage"}, "cursor"),
            ({"cursor": "!!!"}, "cursor"),
            ({"cursor": "cjA"}, "cursor"),  # base64 of "r0"
            ({"cursor": "x" * 500}, "cursor"),
            ({"status": "sleeping"}, "status"),
            ({"thread_id": "t" * 1000}, "thread_id"),
        ]
        for params, field in runs_cases:
            check_error(await http.get("/v1/runs", params=params), 422, field)
        events_cases: list[tuple[dict[str, str], str]] = [
            ({"after": "-1"}, "after"),
            ({"after": "abc"}, "after"),
            ({"limit": "0"}, "limit"),
            ({"limit": "10001"}, "limit"),
            ({"limit": "lots"}, "limit"),
        ]
        for params, field in events_cases:
            resp = await http.get(f"/v1/runs/{run_id}/events", params=params)
            check_error(resp, 422, field)
        stream = f"/v1/runs/{run_id}/stream"
        check_error(await http.get(stream, params={"after": "-1"}), 422, "after")
        check_error(await http.get(stream, params={"after": "x"}), 422, "after")
        check_error(await http.get(stream, headers={"Last-Event-ID": "abc"}), 422, "Last-Event-ID")
        check_error(await http.get(stream, headers={"Last-Event-ID": "-3"}), 422, "Last-Event-ID")

        odd_ids = ["x" * 5000, "%00", "run_%00abc", "%FF%FE", "..%2F..%2Fetc", "run_'; DROP"]
        for odd in odd_ids:
            for method, suffix in (("GET", ""), ("GET", "/events"), ("POST", "/cancel")):
                resp = await http.request(method, f"/v1/runs/{odd}{suffix}")
                check_error(resp, 404)
        for thread in ("t\x00t", "x" * 160):
            resp = await post_run(
                http, {"agent": "echo", "input": {"message": "m"}, "thread_id": thread}
            )
            assert resp.status_code in (404, 422), resp.text
            check_error(resp, resp.status_code)
        listed = await http.get("/v1/runs", params={"thread_id": "t\x00t"})
        if listed.status_code == 200:
            assert listed.json() == {"runs": [], "next_cursor": None}
        else:
            check_error(listed, 422, "thread_id")
        await assert_healthy(http)


async def test_unusual_but_valid_input_is_stored_and_echoed_intact(server) -> None:
    """NUL characters, emoji and deep nesting in the input are valid JSON: the run succeeds and
    its input and output come back exactly as sent."""
    message = 'nul \x00 emoji \U0001f600 quote " backslash \\ rtl \u202e end'
    async with server.client("alice") as http:
        resp = await post_run(http, {"agent": "echo", "input": {"message": message}})
        assert resp.status_code == 202, resp.text
        run_id = resp.json()["run_id"]
        async with http.stream("GET", f"/v1/runs/{run_id}/stream") as stream:
            async for _ in stream.aiter_lines():
                pass
        run = (await http.get(f"/v1/runs/{run_id}")).json()
        assert run["status"] == "succeeded", run
        assert run["input"] == {"message": message}
        assert run["output"]["message"] == message
        await assert_healthy(http)
