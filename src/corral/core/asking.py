"""Asking a run's user (contract §9): the request, its schema, the answer and the gate.

An agent calls ``await ctx.ask(prompt, schema)``; its engine emits ``input_requested`` and
hands the :class:`InputRequest` to an :class:`InputGate`, which waits for the answer without
holding a running slot and gives the slot back before it returns. The server's gate
(:mod:`corral.runs.inputs`) waits on the store, where any API node stores the answer;
:class:`LocalInputGate` is the in-memory one of a plain-Python engine.

Answers are checked against the request's JSON Schema here, once, for every front door:
:func:`answer_problems` names each bad field the way a 422 ``details`` list does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for
from pydantic import BaseModel

from corral.core.context import new_id
from corral.core.deadline import RunDeadline
from corral.core.events import EventType, plain_json, redact
from corral.errors import Conflict, IllegalTransition, InputTimeout, InvalidRequest

MAX_PROMPT_CHARS = 16_000
MAX_DETAILS = 20
DEFAULT_INPUT_TIMEOUT_S = 3600.0

Emit = Callable[[EventType, dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class InputRequest:
    """One open question of one run."""

    request_id: str
    prompt: str
    schema: dict[str, Any] | None  # a JSON Schema, or None: any JSON value
    timeout_s: float

    def event_data(self) -> dict[str, Any]:
        """``input_requested``'s data (and what the store keeps while the run waits)."""
        return {"request_id": self.request_id, "prompt": self.prompt, "schema": self.schema}


class Answer(NamedTuple):
    """The user's answer, as it was sent (unredacted: it is the agent's input)."""

    value: Any


class InputGate(Protocol):
    """Where a run waits for its user's answer."""

    async def wait(self, request: InputRequest, asked: Awaitable[None]) -> Answer | None:
        """Wait for ``asked`` (the emit of ``request``'s ``input_requested``: then it is
        stored), give back the run's running slot, wait for the answer to ``request`` or for
        its ``timeout_s``, then wait for a running slot again. Returns the answer, or None
        when the timeout passed first (the request is then closed: a later answer is refused).

        Answers to ``request`` are accepted from the moment this is called. Cancellation (the
        run is cancelled or interrupted) ends the wait at once.
        """
        ...


def json_schema_of(schema: Mapping[str, Any] | type[BaseModel] | None) -> dict[str, Any] | None:
    """The JSON Schema ``ask`` sends for ``schema`` (a dict, a pydantic model class or None).

    Raises :class:`TypeError` for anything else and :class:`ValueError` for a dict that is not
    a valid JSON Schema, so a mistake shows in the agent's code, not in its user's answer.
    """
    if schema is None:
        return None
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema.model_json_schema()
    if not isinstance(schema, Mapping):
        raise TypeError(
            f"schema must be a JSON Schema (a dict) or a pydantic model class, not "
            f"{type(schema).__name__}"
        )
    try:
        doc = plain_json(dict(schema))
    except TypeError as exc:
        raise TypeError(f"schema must be plain JSON: {exc}") from None
    try:
        validator_for(doc, default=Draft202012Validator).check_schema(doc)
    except SchemaError as exc:
        raise ValueError(f"schema is not a valid JSON Schema: {exc.message}") from None
    assert isinstance(doc, dict)
    return doc


def answer_problems(schema: dict[str, Any] | None, value: Any) -> list[dict[str, Any]]:
    """One ``{"field", "message", "type"}`` per way ``value`` fails ``schema`` (empty: valid).

    ``field`` is ``value`` or a path below it (``value.age``, ``value.items.0``); ``type`` is
    the JSON Schema keyword that failed.
    """
    if schema is None:
        return []
    validator = validator_for(schema, default=Draft202012Validator)(schema)
    problems = []
    try:
        errors = sorted(validator.iter_errors(value), key=lambda e: [str(p) for p in e.path])
    except Exception as exc:  # a $ref that resolves nowhere: the schema cannot be checked
        message = f"the question's schema cannot be checked ({type(exc).__name__})"
        return [{"field": "value", "message": message, "type": "schema"}]
    for error in errors[:MAX_DETAILS]:
        path = ".".join(str(p) for p in ("value", *error.path))
        message = error.message if len(error.message) <= 300 else error.message[:299] + "…"
        problems.append({"field": path, "message": message, "type": str(error.validator)})
    return problems


def check_answer(schema: dict[str, Any] | None, value: Any) -> None:
    """Raise :class:`InvalidRequest` (422, with ``details``) when ``value`` fails ``schema``."""
    problems = answer_problems(schema, value)
    if problems:
        fields = ", ".join(dict.fromkeys(p["field"] for p in problems[:5]))
        raise InvalidRequest(
            f"the answer does not match the question's schema: check {fields}", problems
        )


class LocalInputGate:
    """An in-memory gate for engines run from plain Python: :meth:`answer` resolves the open
    request. It holds no slots (plain-Python admission does not suspend runs).

    All methods run on the event loop's thread.
    """

    def __init__(self) -> None:
        self._open: dict[str, tuple[InputRequest, asyncio.Future[Answer]]] = {}

    @property
    def open_requests(self) -> list[InputRequest]:
        return [request for request, _ in self._open.values()]

    async def wait(self, request: InputRequest, asked: Awaitable[None]) -> Answer | None:
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._open[request.request_id] = (request, future)
        try:
            await asked
            return await asyncio.wait_for(future, request.timeout_s)
        except TimeoutError:
            return None
        finally:
            self._open.pop(request.request_id, None)

    def answer(self, request_id: str, value: Any) -> None:
        """Answer an open request: :class:`Conflict` when ``request_id`` is not open,
        :class:`InvalidRequest` when ``value`` fails its schema."""
        entry = self._open.get(request_id)
        if entry is None or entry[1].done():
            raise Conflict(f"{request_id!r} is not an open input request of this run")
        request, future = entry
        check_answer(request.schema, value)
        future.set_result(Answer(value))


class Questions:
    """One run's questions to its user: one open at a time, the run's deadline paused while it
    waits. Made by the run's engine with its ``emit``; used through ``ctx.ask``."""

    __slots__ = ("_asking", "_deadline", "_default_timeout_s", "_emit", "gate")

    def __init__(
        self, emit: Emit, gate: InputGate, deadline: RunDeadline, default_timeout_s: float
    ) -> None:
        self._emit = emit
        self.gate = gate
        self._deadline = deadline
        self._default_timeout_s = default_timeout_s
        self._asking = False

    async def ask(
        self,
        prompt: str,
        schema: Mapping[str, Any] | type[BaseModel] | None,
        timeout_s: float | None,
    ) -> Any:
        """Emit ``input_requested``, wait at the gate with the deadline paused, emit
        ``input_received`` and return the answer (see ``RunContext.ask``)."""
        if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"prompt must be text of 1 to {MAX_PROMPT_CHARS} characters")
        timeout = self._default_timeout_s if timeout_s is None else timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        model = schema if isinstance(schema, type) and issubclass(schema, BaseModel) else None
        request = InputRequest(new_id("input"), prompt, json_schema_of(schema), float(timeout))
        if self._asking:
            raise IllegalTransition("ctx.ask", "one open question at a time", "a second question")
        self._asking = True
        self._deadline.pause()
        try:
            # The gate awaits the emit to its commit (the writer holds input_requested like a
            # terminal event): the question is stored, and answerable, before the run lets go
            # of its slot.
            asked = self._emit(EventType.INPUT_REQUESTED, request.event_data())
            answer = await self.gate.wait(request, asked)
        finally:
            self._deadline.resume()
            self._asking = False
        if answer is None:
            raise InputTimeout(request.request_id, request.timeout_s)
        shown = redact(plain_json(answer.value))
        await self._emit(
            EventType.INPUT_RECEIVED, {"request_id": request.request_id, "value": shown}
        )
        return answer.value if model is None else model.model_validate(answer.value)
