"""The OpenTelemetry tracer (``pip install 'corral[otel]'``): spans out over OTLP/HTTP (protobuf).

Imported only when tracing is configured (:mod:`corral.telemetry` decides); nothing else in
corral imports OpenTelemetry. Each app gets a :class:`~opentelemetry.sdk.trace.TracerProvider` of
its own — the process-wide global provider is left alone, so an app that embeds corral keeps
its own set-up — with the exporter reading the standard ``OTEL_*`` variables (endpoint,
headers, timeout, batch delays) and the sampler from ``OTEL_TRACES_SAMPLER``.

The current span lives in OpenTelemetry's context, a ``ContextVar``: a span opened here is the
child of the one current in the calling task, and tasks started inside it inherit it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from types import MappingProxyType

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from corral.core.tracing import AttributeValue, Span, SpanKind

DEFAULT_SERVICE_NAME = "corral"
_KINDS = MappingProxyType(
    {
        "internal": trace.SpanKind.INTERNAL,
        "server": trace.SpanKind.SERVER,
        "client": trace.SpanKind.CLIENT,
    }
)


class _OtelSpan:
    __slots__ = ("_span",)

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self._span.set_attribute(key, value)

    def set_error(self, description: str) -> None:
        self._span.set_status(Status(StatusCode.ERROR, description))

    def update_name(self, name: str) -> None:
        self._span.update_name(name)


class OtelTracer:
    """:class:`corral.core.tracing.Tracer` on an OpenTelemetry SDK provider of its own."""

    def __init__(self, provider: TracerProvider) -> None:
        from corral import __version__

        self._provider = provider
        self._tracer = provider.get_tracer("corral", __version__)
        self._propagator = TraceContextTextMapPropagator()

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> OtelTracer:
        """A tracer exporting to ``OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`` in batches, as the
        service ``OTEL_SERVICE_NAME`` (default ``corral``)."""
        service = environ.get("OTEL_SERVICE_NAME", "").strip() or DEFAULT_SERVICE_NAME
        # Resource.create adds OTEL_RESOURCE_ATTRIBUTES; the service name given here wins.
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        return cls(provider)

    @property
    def enabled(self) -> bool:
        return True

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        attributes: Mapping[str, AttributeValue] | None = None,
        *,
        parent: str | None = None,
        kind: SpanKind = "internal",
    ) -> Iterator[Span]:
        context = None
        if parent is not None:
            # An unparsable traceparent gives an empty context: the span starts a new trace.
            context = self._propagator.extract({"traceparent": parent})
        with self._tracer.start_as_current_span(
            name, context=context, kind=_KINDS[kind], attributes=attributes
        ) as span:
            yield _OtelSpan(span)

    def traceparent(self) -> str | None:
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=otel_context.get_current())
        return carrier.get("traceparent")

    def shutdown(self) -> None:
        """Export what is buffered (bounded by ``OTEL_BSP_EXPORT_TIMEOUT``), then stop.
        Blocking: call it from a thread."""
        self._provider.shutdown()


__all__ = ["DEFAULT_SERVICE_NAME", "OtelTracer"]
