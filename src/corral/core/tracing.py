"""The tracing seam: what the engine, the tools and the model client call to make spans.

The core never imports a tracing library. Whoever assembles the app hands engines a
:class:`Tracer`: :data:`NO_TRACER` (the default — nothing is recorded, nothing is allocated per
span) or, with ``corral[otel]`` installed and ``OTEL_EXPORTER_OTLP_*`` set, the OpenTelemetry one
of :mod:`corral.otel`. A span opened with :meth:`Tracer.span` is the child of the span current in
the calling task; tasks inherit the current span when they are created (it lives in a
``ContextVar``), so a tool call inside an agent task nests under its run.

Attributes never carry a run's input, output or a user's secrets: ids, names, statuses, counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Literal, Protocol

AttributeValue = str | bool | int | float
SpanKind = Literal["internal", "server", "client"]


class Span(Protocol):
    """An open span: what its owner may add before it ends."""

    def set_attribute(self, key: str, value: AttributeValue) -> None: ...

    def set_error(self, description: str) -> None:
        """Mark the span failed; ``description`` is a type or code, never user data."""
        ...

    def update_name(self, name: str) -> None:
        """Rename the span (an HTTP span learns its route only once routed)."""
        ...


class Tracer(Protocol):
    """Makes spans. Methods are synchronous, never block, and may be called from any task."""

    @property
    def enabled(self) -> bool:
        """False for :data:`NO_TRACER`: callers may skip work done only for spans."""
        ...

    def span(
        self,
        name: str,
        attributes: Mapping[str, AttributeValue] | None = None,
        *,
        parent: str | None = None,
        kind: SpanKind = "internal",
    ) -> AbstractContextManager[Span]:
        """A span current for the body of the ``with``; an exception leaving the body is
        recorded on it. ``parent`` — a W3C ``traceparent`` — continues a trace begun elsewhere
        (another process, the caller); without it the span is the child of the current one."""
        ...

    def traceparent(self) -> str | None:
        """The current span as a W3C ``traceparent`` header value, or None without one."""
        ...


class _NoSpan:
    __slots__ = ()

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        return None

    def set_error(self, description: str) -> None:
        return None

    def update_name(self, name: str) -> None:
        return None


class NoTracer:
    """Records nothing. Its ``span`` hands out one shared, stateless context manager."""

    __slots__ = ()

    @property
    def enabled(self) -> bool:
        return False

    def span(
        self,
        name: str,
        attributes: Mapping[str, AttributeValue] | None = None,
        *,
        parent: str | None = None,
        kind: SpanKind = "internal",
    ) -> AbstractContextManager[Span]:
        return NO_SPAN

    def traceparent(self) -> str | None:
        return None


# Both are stateless: nullcontext only returns what it was given, however often it is entered.
# NO_SPAN is what a caller uses instead of ``tracer.span(...)`` when ``not tracer.enabled``, so
# that tracing off costs no attribute dict either.
NO_SPAN: AbstractContextManager[Span] = nullcontext(_NoSpan())
NO_TRACER: Tracer = NoTracer()

__all__ = ["NO_SPAN", "NO_TRACER", "AttributeValue", "NoTracer", "Span", "SpanKind", "Tracer"]
