"""/openapi.json describes the HTTP API of contract §3 and is a well-formed OpenAPI 3 document.

The document's structure is checked here by hand (every reference resolves, every operation
documents its responses, path parameters are declared) rather than with a validator package,
which the project does not depend on.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from support import RUN_FIELDS

# The document is made from the code alone; one database is enough to serve it.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

CONTRACT_OPERATIONS = {
    ("get", "/v1/agents"),
    ("post", "/v1/runs"),
    ("get", "/v1/runs"),
    ("get", "/v1/runs/{run_id}"),
    ("post", "/v1/runs/{run_id}/cancel"),
    ("get", "/v1/runs/{run_id}/events"),
    ("get", "/v1/runs/{run_id}/stream"),
    ("post", "/v1/runs/{run_id}/input"),
    ("post", "/v1/threads"),
    ("get", "/v1/threads"),
    ("get", "/v1/threads/{thread_id}"),
    ("patch", "/v1/threads/{thread_id}"),
    ("delete", "/v1/threads/{thread_id}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
}
ERROR_CODES = {
    "unauthorized",
    "forbidden",
    "not_found",
    "conflict",
    "payload_too_large",
    "validation_error",
    "rate_limited",
    "unavailable",
}
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


async def fetch_openapi(server: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.url) as http:  # no token needed
        resp = await http.get("/openapi.json")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    doc = resp.json()
    assert isinstance(doc, dict)
    return doc


def pointer(doc: dict[str, Any], ref: str) -> Any:
    """Follow a local JSON reference (``#/a/b``); AssertionError when it leads nowhere."""
    assert ref.startswith("#/"), f"not a local reference: {ref}"
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict), f"{ref}: {part} is not inside an object"
        assert part in node, f"{ref} does not resolve: no {part!r}"
        node = node[part]
    return node


def deref(doc: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = pointer(doc, node["$ref"])
    return node


def refs_in(node: Any, where: str = "#") -> list[tuple[str, str]]:
    """Every ``$ref`` in ``node``, with where it was found."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.append((where, value))
            else:
                found += refs_in(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += refs_in(value, f"{where}/{i}")
    return found


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): op
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }


async def test_openapi_json_is_a_valid_openapi_3_document_listing_every_endpoint(server) -> None:
    """/openapi.json is OpenAPI 3 with info and paths; every $ref resolves; every operation
    documents its responses and declares its path parameters; every contract path and method
    of the JSON API is there (`GET /`, the HTML page, is not part of it)."""
    doc = await fetch_openapi(server)
    assert re.fullmatch(r"3\.\d+\.\d+", doc["openapi"]), doc["openapi"]
    assert isinstance(doc["info"]["title"], str)
    assert isinstance(doc["info"]["version"], str)
    assert isinstance(doc["paths"], dict)

    unresolved = []
    for where, ref in refs_in(doc):
        try:
            pointer(doc, ref)
        except AssertionError as exc:
            unresolved.append(f"{where}: {exc}")
    assert not unresolved, "\n".join(unresolved)

    ops = operations(doc)
    assert set(ops) >= CONTRACT_OPERATIONS, CONTRACT_OPERATIONS - set(ops)
    operation_ids = [op["operationId"] for op in ops.values() if "operationId" in op]
    assert len(operation_ids) == len(set(operation_ids)), "operationIds are not unique"
    for (method, path), op in ops.items():
        what = f"{method.upper()} {path}"
        assert op["responses"], what
        for status, response in op["responses"].items():
            assert status == "default" or re.fullmatch(r"[1-5]\d\d", status), (what, status)
            assert isinstance(deref(doc, response).get("description"), str), (what, status)
        declared = {
            deref(doc, p)["name"]
            for p in op.get("parameters", [])
            if deref(doc, p)["in"] == "path" and deref(doc, p).get("required") is True
        }
        assert set(re.findall(r"{(\w+)}", path)) == declared, what
        for parameter in op.get("parameters", []):
            assert deref(doc, parameter)["in"] in ("query", "header", "path", "cookie"), what

    for method, path in CONTRACT_OPERATIONS:
        responses = ops[(method, path)]["responses"]
        if path.startswith("/v1/"):
            assert "401" in responses, f"{method.upper()} {path} does not document 401"
        if "{run_id}" in path:
            assert "404" in responses, f"{method.upper()} {path} does not document 404"
    stream = ops[("get", "/v1/runs/{run_id}/stream")]["responses"]["200"]
    assert "text/event-stream" in stream["content"]


async def test_openapi_documents_the_post_runs_body_and_its_answers(server) -> None:
    """POST /v1/runs documents a JSON body with agent, input, thread_id, multitask and
    timeout_s; responses 202, 401, 404, 409, 413, 422 and 429; the 202 is the run object and
    the errors are the contract's error body."""
    doc = await fetch_openapi(server)
    post = operations(doc)[("post", "/v1/runs")]

    body = deref(doc, post["requestBody"])
    schema = deref(doc, body["content"]["application/json"]["schema"])
    assert schema["type"] == "object"
    assert {"agent", "input", "thread_id", "multitask", "timeout_s"} <= set(schema["properties"])
    assert "agent" in schema["required"]
    multitask = deref(doc, schema["properties"]["multitask"])
    assert set(multitask["enum"]) == {"enqueue", "reject", "interrupt"}
    assert deref(doc, schema["properties"]["input"])["type"] == "object"

    responses = post["responses"]
    assert {"202", "401", "404", "409", "413", "422", "429"} <= set(responses)
    accepted = deref(doc, responses["202"]["content"]["application/json"]["schema"])
    assert set(accepted["properties"]) == RUN_FIELDS
    status = deref(doc, accepted["properties"]["status"])
    assert set(status["enum"]) == {
        "queued",
        "running",
        "waiting",
        "succeeded",
        "failed",
        "cancelled",
        "timed_out",
    }
    for code in ("401", "404", "409", "413", "422", "429"):
        error_body = deref(doc, responses[code]["content"]["application/json"]["schema"])
        assert set(error_body["properties"]) == {"error"}, code
        info = deref(doc, error_body["properties"]["error"])
        assert {"code", "message", "details"} <= set(info["properties"]), code
        assert set(deref(doc, info["properties"]["code"])["enum"]) == ERROR_CODES, code


async def test_openapi_documents_the_input_and_thread_bodies_and_answers(server) -> None:
    """POST /input takes {request_id, value} and answers 202/404/409/422; POST /v1/threads
    takes {title, metadata} and answers 201 with the thread object; DELETE answers 204."""
    doc = await fetch_openapi(server)
    ops = operations(doc)
    send = ops[("post", "/v1/runs/{run_id}/input")]
    body = deref(doc, deref(doc, send["requestBody"])["content"]["application/json"]["schema"])
    assert set(body["properties"]) == {"request_id", "value"}
    assert set(body["required"]) == {"request_id", "value"}
    assert {"202", "404", "409", "422"} <= set(send["responses"])
    create = ops[("post", "/v1/threads")]
    body = deref(doc, deref(doc, create["requestBody"])["content"]["application/json"]["schema"])
    assert set(body["properties"]) == {"title", "metadata"}
    made = create["responses"]["201"]["content"]["application/json"]["schema"]
    assert set(deref(doc, made)["properties"]) == {
        "thread_id", "title", "metadata", "state", "created_at", "updated_at",
    }  # fmt: skip
    assert "204" in ops[("delete", "/v1/threads/{thread_id}")]["responses"]
    listed = ops[("get", "/v1/threads")]
    assert {p["name"] for p in listed["parameters"]} == {"limit", "cursor"}


async def test_openapi_documents_the_refusals_made_before_routing(server) -> None:
    """Every operation documents 403 (a Host that is not the server's), the dev-token routes
    their 403 for a name that is not a loopback name, and /metrics its 401 for a missing
    metrics token: answers the server gives must be in the document."""
    doc = await fetch_openapi(server)
    for (method, path), op in operations(doc).items():
        assert "403" in op["responses"], f"{method} {path}"
    ops = operations(doc)
    assert "loopback" in ops[("post", "/v1/dev/token")]["responses"]["403"]["description"]
    assert "loopback" in ops[("get", "/v1/dev/token")]["responses"]["403"]["description"]
    assert "401" in ops[("get", "/metrics")]["responses"]
