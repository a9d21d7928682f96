"""OpenTelemetry traces from a real `corral serve` to a real OTLP/HTTP receiver (contract §13)."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import ServerProcess, spawn_server
from support_otlp import OtlpReceiver, ReceivedSpan, otel_env, otlp_receiver, serve_asgi

pytestmark = pytest.mark.slow


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[OtlpReceiver, str]]:
    async with otlp_receiver() as found:
        yield found


def caller_traceparent() -> tuple[str, str, str]:
    """A caller's W3C traceparent, and its trace id and span id."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


async def serve(
    tmp_path: Path, procs: list[ServerProcess], *args: str, **env: str
) -> ServerProcess:
    db = f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}"
    server = await asyncio.to_thread(spawn_server, tmp_path / "data", db, *args, **env)
    procs.append(server)
    return server


async def wait_finished(http: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            run = (await http.get(f"/v1/runs/{run_id}")).json()
            if run["status"] not in ("queued", "running"):
                return run
            await asyncio.sleep(0.05)


def one(
    spans: list[ReceivedSpan], name: str, attributes: dict[str, Any] | None = None
) -> ReceivedSpan:
    """The one span named ``name`` with these attribute values."""
    wanted = attributes or {}
    found = [
        s
        for s in spans
        if s.name == name and all(s.attributes.get(k) == v for k, v in wanted.items())
    ]
    assert len(found) == 1, (name, wanted, [(s.name, s.attributes) for s in spans])
    return found[0]


def run_spans_of(run_id: str, tools: int) -> Any:
    """A predicate: the run's span and its ``tools`` tool spans have arrived."""

    def arrived(spans: list[ReceivedSpan]) -> bool:
        run = [s for s in spans if s.attributes.get("corral.run_id") == run_id]
        return sum(s.name == "corral.run" for s in run) == 1 and (
            sum(s.name == "corral.tool" for s in run) == tools
        )

    return arrived


async def test_a_run_continues_the_callers_trace_http_run_and_tool_spans(
    tmp_path: Path,
    server_processes: list[ServerProcess],
    receiver: tuple[OtlpReceiver, str],
) -> None:
    """traceparent on POST /v1/runs: the HTTP span is the caller's child, corral.run the HTTP
    span's child, each corral.tool the run's child — one trace; ids, agent and status on the
    run span, and no input or output anywhere in the spans."""
    otlp, endpoint = receiver
    server = await serve(tmp_path, server_processes, **otel_env(endpoint, "corral-traced"))
    traceparent, trace_id, caller_span = caller_traceparent()
    canary = f"secret-input-{secrets.token_hex(4)}"
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers("tia")) as http:
        resp = await http.post(
            "/v1/runs",
            json={"agent": "echo", "input": {"message": canary, "steps": 2}},
            headers={"traceparent": traceparent},
        )
        assert resp.status_code == 202, resp.text
        run_id = resp.json()["run_id"]
        assert (await wait_finished(http, run_id))["status"] == "succeeded"
    spans = await otlp.wait_for(run_spans_of(run_id, tools=2))

    http_span = one(spans, "POST /v1/runs")
    assert http_span.kind == "server"
    assert (http_span.trace_id, http_span.parent_span_id) == (trace_id, caller_span)
    assert http_span.attributes["http.response.status_code"] == 202
    assert http_span.attributes["http.route"] == "/v1/runs"
    assert http_span.service == "corral-traced"
    assert http_span.attributes["corral.request_id"] == resp.headers["x-request-id"]

    run_span = one(spans, "corral.run", {"corral.run_id": run_id})
    assert run_span.trace_id == trace_id
    assert run_span.parent_span_id == http_span.span_id
    assert run_span.attributes["corral.agent"] == "echo"
    assert run_span.attributes["corral.status"] == "succeeded"
    assert not run_span.error

    tools = [s for s in spans if s.name == "corral.tool" and s.trace_id == trace_id]
    assert len(tools) == 2
    for tool in tools:
        assert tool.parent_span_id == run_span.span_id
        assert tool.attributes["corral.tool"] == "echo"
        assert tool.attributes["corral.tool.status"] == "success"
    assert canary not in json.dumps([s.attributes for s in spans], default=str)


async def test_without_a_traceparent_the_http_span_is_a_root_and_the_run_its_child(
    tmp_path: Path,
    server_processes: list[ServerProcess],
    receiver: tuple[OtlpReceiver, str],
) -> None:
    """No traceparent: a new trace begins at the HTTP span; the run still nests under it.
    Without OTEL_SERVICE_NAME the service is `corral`; a failed run's span is an error."""
    otlp, endpoint = receiver
    server = await serve(tmp_path, server_processes, **otel_env(endpoint))
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers("uma")) as http:
        run_id = (
            await http.post(
                "/v1/runs", json={"agent": "echo", "input": {"message": "x", "fail": True}}
            )
        ).json()["run_id"]
        assert (await wait_finished(http, run_id))["status"] == "failed"
    spans = await otlp.wait_for(run_spans_of(run_id, tools=1))
    http_span = one(spans, "POST /v1/runs")
    assert http_span.parent_span_id == ""
    run_span = one(spans, "corral.run", {"corral.run_id": run_id})
    assert run_span.parent_span_id == http_span.span_id
    assert run_span.trace_id == http_span.trace_id
    assert run_span.attributes["corral.status"] == "failed"
    assert run_span.error
    assert {s.service for s in spans} == {"corral"}


async def test_a_malformed_traceparent_starts_a_new_trace(
    tmp_path: Path,
    server_processes: list[ServerProcess],
    receiver: tuple[OtlpReceiver, str],
) -> None:
    """A traceparent that is not W3C (or has all-zero ids) is ignored, never a failure."""
    otlp, endpoint = receiver
    server = await serve(tmp_path, server_processes, **otel_env(endpoint))
    bad = ["junk", "00-" + "0" * 32 + "-" + "1" * 16 + "-01", "00-ABC-DEF-01"]
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers("vic")) as http:
        ids = []
        for value in bad:
            resp = await http.post(
                "/v1/runs",
                json={"agent": "echo", "input": {"message": "m"}},
                headers={"traceparent": value},
            )
            assert resp.status_code == 202, resp.text
            ids.append(resp.json()["run_id"])
        for run_id in ids:
            await wait_finished(http, run_id)

    def all_runs(spans: list[ReceivedSpan]) -> bool:
        return all(run_spans_of(run_id, tools=1)(spans) for run_id in ids)

    spans = await otlp.wait_for(all_runs)
    http_spans = [s for s in spans if s.name == "POST /v1/runs"]
    assert len(http_spans) == 3
    assert all(s.parent_span_id == "" for s in http_spans)
    assert "0" * 32 not in {s.trace_id for s in spans}


async def test_a_model_call_is_a_corral_llm_span_and_carries_the_trace_to_the_model(
    tmp_path: Path,
    server_processes: list[ServerProcess],
    receiver: tuple[OtlpReceiver, str],
) -> None:
    """The chat agent's completion is a corral.llm client span under corral.run; the model
    server receives a traceparent of that trace; neither the prompt nor the answer is in it."""
    otlp, endpoint = receiver
    model = ChatModelStub("Bonjour", " le monde")
    async with serve_asgi(model) as model_url:
        server = await serve(
            tmp_path,
            server_processes,
            **otel_env(endpoint),
            CORRAL_LLM_BASE_URL=f"{model_url}/v1",
            CORRAL_LLM_MODEL="stub-model",
        )
        traceparent, trace_id, _span = caller_traceparent()
        prompt = f"prompt-{secrets.token_hex(4)}"
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers("wes")) as h:
            run_id = (
                await h.post(
                    "/v1/runs",
                    json={"agent": "chat", "input": {"message": prompt}},
                    headers={"traceparent": traceparent},
                )
            ).json()["run_id"]
            run = await wait_finished(h, run_id)
        assert run["status"] == "succeeded", run

    def arrived(spans: list[ReceivedSpan]) -> bool:
        return any(s.name == "corral.llm" for s in spans) and run_spans_of(run_id, 0)(spans)

    spans = await otlp.wait_for(arrived)
    run_span = one(spans, "corral.run", {"corral.run_id": run_id})
    llm = one(spans, "corral.llm")
    assert llm.kind == "client"
    assert (llm.trace_id, llm.parent_span_id) == (trace_id, run_span.span_id)
    assert llm.attributes["gen_ai.request.model"] == "stub-model"
    assert llm.attributes["gen_ai.response.finish_reasons"] == "stop"
    sent = model.traceparents[0]
    assert sent is not None
    assert sent.split("-")[1] == trace_id
    assert sent.split("-")[2] == llm.span_id
    text = json.dumps([s.attributes for s in spans], default=str)
    assert prompt not in text
    assert "Bonjour" not in text


# -- a minimal chat-completions endpoint --------------------------------------------------------


class ChatModelStub:
    """Streams a fixed answer; keeps the traceparent header of each request."""

    def __init__(self, *pieces: str) -> None:
        self.pieces = pieces
        self.traceparents: list[str | None] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        while (await receive()).get("more_body"):
            pass
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.traceparents.append(headers.get("traceparent"))
        chunks = [{"role": "assistant"}, *({"content": p} for p in self.pieces)]
        lines = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in chunks]
        lines.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        body = "".join(f"data: {json.dumps(doc)}\n\n" for doc in lines) + "data: [DONE]\n\n"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})
