"""One run of one agent for one context: the run state machine and the agent's handle on it."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from corral.auth.identity import Identity
from corral.core.asking import DEFAULT_INPUT_TIMEOUT_S, InputGate, LocalInputGate, Questions
from corral.core.context import UserExecutionContext
from corral.core.deadline import RunDeadline
from corral.core.events import (
    Event,
    EventType,
    RunStatus,
    dumps,
    loads,
    plain_json,
    redact,
    redact_text,
    terminal_status,
)
from corral.core.masking import Emission, EventMasker
from corral.core.registry import AgentRegistry, AgentSpec
from corral.core.secrets import SecretRedactor, redacting
from corral.core.tools import UnifiedToolExecutionEngine, _emit_even_if_cancelled
from corral.core.tracing import NO_TRACER, Tracer
from corral.errors import (
    AgentFailed,
    IllegalTransition,
    OwnershipError,
    RunError,
    ToolCallError,
    UnknownAgentError,
)

log = logging.getLogger("corral.engine")

DEFAULT_HISTORY_LIMIT = 256
MAX_STATE_BYTES = 1024 * 1024  # a thread's state, as JSON (contract §10)
MAX_THREAD_HISTORY = 1000


class EventSink(Protocol):
    """Where an engine's events go (store, then bus; or straight to a bus in tests).

    Contract: ``emit`` accepts the event — fixing its place in the run's order — before its
    first suspension point, and a caller cancelled while awaiting it loses nothing: the event
    is still stored and delivered. Awaiting it gives backpressure (e.g. until committed).
    """

    def emit(self, event: Event) -> Awaitable[None]: ...


class ThreadMemory(Protocol):
    """What a run may read of its thread (owner-scoped): earlier runs and the saved state."""

    async def history(self, context: UserExecutionContext, limit: int) -> list[dict[str, Any]]:
        """At most ``limit`` runs of the thread made before this one: the latest, oldest first."""
        ...

    async def state(self, context: UserExecutionContext) -> dict[str, Any]:
        """The thread's state as its last successful run left it (``{}`` for a new thread)."""
        ...


SecretSource = Callable[[Identity, str], Awaitable[str | None]]
"""Resolves one per-user secret for an identity (``--secrets``: ``SecretResolver.resolve``)."""


class EngineState(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(frozen=True, slots=True)
class RunOutcome:
    status: RunStatus
    output: Any = None
    error: dict[str, str] | None = None


class RunContext:
    """What an agent function receives: its identity, event helpers, tools and deadline.

    Everything reachable from here belongs to the one run it was made for. A tool that
    declares a parameter annotated ``corral.RunContext`` receives the same object.
    """

    __slots__ = ("_engine", "context", "tools")

    def __init__(self, engine: IsolatedExecutionEngine) -> None:
        self._engine = engine
        self.context: UserExecutionContext = engine.context
        self.tools: UnifiedToolExecutionEngine = engine.tools

    @property
    def user_id(self) -> str:
        return self.context.user_id

    @property
    def thread_id(self) -> str:
        return self.context.thread_id

    @property
    def run_id(self) -> str:
        return self.context.run_id

    @property
    def identity(self) -> Identity:
        """Who the run acts for: user id, roles and claims, as the authenticator established
        them when the run was started (read-only; the same on any worker). Claims are never
        written into events."""
        return self._engine.identity

    async def secret(self, name: str) -> str | None:
        """The per-user secret ``name`` of the run's user, from the ``--secrets`` resolver;
        None when the user has none or no resolver is configured.

        The value is the real one; from now on every occurrence of it in this run's events,
        output, error messages and log lines is ``[REDACTED]``. Raises
        :class:`~corral.errors.SecretUnavailable` when the resolver fails (left uncaught, the
        run ends with ``agent_error`` of type ``secret_unavailable``). Cancelling it cancels
        the resolver call.
        """
        return await self._engine.secret(name)

    @property
    def deadline(self) -> float | None:
        """The run's deadline on the event loop's clock (``loop.time()``), or None. Time spent
        waiting for input does not count: while the run waits, the deadline moves later."""
        return self._engine.deadline

    def remaining_s(self) -> float | None:
        deadline = self._engine.deadline
        return None if deadline is None else max(0.0, deadline - asyncio.get_running_loop().time())

    @property
    def cancel_requested(self) -> bool:
        return self._engine.cancel_reason is not None

    @property
    def tracer(self) -> Tracer:
        """Spans for this run's own steps (``with ctx.tracer.span("my.step"):``), children of
        its ``corral.run`` span; a tracer that records nothing when tracing is off."""
        return self._engine.tracer

    async def thread_history(self, limit: int = 50) -> list[dict[str, Any]]:
        """At most ``limit`` earlier runs of this thread — this user's only — the latest ones,
        oldest first.

        Each item is a run object (``agent``, ``input``, ``output``, ``status``...). Empty when
        the engine was made without thread memory (plain-Python use).
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a whole number from 1 to {MAX_THREAD_HISTORY}")
        threads = self._engine.threads
        if threads is None:
            return []
        return await threads.history(self.context, min(limit, MAX_THREAD_HISTORY))

    @property
    def state(self) -> dict[str, Any]:
        """The thread's state: a JSON object, ``{}`` for a new thread, as the last run of the
        thread that succeeded left it — or as this run last set it. Change it only through
        :meth:`set_state`; editing the returned dict in place saves nothing."""
        return self._engine.thread_state

    def set_state(self, state: dict[str, Any]) -> None:
        """Replace the thread's state with ``state`` (a JSON object of at most 1 MiB).

        Saved only when this run succeeds, in the same transaction as its ``agent_completed``;
        a run that fails, is cancelled or is interrupted leaves the thread's state as it was.
        Raises :class:`TypeError` or :class:`ValueError` at once for a state that cannot be kept.
        """
        self._engine.set_state(state)

    async def ask(
        self,
        prompt: str,
        schema: dict[str, Any] | type[BaseModel] | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """Ask the run's user and wait for the answer (contract §9).

        Emits ``input_requested`` and waits — the run's status is ``waiting``, it holds no
        running slot, and the time does not count toward its timeout — until the user answers
        (``input_received``) and a running slot is free again. ``schema`` is a JSON Schema dict
        or a pydantic model class; answers that fail it are refused to the user (422), so the
        returned value always matches it (with a model, it is an instance of the model).

        Raises :class:`corral.InputTimeout` when no answer comes within ``timeout_s`` (default
        ``CORRAL_INPUT_TIMEOUT_S``). Cancelling the run while it waits ends the wait at once.
        One question at a time: asking again before the first is answered is an error.
        """
        return await self._engine.questions.ask(prompt, schema, timeout_s)

    async def think(
        self, text: str, *, step: int | None = None, total_steps: int | None = None
    ) -> None:
        """Emit ``agent_thinking``: progress a person can read."""
        data: dict[str, Any] = {"text": str(text)}
        if step is not None:
            data["step"] = int(step)
        if total_steps is not None:
            data["total_steps"] = int(total_steps)
        await self._engine.emit(EventType.AGENT_THINKING, data)

    async def update(self, kind: str, **data: Any) -> None:
        """Emit ``agent_update`` with ``{"kind": kind, **data}`` (partial output, deltas...)."""
        await self._engine.emit(EventType.AGENT_UPDATE, {"kind": str(kind), **data})


class IsolatedExecutionEngine:
    """Runs one agent for one context and emits its events with ``seq`` 1, 2, 3...

    Made by :class:`~corral.core.factory.ExecutionEngineFactory` for each run; never reused.
    ``run`` emits ``agent_started``, runs the agent, and ends with exactly one terminal event.
    ``cancel`` may be called from any task at any time and is idempotent. The engine keeps a
    bounded history of its own events (``history``) and shares no mutable object with others.

    ``identity`` is who the run acts for (its ``user_id`` must be the context's); ``secrets``
    resolves ``ctx.secret(name)``, whose values the run's ``redactor`` masks in every event.
    """

    def __init__(
        self,
        context: UserExecutionContext,
        registry: AgentRegistry,
        sink: EventSink,
        *,
        timeout_s: float | None = None,
        default_timeout_s: float | None = None,
        tool_timeout_s: float | None = None,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        identity: Identity | None = None,
        secrets: SecretSource | None = None,
        tracer: Tracer = NO_TRACER,
        threads: ThreadMemory | None = None,
        input_gate: InputGate | None = None,
        input_timeout_s: float = DEFAULT_INPUT_TIMEOUT_S,
        new_thread: bool = False,
    ) -> None:
        if identity is not None and identity.user_id != context.user_id:
            raise OwnershipError(context.user_id, identity.user_id, "the identity of a run")
        self.context = context
        self._identity = identity
        self._secrets = secrets
        self.redactor = SecretRedactor()
        self._masker = EventMasker(self.redactor)
        self.tracer = tracer
        self.threads = threads
        self._new_thread = new_thread  # the run starts its thread: its state is {}, unread
        self.thread_state: dict[str, Any] = {}
        self._new_state: bytes | None = None  # JSON of set_state, saved with agent_completed
        self._registry = registry
        self._sink = sink
        self._timeout_s = timeout_s
        self._default_timeout_s = default_timeout_s
        self._seq = 0
        self._agent = ""
        self._state = EngineState.CREATED
        self._terminal_sent = False
        self._open_calls: set[str] = set()
        self.history: deque[Event] = deque(maxlen=history_limit)
        self.cancel_reason: str | None = None
        self._deadline = RunDeadline()
        self._agent_task: asyncio.Task[Any] | None = None
        tool_kwargs = {} if tool_timeout_s is None else {"default_timeout_s": tool_timeout_s}
        self.tools = UnifiedToolExecutionEngine(
            context, registry, self.emit, tracer=tracer, **tool_kwargs
        )
        self.run_context = RunContext(self)
        self.tools.run_context = self.run_context
        # Without a gate of the server's, questions are answered in memory (input_gate.answer).
        gate = input_gate if input_gate is not None else LocalInputGate()
        self.questions = Questions(self.emit, gate, self._deadline, input_timeout_s)

    @property
    def input_gate(self) -> InputGate:
        return self.questions.gate

    @property
    def state(self) -> EngineState:
        return self._state

    @property
    def identity(self) -> Identity:
        """The run's identity; without one given, the context's user with no roles or claims."""
        if self._identity is None:
            self._identity = Identity(self.context.user_id)
        return self._identity

    async def secret(self, name: str) -> str | None:
        """See :meth:`RunContext.secret`: the value is masked before this returns it."""
        if self._secrets is None:
            return None
        value = await self._secrets(self.identity, name)
        if value is not None:
            self.redactor.add(value)
        return value

    @property
    def last_seq(self) -> int:
        return self._seq

    @property
    def deadline(self) -> float | None:
        return self._deadline.deadline

    # -- events -------------------------------------------------------------------------------

    def emit(self, type_: EventType, data: dict[str, Any]) -> Awaitable[None]:
        """Mask, number and hand one event to the sink (lifecycle rules of contract §4).

        Synchronous up to the sink's acceptance, so events keep the order of the calls even
        when several tasks of one agent emit at once. Once the run resolved a secret, events
        are masked (:class:`~corral.core.masking.EventMasker`): a text delta may then be held
        back in part, or whole, until the next event.
        """
        if not self._masker.active:
            return self._emit(type_, data)
        return self._emit_all(self._masker.mask(type_, data))

    def _emit_all(self, emissions: list[Emission]) -> Awaitable[None]:
        """Emit each of ``emissions`` now (their order is fixed here); await them in order."""
        pending = [self._emit(type_, data) for type_, data in emissions]
        if len(pending) == 1:
            return pending[0]
        return _in_order(pending)

    def _emit(
        self, type_: EventType, data: dict[str, Any], thread_state: bytes | None = None
    ) -> Awaitable[None]:
        """Number and hand ``data`` (already masked) to the sink; ``thread_state`` (JSON) rides
        on ``agent_completed``, saved in its transaction."""
        if self._terminal_sent:
            raise IllegalTransition("run events", "no event after the terminal one", type_.value)
        if self._seq == 0 and type_ is not EventType.AGENT_STARTED and not type_.terminal:
            raise IllegalTransition("first event", "agent_started", type_.value)
        if type_ is EventType.TOOL_EXECUTING:
            self._open_calls.add(data["call_id"])
        elif type_ is EventType.TOOL_COMPLETED:
            self._open_calls.discard(data["call_id"])
        elif type_.terminal:
            self._terminal_sent = True
        self._seq += 1
        event = Event(
            type=type_,
            run_id=self.context.run_id,
            thread_id=self.context.thread_id,
            seq=self._seq,
            data=data,
            user_id=self.context.user_id,
            agent=self._agent,
            thread_state=thread_state,
        )
        self.history.append(event)
        return self._sink.emit(event)

    # -- thread state ---------------------------------------------------------------------------

    def set_state(self, state: dict[str, Any]) -> None:
        """:meth:`RunContext.set_state`: keep a private copy, saved with ``agent_completed``."""
        if not isinstance(state, dict):
            raise TypeError(
                f"the thread state is a JSON object (a dict), not {type(state).__name__}"
            )
        try:
            raw = dumps(state)
        except TypeError as exc:
            raise TypeError(f"the thread state must be plain JSON: {exc}") from None
        if len(raw) > MAX_STATE_BYTES:
            raise ValueError(
                f"the thread state is {len(raw)} bytes as JSON; keep it under {MAX_STATE_BYTES} "
                "(1 MiB): store large data elsewhere and keep a reference"
            )
        self._new_state = raw
        self.thread_state = loads(raw)

    def _stored_state(self) -> bytes | None:
        """The state to save: as the agent set it, but with every secret the run resolved
        masked — a resolved value never leaves the run (contract §2), and the state outlives
        it. (Keys are not redacted: the state is the agent's own memory, not shown to others.)"""
        if self._new_state is None or not self.redactor:
            return self._new_state
        return dumps(self.redactor.redact(loads(self._new_state)))

    # -- lifecycle ----------------------------------------------------------------------------

    def cancel(self, reason: str = "cancelled by the user") -> None:
        """Ask the run to stop; idempotent. Before ``run`` it makes the run end at once."""
        if self.cancel_reason is not None or self._state is EngineState.FINISHED:
            return
        self.cancel_reason = reason
        if self._agent_task is not None and not self._agent_task.done():
            self._agent_task.cancel()

    async def run(self, agent: str, input: Any) -> RunOutcome:
        """Execute ``agent`` with ``input`` to its one terminal event; returns the outcome.

        A run cancelled before it started emits only ``agent_cancelled``. If the task calling
        ``run`` is itself cancelled (shutdown), the agent is stopped, the run ends with
        ``agent_error`` of type ``interrupted``, and the cancellation propagates.
        """
        if self._state is not EngineState.CREATED:
            raise IllegalTransition("engine.run", EngineState.CREATED.value, self._state.value)
        self._state = EngineState.RUNNING
        self._agent = agent
        try:
            return await self._run(agent, input)
        finally:
            self._state = EngineState.FINISHED

    async def _run(self, agent: str, input: Any) -> RunOutcome:
        if self.cancel_reason is not None:
            await self.emit(EventType.AGENT_CANCELLED, {"reason": self.cancel_reason})
            return RunOutcome(RunStatus.CANCELLED)
        started = time.perf_counter()
        await self.emit(EventType.AGENT_STARTED, {"agent": agent})
        try:
            spec = self._registry.get_agent(agent)
            parsed = spec.input_model.model_validate(input)
        except UnknownAgentError as exc:
            return await self._fail_with("unknown_agent", str(exc), started)
        except ValidationError as exc:
            return await self._fail_with("validation_error", _short(exc), started)
        # The request's timeout, else the agent's own, else the server's default.
        timeout_s = next(
            (t for t in (self._timeout_s, spec.timeout_s, self._default_timeout_s) if t),
            None,
        )
        loop = asyncio.get_running_loop()
        self._deadline.start(timeout_s)
        self._agent_task = loop.create_task(self._call_agent(spec, parsed))
        if self.cancel_reason is not None:  # cancelled while agent_started was being stored
            self._agent_task.cancel()
        try:
            done = await self._deadline.wait(self._agent_task)
        except asyncio.CancelledError:
            await self._stop_agent()
            await _emit_even_if_cancelled(
                self._fail_with("interrupted", "the server stopped during the run", started)
            )
            raise
        if not done:
            await self._stop_agent()
            if self.cancel_reason is None:
                msg = f"the run did not finish within its {timeout_s:g} s timeout"
                return await self._fail_with("timeout", msg, started)
        return await self._settle(started)

    async def _call_agent(self, spec: AgentSpec, parsed: Any) -> Any:
        # Log lines of the agent's task (and of tasks it starts) are masked like its events.
        with redacting(self.redactor):
            if self.threads is not None and not self._new_thread:
                # Inside the agent's task: its timeout and cancellation cover the read.
                # (Skipped for a new thread: a read per run costs ~10 % of short runs.)
                self.thread_state = await self.threads.state(self.context)
            return await spec.func(self.run_context, parsed)

    async def _stop_agent(self) -> None:
        task = self._agent_task
        assert task is not None
        task.cancel()
        await asyncio.wait({task})

    async def _settle(self, started: float) -> RunOutcome:
        task = self._agent_task
        assert task is not None
        if task.cancelled() or self.cancel_reason is not None:
            # A cancellation that was asked for wins, even over an agent that swallowed it
            # and returned or raised: the caller was told the run is being cancelled.
            if not task.cancelled():
                task.exception()  # retrieved: whatever it raised is superseded
            reason = self.cancel_reason or "cancelled"
            await self.emit(EventType.AGENT_CANCELLED, {"reason": reason})
            return RunOutcome(RunStatus.CANCELLED)
        exc = task.exception()
        if exc is None:
            try:
                output = self.redactor.redact(redact(plain_json(task.result())))
            except TypeError as err:
                return await self._fail_with(
                    "invalid_output", f"the agent's output is {err}", started
                )
            duration = _ms(started)
            await self._emit_final(
                EventType.AGENT_COMPLETED,
                {"output": output, "duration_ms": duration},
                thread_state=self._stored_state(),
            )
            return RunOutcome(RunStatus.SUCCEEDED, output=output)
        if isinstance(exc, AgentFailed):
            return await self._fail_with(exc.error_type, exc.message, started)
        if isinstance(exc, ToolCallError):
            return await self._fail_with("tool_error", str(exc), started)
        if isinstance(exc, RunError):  # SecretUnavailable and the like: their own type
            return await self._fail_with(exc.error_type, str(exc), started)
        log.warning(
            "agent raised %s",
            type(exc).__name__,
            extra={"user_id": self.context.user_id, "run_id": self.context.run_id},
        )
        return await self._fail_with("agent_error", f"{type(exc).__name__}: {exc}", started)

    async def _fail_with(self, type_: str, message: str, started: float) -> RunOutcome:
        # Masked before it is cut: a cut could leave a secret's head that no longer matches.
        error = {"type": type_, "message": self.redactor.redact_text(redact_text(message))[:2000]}
        await self._emit_final(EventType.AGENT_ERROR, {"error": error, "duration_ms": _ms(started)})
        return RunOutcome(terminal_status(EventType.AGENT_ERROR, {"error": error}), error=error)

    async def _emit_final(
        self, type_: EventType, data: dict[str, Any], *, thread_state: bytes | None = None
    ) -> None:
        """Emit a terminal event whose ``data`` is masked already (the outcome returns the
        same values), after what an open delta stream still holds."""
        held = [self._emit(t, d) for t, d in self._masker.close()]
        final = self._emit(type_, data, thread_state)
        await _in_order([*held, final])


async def _in_order(pending: list[Awaitable[None]]) -> None:
    for awaitable in pending:
        await awaitable


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _short(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "(input)"
        parts.append(f"{where}: {err['msg']}")
    return "invalid input: " + "; ".join(parts)
