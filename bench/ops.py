"""What the operations features cost per request and per run (contract §13), in-process.

    python bench/ops.py [--n 200000]

- ``X-Request-ID``: a minimal ASGI response through :class:`RequestIdMiddleware` and without
  it, with a usable client id, with none (an id is generated), and with DEBUG request lines on.
- Tracing off: what a tool call, a run or a model call pays when tracing is not configured —
  the ``enabled`` check and the shared no-op span — against an empty ``with`` of nothing.
- Tracing on (when ``corral[otel]`` is installed): one span with the SDK, exporter-free
  (measured last, after the tracing-off rows: it imports the SDK).

Prints a table in nanoseconds per operation (median of 5 repetitions).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from typing import Any, TextIO

from corral.core.tracing import NO_SPAN, NO_TRACER, Tracer
from corral.server.request_id import RequestIdMiddleware

Scope = dict[str, Any]


async def _endpoint(scope: Scope, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _send(message: dict[str, Any]) -> None:
    return None


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b""}


def _scope(request_id: bytes | None) -> Scope:
    headers = [(b"host", b"127.0.0.1:8000"), (b"authorization", b"Bearer x" * 20)]
    if request_id is not None:
        headers.append((b"x-request-id", request_id))
    return {"type": "http", "method": "GET", "path": "/v1/runs", "headers": headers}


async def _time_app(app: Callable[..., Awaitable[None]], scope: Scope, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await app(scope, _receive, _send)
    return (time.perf_counter() - start) / n * 1e9


def _time_span(tracer: Tracer, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        span_context = (
            tracer.span("corral.tool", {"corral.tool": "echo", "corral.call_id": f"call_{i}"})
            if tracer.enabled
            else NO_SPAN
        )
        with span_context as span:
            span.set_attribute("corral.tool.status", "success")
    return (time.perf_counter() - start) / n * 1e9


def _time_nothing(n: int) -> float:
    empty = nullcontext()
    start = time.perf_counter()
    for _ in range(n):
        with empty:
            pass
    return (time.perf_counter() - start) / n * 1e9


def _median(fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(5))


async def main(n: int, sink: TextIO) -> None:
    with_id = RequestIdMiddleware(_endpoint)
    logging.getLogger("corral.http").setLevel(logging.INFO)
    rows: list[tuple[str, float]] = []
    loop_runs = [
        ("ASGI endpoint alone", _endpoint, _scope(None)),
        ("+ RequestIdMiddleware, client id kept", with_id, _scope(b"req-1234567890abcdef")),
        ("+ RequestIdMiddleware, id generated", with_id, _scope(None)),
    ]
    for name, app, scope in loop_runs:
        values = [await _time_app(app, scope, n) for _ in range(5)]
        rows.append((name, statistics.median(values)))
    logging.basicConfig(stream=sink, level=logging.DEBUG)
    logging.getLogger("corral.http").setLevel(logging.DEBUG)
    values = [await _time_app(with_id, _scope(None), n // 4) for _ in range(5)]
    rows.append(("+ RequestIdMiddleware, DEBUG request lines on", statistics.median(values)))
    logging.getLogger("corral.http").setLevel(logging.INFO)

    rows.append(("empty `with` (reference)", _median(lambda: _time_nothing(n))))
    rows.append(("tracing off: span of a tool call", _median(lambda: _time_span(NO_TRACER, n))))
    # redis-py imports OpenTelemetry's metrics API when it is installed; what tracing off must
    # not load is corral's tracing code and the tracing SDK.
    prefixes = ("corral.otel", "opentelemetry.sdk.trace", "opentelemetry.exporter")
    loaded = any(m.startswith(prefixes) for m in sys.modules)
    rows.append(("tracing off: tracing code imported", float(loaded)))
    try:
        from opentelemetry.sdk.trace import TracerProvider

        from corral.otel import OtelTracer
    except ImportError:
        pass
    else:
        on = OtelTracer(TracerProvider())
        on_cost = _median(lambda: _time_span(on, n // 10))
        rows.append(("tracing on: one span (SDK, no exporter)", on_cost))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        unit = "(0 = no)" if "imported" in name else "ns"
        print(f"{name:<{width}}  {value:>10.0f} {unit}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    with open(os.devnull, "w") as devnull:
        asyncio.run(main(parser.parse_args().n, devnull))
