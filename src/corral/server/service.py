"""Starting and cancelling runs for the HTTP and WebSocket front doors alike."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator

from corral.core.context import MAX_ID_LENGTH, UserExecutionContext, new_id, validate_id
from corral.core.factory import EngineLease, ExecutionEngineFactory
from corral.core.registry import AgentRegistry
from corral.errors import (
    Conflict,
    NotFound,
    ServiceUnavailable,
    StoreError,
    StoreUnavailable,
    UnknownAgentError,
)
from corral.server.errors import NOT_FOUND_RUN, NOT_FOUND_THREAD, validation_error
from corral.store.runs import IdempotencyConflict, RunRecord, RunStore, ThreadNotFound
from corral.store.writer import EventWriter

log = logging.getLogger("corral.runs")

MAX_TIMEOUT_S = 24 * 3600.0
CANCEL_WAIT_S = 2.0


class RunRequest(BaseModel):
    """Body of ``POST /v1/runs`` (and of a WebSocket ``start_run``, minus ``type``)."""

    model_config = ConfigDict(extra="forbid")

    agent: str = Field(min_length=1, max_length=64)
    input: dict[str, JsonValue]
    thread_id: str | None = Field(default=None, min_length=1, max_length=MAX_ID_LENGTH)
    multitask: Literal["enqueue", "reject", "interrupt"] = "enqueue"
    timeout_s: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT_S)

    @field_validator("thread_id")
    @classmethod
    def _usable_thread_id(cls, value: str | None) -> str | None:
        # The same rules UserExecutionContext applies, checked here so that a thread id no
        # thread can have (control characters, NUL, a placeholder) is a 422, not a 500.
        return None if value is None else validate_id("thread_id", value)


class RunService:
    """Admits, starts, tracks and cancels this process's runs.

    One per app. ``_tasks`` holds the task of each run this process executes, removed when
    the run ends, so it is as large as the work in progress — and it is never consulted to
    decide *whose* run something is: ownership is always checked against the store.
    """

    def __init__(
        self,
        store: RunStore,
        factory: ExecutionEngineFactory,
        writer: EventWriter,
        registry: AgentRegistry,
    ) -> None:
        self.store = store
        self.factory = factory
        self.writer = writer
        self.registry = registry
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.accepting = True

    async def start(
        self, user_id: str, request: RunRequest, idempotency_key: str | None = None
    ) -> tuple[RunRecord, bool]:
        """Validate, admit and start one run. Returns (run, created) — created is False when
        an ``Idempotency-Key`` replay returned the earlier run. Raises :class:`ApiError`."""
        if not self.accepting:
            raise ServiceUnavailable("the server is shutting down; retry on another node")
        try:
            spec = self.registry.get_agent(request.agent)
        except UnknownAgentError:
            raise NotFound(f"no agent named {request.agent!r}; GET /v1/agents lists them") from None
        try:
            spec.input_model.model_validate(request.input)
        except ValidationError as exc:
            raise validation_error(exc, ("input",), f"the input of {spec.name}") from None
        idempotency = None
        if idempotency_key is not None:
            digest = hashlib.sha256(request.model_dump_json().encode()).hexdigest()
            idempotency = (idempotency_key, digest)
            # A retry is answered before anything else (thread rules, queue limits) is
            # looked at: it must get the earlier run, not a fresh refusal or a side effect.
            try:
                earlier = await self.store.find_idempotent(user_id, *idempotency)
            except IdempotencyConflict:
                raise Conflict(
                    "this Idempotency-Key was used with a different request; use a new key"
                ) from None
            if earlier is not None:
                return earlier, False
        thread_id = request.thread_id
        if thread_id is not None and request.multitask != "enqueue":
            unfinished = await self._unfinished(user_id, thread_id)
            if unfinished and request.multitask == "reject":
                raise Conflict(
                    "this thread has an unfinished run; wait for it, cancel it, or send "
                    "multitask=enqueue or interrupt",
                )
            for run_id in unfinished:
                await self._cancel_active(
                    user_id, run_id, "interrupted by a newer run on the thread"
                )
        context = UserExecutionContext(
            user_id=user_id, thread_id=thread_id or new_id("thread"), run_id=new_id("run")
        )
        return await self._admit(context, spec.name, request, idempotency)

    async def _cancel_active(self, user_id: str, run_id: str, reason: str) -> bool:
        """Ask a queued or running run to stop; True if this process reached it."""
        return self.factory.cancel(user_id, run_id, reason)

    async def _create(
        self,
        context: UserExecutionContext,
        agent: str,
        request: RunRequest,
        idempotency: tuple[str, str] | None,
    ) -> tuple[RunRecord, bool]:
        """Insert the run, translating the store's refusals into API errors."""
        try:
            return await self.store.create_run(
                user_id=context.user_id,
                run_id=context.run_id,
                agent=agent,
                input=request.input,
                thread_id=context.thread_id,
                new_thread=request.thread_id is None,
                timeout_s=request.timeout_s,
                idempotency=idempotency,
            )
        except ThreadNotFound:
            raise NotFound(NOT_FOUND_THREAD) from None
        except IdempotencyConflict:
            raise Conflict(
                "this Idempotency-Key was used with a different request; use a new key"
            ) from None
        except StoreError as exc:
            raise StoreUnavailable(str(exc)) from None

    async def _admit(
        self,
        context: UserExecutionContext,
        agent: str,
        request: RunRequest,
        idempotency: tuple[str, str] | None,
    ) -> tuple[RunRecord, bool]:
        """Single node: reserve a place in this process's factory, store, start the task."""
        run_id = context.run_id
        lease = self.factory.engine_for(context, self.writer, timeout_s=request.timeout_s)
        try:
            record, created = await self._create(context, agent, request, idempotency)
        except BaseException:
            lease.abandon()
            raise
        if not created:
            lease.abandon()
            return record, False
        task = asyncio.get_running_loop().create_task(
            self._execute(lease, agent, request.input), name=f"run {run_id}"
        )
        self._tasks[run_id] = task
        task.add_done_callback(self._forget)
        return record, True

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task.get_name().removeprefix("run "), None)

    async def _unfinished(self, user_id: str, thread_id: str) -> list[str]:
        return await self.store.unfinished_runs_of_thread(user_id, thread_id)

    async def _execute(self, lease: EngineLease, agent: str, input: dict[str, Any]) -> None:
        context = lease.engine.context
        try:
            async with lease as engine:
                await engine.run(agent, input)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "run could not complete",
                extra={"user_id": context.user_id, "run_id": context.run_id},
            )

    async def cancel(self, user_id: str, run_id: str, *, wait: bool = True) -> RunRecord:
        """Cancel the caller's run; 404 for a run that is not theirs, 409 once finished.

        With ``wait``, answers with the run's final state when it ends within a moment (it
        usually does), else with its state then.
        """
        record = await self.get_run(user_id, run_id)
        if record.finished:
            raise Conflict(f"the run has already finished ({record.status})")
        if await self._cancel_active(user_id, run_id, "cancelled by the user") and wait:
            await self._settled(run_id, CANCEL_WAIT_S)
            record = await self.store.get_run(user_id, run_id) or record
        return record

    async def get_run(self, user_id: str, run_id: str) -> RunRecord:
        """The caller's run; :class:`NotFound` for a missing run and for another user's."""
        record = await self.store.get_run(user_id, run_id)
        if record is None:
            raise NotFound(NOT_FOUND_RUN)
        return record

    async def list_runs(
        self,
        user_id: str,
        *,
        thread_id: str | None,
        status: str | None,
        limit: int,
        cursor: int | None,
    ) -> tuple[list[RunRecord], str | None]:
        """A page of the caller's runs, newest first, and the cursor of the next page."""
        return await self.store.list_runs(
            user_id, thread_id=thread_id, status=status, limit=limit, cursor=cursor
        )

    async def events(self, user_id: str, run_id: str, *, after: int, limit: int) -> list[bytes]:
        """Stored events (wire JSON) of the caller's run with ``seq > after``, in order."""
        bodies = await self.store.events(user_id, run_id, after=after, limit=limit)
        if bodies is None:
            raise NotFound(NOT_FOUND_RUN)
        return bodies

    async def _settled(self, run_id: str, timeout_s: float) -> None:
        """Wait (bounded) for this process's task of ``run_id`` to end."""
        task = self._tasks.get(run_id)
        if task is not None:
            await asyncio.wait({task}, timeout=timeout_s)

    def active_runs(self) -> int:
        return len(self._tasks)

    async def drain(self, grace_s: float) -> None:
        """Stop accepting runs; give running ones ``grace_s`` to finish; interrupt the rest."""
        self.accepting = False
        tasks = list(self._tasks.values())
        if tasks:
            log.info("waiting up to %.0f s for %d run(s) to finish", grace_s, len(tasks))
            await asyncio.wait(tasks, timeout=grace_s)
        leftover = [t for t in self._tasks.values() if not t.done()]
        for task in leftover:
            task.cancel()
        if leftover:
            await asyncio.wait(leftover, timeout=5.0)
