"""Tool calls for one run: validated, time-limited, always a complete event pair.

Redaction applies to the events only: the caller (the agent) gets the tool's result exactly as
the tool produced it (contract §4), while ``tool_executing``/``tool_completed`` carry the
key-redacted forms (and the engine masks resolved secret values in every event it emits).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from corral.core.context import UserExecutionContext
from corral.core.events import EventType, plain_json, redact, redact_text
from corral.core.registry import AgentRegistry
from corral.core.tracing import NO_SPAN, NO_TRACER, Tracer
from corral.errors import ToolCallError, UnknownToolError

if TYPE_CHECKING:
    from corral.core.engine import RunContext

DEFAULT_TOOL_TIMEOUT_S = 60.0

EmitFunc = Callable[[EventType, dict[str, Any]], Awaitable[None]]


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "(arguments)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


class UnifiedToolExecutionEngine:
    """Runs tools for one :class:`UserExecutionContext`.

    Every call emits ``tool_executing`` and then exactly one ``tool_completed`` — on success,
    bad arguments, an unknown tool, an exception (status ``error``), the tool's timeout (status
    ``timeout``) and cancellation of the run (status ``error``, then the cancellation goes on).
    Not shared between runs. ``call_id`` values are ``call_<n>_<tag>``: numbered within the
    run, and tagged with a digest of the run id so that they are also unique across the runs of
    a thread (AG-UI clients keep tool calls by id for a whole conversation). ``run_context`` is
    what a tool declaring a ``corral.RunContext`` parameter receives (the run's engine sets it);
    a tool engine without one refuses such tools. With a ``tracer``, each call is a
    ``corral.tool`` span (its name, call id and status; never its arguments or result).
    """

    def __init__(
        self,
        context: UserExecutionContext,
        registry: AgentRegistry,
        emit: EmitFunc,
        *,
        default_timeout_s: float = DEFAULT_TOOL_TIMEOUT_S,
        tracer: Tracer = NO_TRACER,
    ) -> None:
        self.context = context
        self._registry = registry
        self._emit = emit
        self._default_timeout_s = default_timeout_s
        self._tracer = tracer
        self._call_numbers = itertools.count(1)
        self.run_context: RunContext | None = None
        self._call_tag = hashlib.blake2b(context.run_id.encode(), digest_size=5).hexdigest()

    async def call(self, tool: str, /, **args: Any) -> Any:
        """Run ``tool`` with ``args`` and return its result, as the tool returned it.

        Raises :class:`ToolCallError` when the call ends in ``error`` or ``timeout``; the event
        pair has been emitted by then. Cancellation: the ``tool_completed`` event is emitted
        before :class:`asyncio.CancelledError` propagates.
        """
        call_id = f"call_{next(self._call_numbers)}_{self._call_tag}"
        tool_name = tool if isinstance(tool, str) else repr(tool)
        await self._emit(
            EventType.TOOL_EXECUTING,
            {"call_id": call_id, "tool": tool_name, "args": redact(_jsonable_or_repr(args))},
        )
        started = time.perf_counter()
        status, result, shown, error = "error", None, None, None
        cancelled = False
        try:
            span_context = (
                self._tracer.span(
                    "corral.tool",
                    {
                        "corral.tool": tool_name,
                        "corral.call_id": call_id,
                        "corral.run_id": self.context.run_id,
                    },
                )
                if self._tracer.enabled
                else NO_SPAN
            )
            with span_context as span:
                status, result, shown, error = await self._invoke(tool_name, args)
                span.set_attribute("corral.tool.status", status)
                if error is not None:
                    span.set_error(error["type"])
        except asyncio.CancelledError:
            cancelled = True
            status, error = "error", {"type": "cancelled", "message": "the run was cancelled"}
            raise
        finally:
            data: dict[str, Any] = {"call_id": call_id, "tool": tool_name, "status": status}
            if status == "success":
                data["result"] = shown
            else:
                data["error"] = error
            data["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
            completed = self._emit(EventType.TOOL_COMPLETED, data)
            if cancelled:
                await _emit_even_if_cancelled(completed)
            else:
                await completed
        if status != "success":
            assert error is not None
            raise ToolCallError(tool_name, status, error["message"])
        return result

    async def _invoke(
        self, tool: str, args: dict[str, Any]
    ) -> tuple[str, Any, Any, dict[str, str] | None]:
        """(status, the result for the caller, its redacted form for the event, error)."""
        try:
            spec = self._registry.get_tool(tool)
        except UnknownToolError as exc:
            return "error", None, None, {"type": "unknown_tool", "message": str(exc)}
        try:
            params = spec.params_model.model_validate(args)
        except ValidationError as exc:
            message = f"invalid arguments for {tool}: {_validation_message(exc)}"
            return "error", None, None, {"type": "invalid_args", "message": redact_text(message)}
        kwargs = dict(params.__dict__)  # the validated fields (extra arguments are refused)
        if spec.context_param is not None:
            if self.run_context is None:
                message = f"{tool} takes a RunContext; call it from an agent's ctx.tools"
                return "error", None, None, {"type": "no_context", "message": message}
            kwargs[spec.context_param] = self.run_context
        timeout_s = spec.timeout_s if spec.timeout_s is not None else self._default_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                raw = await spec.func(**kwargs)
        except TimeoutError:
            message = f"{tool} did not finish within {timeout_s:g} s"
            return "timeout", None, None, {"type": "timeout", "message": message}
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            message = redact_text(f"{type(exc).__name__}: {exc}")
            return "error", None, None, {"type": "tool_error", "message": message}
        try:
            # The event holds a plain-JSON, key-redacted copy; the caller gets ``raw`` itself.
            return "success", raw, redact(plain_json(raw)), None
        except TypeError as exc:
            return "error", None, None, {"type": "invalid_result", "message": str(exc)}


def _jsonable_or_repr(value: dict[str, Any]) -> Any:
    try:
        return plain_json(value)
    except TypeError:
        return {k: repr(v) for k, v in value.items()}


async def _emit_even_if_cancelled(awaitable: Awaitable[Any]) -> None:
    """Finish an emit although the surrounding task is being cancelled.

    The emit runs in its own task and is awaited through :func:`asyncio.shield`; a second
    cancellation arriving meanwhile is re-raised only after the emit completed, so the event
    pair is never left half-written.
    """
    task = asyncio.ensure_future(awaitable)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    task.result()
    if cancelled:
        raise asyncio.CancelledError
