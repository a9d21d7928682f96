"""Whether to trace, from the standard ``OTEL_*`` variables, and the tracer of one process.

Tracing is on when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is
set (and neither ``OTEL_SDK_DISABLED=true`` nor ``OTEL_TRACES_EXPORTER=none`` turns it off).
Off, corral never imports OpenTelemetry and every span is the shared no-op of
:mod:`corral.core.tracing`. On, the extra ``corral[otel]`` must be installed: without it
:func:`check_tracing` raises a :class:`~corral.errors.ConfigurationError` naming it, which
``corral serve`` and ``corral worker`` turn into exit status 2 before starting anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Mapping

from corral.core.tracing import NO_TRACER, Tracer
from corral.errors import ConfigurationError

log = logging.getLogger("corral.telemetry")

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
EXTRA_HINT = "pip install 'corral[otel]'"


def tracing_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the ``OTEL_*`` variables ask for traces."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(env.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def check_tracing(environ: Mapping[str, str] | None = None) -> None:
    """Raise :class:`ConfigurationError` when tracing is asked for but cannot be done."""
    env = os.environ if environ is None else environ
    if not tracing_configured(env):
        return
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError as exc:
        given = next(n for n in ENDPOINT_VARIABLES if env.get(n, "").strip())
        raise ConfigurationError(
            f"{given} is set, so traces go out over OTLP, but the OpenTelemetry packages are "
            f"missing ({exc.name or exc}): install the extra with `{EXTRA_HINT}`, or unset "
            f"{given}"
        ) from None


@contextlib.asynccontextmanager
async def open_tracer(environ: Mapping[str, str] | None = None) -> AsyncIterator[Tracer]:
    """The process's tracer for as long as the ``async with`` lasts. On leaving, the spans
    still buffered are exported (in a thread; bounded by ``OTEL_BSP_EXPORT_TIMEOUT``)."""
    env = os.environ if environ is None else environ
    if not tracing_configured(env):
        yield NO_TRACER
        return
    check_tracing(env)
    from corral.otel import OtelTracer

    tracer = OtelTracer.from_environment(env)
    log.info("tracing on: spans go out over OTLP/HTTP")
    try:
        yield tracer
    finally:
        await asyncio.to_thread(tracer.shutdown)


__all__ = ["EXTRA_HINT", "check_tracing", "open_tracer", "tracing_configured"]
