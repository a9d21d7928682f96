"""HTTP spans, and the trace a run started by a request belongs to (contract §13).

:class:`HttpTracingMiddleware` is in the app only when tracing is configured (nothing to pay
otherwise). It opens a server span per HTTP request — the child of the caller's W3C
``traceparent`` when one came — named by the route once routed. :func:`run_trace` is what a
route that starts runs (``POST /v1/runs``, the AG-UI route) stores with the run, so that the
worker executing it, on any node, continues that trace.
"""

from __future__ import annotations

import re

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.core.tracing import Tracer
from corral.logs import current_request_id

# W3C trace context, version 00: version-traceid-parentid-flags, lower-case hex.
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}\Z")


def valid_traceparent(value: str | None) -> str | None:
    """``value`` when it is a well-formed ``traceparent`` (and not the all-zero ids), else None."""
    if value is None:
        return None
    value = value.strip()
    if not _TRACEPARENT.match(value) or value.startswith("ff"):
        return None
    _version, trace_id, span_id, _flags = value.split("-")
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return value


def run_trace(conn: HTTPConnection, tracer: Tracer) -> str | None:
    """The ``traceparent`` to store with a run this request starts: the request's own span
    (itself the child of the caller's ``traceparent``), or the caller's header when there is
    no span. None when tracing is off: nothing is read or stored then."""
    if not tracer.enabled:
        return None
    return tracer.traceparent() or valid_traceparent(conn.headers.get("traceparent"))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class HttpTracingMiddleware:
    """A server span per HTTP request; the tracer is the running app's (``runtime.parts``).

    Requests that arrive while the app starts or stops (no runtime) pass through untraced.
    """

    __slots__ = ("app",)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        runtime = getattr(scope["app"].state, "runtime", None)
        if runtime is None:
            await self.app(scope, receive, send)
            return
        tracer = runtime.parts.tracer
        method = scope["method"]
        status = 500  # unless a response starts
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "url.path": scope["path"],
        }
        request_id = current_request_id.get()
        if request_id is not None:
            attributes["corral.request_id"] = request_id
        parent = valid_traceparent(_header(scope, b"traceparent"))

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        with tracer.span(method, attributes, parent=parent, kind="server") as span:
            try:
                await self.app(scope, receive, send_status)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if isinstance(route, str):
                    span.set_attribute("http.route", route)
                    span.update_name(f"{method} {route}")
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_error(str(status))
