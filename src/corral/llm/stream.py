"""Reading a chat-completions event stream, without I/O: lines in, text and tool calls out.

:class:`SSEDecoder` turns the lines of a ``text/event-stream`` body into ``data`` payloads;
:func:`parse_chunk` checks one payload against the chat-completions chunk shape; and
:class:`CompletionBuilder` accumulates chunks into one :class:`Completion`. Anything that does
not fit raises :class:`~corral.llm.errors.LLMProtocolError` (or ``LLMServerError`` for an
error the server reports inside the stream) — never a ``KeyError`` or ``TypeError``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from corral.llm.errors import LLMProtocolError, LLMServerError

DONE = "[DONE]"
_SNIPPET = 80


class SSEDecoder:
    """Server-Sent Events framing: feed lines (without their line ending), get ``data`` back.

    ``feed`` returns the event's data (its ``data:`` lines joined by ``\\n``) when a blank line
    ends an event that had any, else None. ``event``, ``id``, ``retry`` and comments are
    ignored: chat-completions streams carry everything in ``data``.
    """

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        if not line:
            return self.flush()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None

    def flush(self) -> str | None:
        """The pending event's data, if any (for a body that ends without a blank line)."""
        if not self._data:
            return None
        data = "\n".join(self._data)
        self._data.clear()
        return data


class FunctionDelta(BaseModel):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(BaseModel):
    index: int | None = None
    id: str | None = None
    function: FunctionDelta | None = None


class Delta(BaseModel):
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class Choice(BaseModel):
    index: int = 0
    delta: Delta = Field(default_factory=Delta)
    finish_reason: str | None = None


class Usage(BaseModel):
    completion_tokens: int | None = None


class Chunk(BaseModel):
    """One ``data:`` payload of a chat-completions stream (unknown fields are ignored)."""

    choices: list[Choice] = Field(default_factory=list)
    usage: Usage | None = None
    model: str | None = None


def parse_chunk(data: str) -> Chunk:
    """Check one ``data`` payload; raises ``LLMProtocolError`` / ``LLMServerError``."""
    try:
        raw = json.loads(data)
    except ValueError:
        raise LLMProtocolError(f"a stream chunk is not JSON: {_snippet(data)}") from None
    if not isinstance(raw, dict):
        raise LLMProtocolError(f"a stream chunk is not a JSON object: {_snippet(data)}")
    if raw.get("error"):
        raise LLMServerError(f"it reported an error mid-stream: {_error_text(raw['error'])}")
    try:
        return Chunk.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise LLMProtocolError(
            f"a stream chunk does not have the chat-completions shape ({where}: {err['msg']})"
        ) from None


@dataclass(slots=True)
class ToolCall:
    """One complete tool call of a response; ``arguments`` is the JSON text the model wrote."""

    id: str
    name: str
    arguments: str

    def as_message_part(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(slots=True)
class Completion:
    """One model response, accumulated from its chunks."""

    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    model: str | None = None
    tokens: int = 0
    """Completion tokens: the server's ``usage`` when it sends one, else one per chunk."""


@dataclass(slots=True)
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class CompletionBuilder:
    """Accumulates the chunks of one response. Not shared: one builder per request."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._calls: dict[int, _PartialCall] = {}
        self._finish_reason: str | None = None
        self._model: str | None = None
        self._chunks = 0
        self._usage_tokens: int | None = None
        self.done = False

    @property
    def tokens(self) -> int:
        return self._usage_tokens if self._usage_tokens is not None else self._chunks

    def feed(self, data: str) -> str:
        """Take one ``data`` payload; returns the text it adds to the answer (maybe "")."""
        if data.strip() == DONE:
            self.done = True
            return ""
        chunk = parse_chunk(data)
        self._model = chunk.model or self._model
        if chunk.usage is not None and chunk.usage.completion_tokens is not None:
            self._usage_tokens = chunk.usage.completion_tokens
        text = ""
        for choice in chunk.choices:
            if choice.index != 0:  # we ask for one choice; ignore any other
                continue
            delta = choice.delta
            if delta.content or delta.tool_calls:
                self._chunks += 1
            if delta.content:
                text += delta.content
            for call in delta.tool_calls or ():
                self._add_call(call)
            if choice.finish_reason:
                self._finish_reason = choice.finish_reason
        if text:
            self._text.append(text)
        return text

    def _add_call(self, call: ToolCallDelta) -> None:
        if call.index is not None:
            index = call.index
        elif call.id and all(p.id != call.id for p in self._calls.values()):
            index = len(self._calls)  # a server without indices: a new id is a new call
        else:
            index = max(self._calls, default=0)
        partial = self._calls.setdefault(index, _PartialCall())
        if call.id and not partial.id:
            partial.id = call.id
        if call.function is not None:
            # Names arrive whole (some servers repeat them on every chunk); arguments in pieces.
            if call.function.name and not partial.name:
                partial.name = call.function.name
            if call.function.arguments:
                partial.arguments.append(call.function.arguments)

    def result(self) -> Completion:
        calls = []
        for index in sorted(self._calls):
            partial = self._calls[index]
            if not partial.name:
                raise LLMProtocolError("a tool call in the stream has no function name")
            calls.append(
                ToolCall(
                    id=partial.id or f"call_{index}",
                    name=partial.name,
                    arguments="".join(partial.arguments),
                )
            )
        return Completion(
            content="".join(self._text),
            tool_calls=calls,
            finish_reason=self._finish_reason,
            model=self._model,
            tokens=self.tokens,
        )

    @property
    def finish_reason(self) -> str | None:
        """Why the model stopped, once a chunk said so; None means the response is incomplete."""
        return self._finish_reason


def _snippet(text: str) -> str:
    return repr(text[:_SNIPPET] + ("…" if len(text) > _SNIPPET else ""))


def _error_text(error: object) -> str:
    if isinstance(error, dict):
        error = error.get("message") or error
    return str(error)[:300]
