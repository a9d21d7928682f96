"""The AG-UI front door (contract §12): ``POST /v1/ag-ui/{agent}`` and the AG-UI encoding of
``GET /v1/runs/{run_id}/stream?format=ag-ui``.

A request is checked like ``POST /v1/runs`` (authentication, the agent, its input, the queue),
then answered with the run's events as AG-UI Server-Sent Events; refusals before the stream
are the usual JSON errors. The run is an ordinary corral run: it goes on when the client goes
away, and any client of the user can resume, cancel or answer it.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from corral.runs.service import RunRequest
from corral.server.agui.encoder import AguiEncoder, AguiFramer, frames
from corral.server.agui.request import RunAgentInput, agent_input
from corral.server.api import check_path_params
from corral.server.params import IDEMPOTENCY_KEY, parse_model, read_json
from corral.server.runtime import Runtime, runtime_of
from corral.server.sse import stream_run
from corral.server.tracing import run_trace
from corral.store.records import RunRecord


async def run_agent(request: Request) -> Response:
    """``POST /v1/ag-ui/{agent}``: start a run from a ``RunAgentInput`` and stream it.

    The ``threadId`` names a thread of the caller's: the first use makes a new corral thread
    bound to it, later uses continue it. An ``Idempotency-Key`` is honoured as on
    ``POST /v1/runs``.
    """
    runtime = runtime_of(request)
    user = await runtime.authenticate(request, "sse")
    (agent,) = check_path_params(request, "agent")
    key = IDEMPOTENCY_KEY.get(request)
    body = parse_model(RunAgentInput, await read_json(request, runtime.settings.max_body_bytes))
    service = runtime.service
    spec = service.agent(agent, user)
    given = agent_input(spec, body)
    thread_id = await service.bind_thread(user.user_id, body.thread_id)
    run_request = parse_model(
        RunRequest, {"agent": spec.name, "input": given, "thread_id": thread_id}
    )
    trace = run_trace(request, runtime.parts.tracer)
    record, created = await service.start(user, run_request, key, trace=trace)
    if created:
        runtime.metrics.runs_submitted.labels("ag-ui").inc()
    encoder = AguiEncoder(
        body.thread_id, body.run_id, {"run_id": record.run_id, "thread_id": record.thread_id}
    )
    return stream_run(
        runtime,
        record,
        0,
        framer=AguiFramer(encoder),
        prelude=frames([encoder.opening()]),
        until=runtime.signin.valid_until(user),
    )


async def stream_run_agui(
    runtime: Runtime, record: RunRecord, after: int, *, until: float | None = None
) -> Response:
    """The run's events from ``after`` as AG-UI SSE (``RUN_STARTED`` first when ``after`` is 0).

    The AG-UI ``threadId`` is the one the thread is bound to, else corral's thread id; the
    ``runId`` is corral's run id. The run is replayed from its start through the encoder so a
    stream resumed mid-message names the message it was in.
    """
    bound = await runtime.service.external_thread_id(record.user_id, record.thread_id)
    corral = {"run_id": record.run_id, "thread_id": record.thread_id}
    encoder = AguiEncoder(bound or record.thread_id, record.run_id, corral)
    prelude = frames([encoder.opening()]) if after == 0 else b""
    return stream_run(
        runtime,
        record,
        0,
        framer=AguiFramer(encoder, skip_through=after),
        prelude=prelude,
        until=until,
    )
