"""The run service: what every front door (HTTP, SSE, WebSocket) asks of runs.

It raises corral's domain errors (:class:`~corral.errors.NotFound`, :class:`Conflict`,
:class:`InvalidRequest`, :class:`QueueFullError`, :class:`ServiceUnavailable`...); the front
doors turn them into codes through one table (:mod:`corral.server.errors`). Ownership is always
checked against the store: another user's run reads exactly like a missing one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import unicodedata
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator

from corral.auth.identity import Identity
from corral.core.admission import Limits
from corral.core.asking import check_answer
from corral.core.context import ID_JSON_PATTERN, MAX_ID_LENGTH, new_id, validate_id
from corral.core.events import plain_json
from corral.core.registry import AgentRegistry, AgentSpec
from corral.errors import (
    NOT_FOUND_RUN,
    Conflict,
    InvalidRequest,
    NotFound,
    ServiceUnavailable,
    UnknownAgentError,
)
from corral.runs.queue import RunQueue
from corral.store.inputs import AcceptAnswer
from corral.store.ops import IDEMPOTENCY_CONFLICT, CreateRun, NewRun, find_idempotent
from corral.store.reads import Reads
from corral.store.records import RunRecord
from corral.store.thread_binding import BindThread, external_id_of
from corral.store.writer import EventWriter

log = logging.getLogger("corral.runs")

MAX_TIMEOUT_S = 24 * 3600.0
CANCEL_WAIT_S = 2.0
# A request's write waits this long for an unreachable database, then is a 503 (never stored).
REQUEST_WRITE_S = 3.0
MAX_CLIENT_REF = 128


def check_client_ref(value: object) -> str | None:
    """A WebSocket ``start_run``'s ``client_ref``: None when absent (or null), else a string of
    1-128 characters without control characters; anything else is :class:`InvalidRequest`.

    It is checked before anything else of the message, so a refused ``start_run`` never
    creates a run, and an accepted one can always be answered (it is echoed back).
    """
    if value is None:
        return None
    problem = None
    if not isinstance(value, str):
        problem = "must be a string"
    elif not 1 <= len(value) <= MAX_CLIENT_REF:
        problem = f"must be 1 to {MAX_CLIENT_REF} characters"
    elif any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        problem = "must not contain control characters or lone surrogates"
    if problem is None:
        assert isinstance(value, str)
        return value
    raise InvalidRequest(
        f"client_ref {problem}",
        [{"field": "client_ref", "message": problem, "type": "value_error"}],
    )


class RunRequest(BaseModel):
    """Body of ``POST /v1/runs`` (and of a WebSocket ``start_run``, minus ``type``)."""

    model_config = ConfigDict(extra="forbid")

    agent: str = Field(min_length=1, max_length=64)
    input: dict[str, JsonValue]
    thread_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_ID_LENGTH,
        json_schema_extra={"pattern": ID_JSON_PATTERN},
    )
    multitask: Literal["enqueue", "reject", "interrupt"] = "enqueue"
    # Strict: "10" or true is not a number of seconds.
    timeout_s: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT_S, strict=True)

    @field_validator("thread_id")
    @classmethod
    def _usable_thread_id(cls, value: str | None) -> str | None:
        # The same rules UserExecutionContext applies, checked here so that a thread id no
        # thread can have (control characters, NUL, a placeholder) is a 422, not a 500.
        return None if value is None else validate_id("thread_id", value)


class InputAnswer(BaseModel):
    """Body of ``POST /v1/runs/{run_id}/input`` (and of a WebSocket ``send_input``, minus
    ``type`` and ``run_id``): the answer to a waiting run's open input request."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(
        min_length=1, max_length=MAX_ID_LENGTH, description="`request_id` of `input_requested`"
    )
    value: JsonValue = Field(description="The answer; it must match the request's `schema`")


class RunService:
    """Admits, reads and cancels the caller's runs. One per app; safe from any task."""

    def __init__(
        self,
        *,
        registry: AgentRegistry,
        reads: Reads,
        writer: EventWriter,
        queue: RunQueue,
        limits: Limits,
    ) -> None:
        self.registry = registry
        self.reads = reads
        self.writer = writer
        self.queue = queue
        self.limits = limits
        self.accepting = True

    # -- starting -------------------------------------------------------------------------------

    def agent(self, name: str, identity: Identity) -> AgentSpec:
        """The agent ``name`` as ``identity`` sees it: :class:`NotFound` for an unknown agent
        and, in the very same words, for one gated by roles the user does not hold."""
        try:
            spec = self.registry.get_agent(name)
        except UnknownAgentError:
            spec = None
        if spec is None or not spec.visible_to(identity.roles):
            raise NotFound(f"no agent named {name!r}; GET /v1/agents lists them")
        return spec

    def agents(self, identity: Identity) -> list[AgentSpec]:
        """The agents ``identity`` may see and start (role-gated ones only with a role)."""
        return self.registry.agents_for(identity.roles)

    async def start(
        self,
        identity: Identity,
        request: RunRequest,
        idempotency_key: str | None = None,
        *,
        trace: str | None = None,
    ) -> tuple[RunRecord, bool]:
        """Validate, store and queue one run for ``identity``. Returns (run, created): created
        is False when an idempotency key's retry returned the earlier run. Once the run is being
        stored, cancelling the caller does not stop it from being stored and queued.

        The identity (roles, claims) is stored with the run, so the worker that executes it —
        on any node — gives the agent the same ``ctx.identity``. ``trace`` (a W3C
        ``traceparent``) is stored with the run: its worker continues that trace.

        ``idempotency_key`` is an HTTP ``Idempotency-Key`` or a WebSocket ``client_ref``: one
        key space per user, so the same string over either route names the same start (a
        client may send a start over its socket and retry it over HTTP). The key is kept
        24 h with a hash of ``request``; the same key with a different request is a
        :class:`Conflict`. Concurrent starts with one key create one run: the check is made
        again inside the write, serialized per user (:class:`CreateRun`).
        """
        if not self.accepting:
            raise ServiceUnavailable("the server is shutting down; retry on another node")
        user_id = identity.user_id
        spec = self.agent(request.agent, identity)
        try:
            spec.input_model.model_validate(request.input)
        except ValidationError as exc:
            raise InvalidRequest.from_validation(
                exc, ("input",), f"the input of {spec.name}"
            ) from None
        idempotency = None
        if idempotency_key is not None:
            digest = hashlib.sha256(request.model_dump_json().encode()).hexdigest()
            idempotency = (idempotency_key, digest)
            # A retry is answered before anything else (thread rules, queue limits) is
            # looked at: it must get the earlier run, not a fresh refusal or a side effect.
            earlier = await self.reads.db.read(
                lambda sql: find_idempotent(sql, user_id, idempotency_key, digest)
            )
            if earlier is not None:
                return earlier, False
        thread_id = request.thread_id
        if thread_id is not None and request.multitask != "enqueue":
            unfinished = await self.reads.unfinished_runs_of_thread(user_id, thread_id)
            if unfinished and request.multitask == "reject":
                raise Conflict(
                    "this thread has an unfinished run; wait for it, cancel it, or send "
                    "multitask=enqueue or interrupt"
                )
            for run_id in unfinished:
                await self.queue.cancel(user_id, run_id, "interrupted by a newer run on the thread")
        new = NewRun(
            run_id=new_id("run"),
            user_id=user_id,
            thread_id=thread_id or new_id("thread"),
            agent=spec.name,
            input=request.input,
            new_thread=thread_id is None,
            timeout_s=request.timeout_s,
            max_queued=self.limits.max_queued_per_user,
            idempotency=idempotency,
            identity=_storable(identity),
            trace=trace,
        )
        # Shielded: a caller cancelled between the commit and the queue (a socket closed
        # mid-start) must not leave a run stored as queued that no queue knows — it would never
        # run, and a retry with the same key would be answered with it.
        return await asyncio.shield(self._store_and_queue(new))

    async def _store_and_queue(self, new: NewRun) -> tuple[RunRecord, bool]:
        record, created = await self.writer.submit(CreateRun(new), within_s=REQUEST_WRITE_S)
        if created:
            await self.queue.submit(record)
        return record, created

    async def bind_thread(self, user_id: str, external_id: str) -> str:
        """The caller's thread bound to ``external_id`` (an AG-UI ``threadId``): made the
        first time the caller uses that id, the same thread every later time."""
        return await self.writer.submit(
            BindThread(user_id, external_id, new_id("thread")), within_s=REQUEST_WRITE_S
        )

    async def external_thread_id(self, user_id: str, thread_id: str) -> str | None:
        """The outside id the caller's thread is bound to, if any."""
        return await self.reads.db.read(lambda sql: external_id_of(sql, user_id, thread_id))

    # -- reading --------------------------------------------------------------------------------

    async def get_run(self, user_id: str, run_id: str) -> RunRecord:
        """The caller's run; :class:`NotFound` for a missing run and for another user's."""
        record = await self.reads.get_run(user_id, run_id)
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
        return await self.reads.list_runs(
            user_id, thread_id=thread_id, status=status, limit=limit, cursor=cursor
        )

    async def events(self, user_id: str, run_id: str, *, after: int, limit: int) -> list[bytes]:
        """Stored events (wire JSON) of the caller's run with ``seq > after``, in order."""
        bodies = await self.reads.events(user_id, run_id, after=after, limit=limit)
        if bodies is None:
            raise NotFound(NOT_FOUND_RUN)
        return bodies

    # -- answering --------------------------------------------------------------------------------

    async def send_input(self, user_id: str, run_id: str, answer: InputAnswer) -> RunRecord:
        """Answer the caller's waiting run (contract §9); returns the run (still ``waiting``
        until it takes a running slot again, which is at once when one is free).

        :class:`NotFound` for a run that is not theirs; :class:`Conflict` for a run not
        waiting, or a ``request_id`` that is not its open, unanswered request;
        :class:`InvalidRequest` (with ``details``) for a value that fails the request's
        schema — the run keeps waiting. The answer is stored before the executing process is
        told, so it reaches the run whichever node received it.
        """
        found = await self.reads.open_input(user_id, run_id)
        if found is None:
            raise NotFound(NOT_FOUND_RUN)
        request = found.check(answer.request_id)
        check_answer(request.get("schema"), answer.value)
        accept = AcceptAnswer(user_id, run_id, answer.request_id, answer.value)
        record = await self.writer.submit(accept, within_s=REQUEST_WRITE_S)
        await self.queue.answered(record)
        return record

    # -- cancelling -----------------------------------------------------------------------------

    async def cancel(self, user_id: str, run_id: str, *, wait: bool = True) -> RunRecord:
        """Cancel the caller's run; 404 for a run that is not theirs, 409 once finished.

        With ``wait``, answers with the run's final state when it ends within a moment (it
        usually does), else with its state then.
        """
        record = await self.get_run(user_id, run_id)
        if record.finished:
            raise Conflict(f"the run has already finished ({record.status})")
        if await self.queue.cancel(user_id, run_id, "cancelled by the user") and wait:
            await self.queue.wait_settled(run_id, CANCEL_WAIT_S)
            record = await self.reads.get_run(user_id, run_id) or record
        return record


def _storable(identity: Identity) -> dict[str, Any]:
    """The identity as stored with the run (plain JSON); claims a hook gave that are not JSON
    are dropped with a log line, so the run still carries its user and roles to any worker."""
    doc = identity.to_dict()
    try:
        stored: dict[str, Any] = plain_json(doc)
    except TypeError as exc:
        log.error(
            "the identity's claims are not JSON (%s); the run is stored without them",
            exc,
            extra={"user_id": identity.user_id},
        )
        stored = {**doc, "claims": {}}
    return stored


__all__ = ["IDEMPOTENCY_CONFLICT", "InputAnswer", "RunRequest", "RunService"]
