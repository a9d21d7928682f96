"""A real OTLP/HTTP trace receiver for tests: protobuf in, decoded spans kept, waitable.

Served by uvicorn on a free loopback port in the test's own event loop; corral processes export
to it as they would to a collector (``OTEL_EXPORTER_OTLP_ENDPOINT``). Decoding uses the
``opentelemetry-proto`` messages, so a span corral sends malformed fails here.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto
from opentelemetry.proto.trace.v1.trace_pb2 import Status

KIND = {v: k.removeprefix("SPAN_KIND_").lower() for k, v in SpanProto.SpanKind.items()}


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    kind: str  # "server", "internal", "client"...
    attributes: dict[str, Any]
    service: str  # the resource's service.name
    error: bool  # status code ERROR


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    return None if which is None else getattr(value, which)


class OtlpReceiver:
    """ASGI app answering ``POST /v1/traces``; ``spans`` is everything received, in order."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self._changed = asyncio.Condition()

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = dict(scope["headers"])
        assert scope["path"] == "/v1/traces", scope["path"]
        assert headers.get(b"content-type") == b"application/x-protobuf", headers
        if headers.get(b"content-encoding") == b"gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        received = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            kind=KIND[span.kind],
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            service=str(resource.get("service.name", "")),
                            error=span.status.code == Status.STATUS_CODE_ERROR,
                        )
                    )
        async with self._changed:
            self.spans.extend(received)
            self.requests += 1
            self._changed.notify_all()
        answer = ExportTraceServiceResponse().SerializeToString()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/x-protobuf")],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    async def wait_for(
        self, predicate: Callable[[list[ReceivedSpan]], bool], timeout: float = 30.0
    ) -> list[ReceivedSpan]:
        """Every span received, once ``predicate`` holds for them (bounded by ``timeout``)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self.spans))
            return list(self.spans)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        self.ready.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Any:  # the test process keeps its own handlers
        yield


@contextlib.asynccontextmanager
async def serve_asgi(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port in this loop; yields ``http://127.0.0.1:PORT``."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_config=None)
    server = _Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    ready = asyncio.ensure_future(server.ready.wait())
    await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
    if not server.started:
        ready.cancel()
        await task
        raise RuntimeError("the test HTTP server did not start")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def otlp_receiver() -> AsyncIterator[tuple[OtlpReceiver, str]]:
    """A running receiver and its base URL (``http://127.0.0.1:PORT``: the OTLP endpoint)."""
    receiver = OtlpReceiver()
    async with serve_asgi(receiver) as url:
        yield receiver, url


def otel_env(endpoint: str, service: str | None = None) -> dict[str, str]:
    """The variables that turn tracing on in a corral process, exporting here quickly."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: export within a moment, not 5 s
    }
    if service is not None:
        env["OTEL_SERVICE_NAME"] = service
    return env
