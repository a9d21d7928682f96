"""The AG-UI request (``RunAgentInput``) and what corral makes of it: an agent's input.

Parsed leniently where AG-UI is open (unknown fields are kept, as the protocol's own models
do) and strictly where corral stores something: ``threadId`` becomes a thread binding, so it
is bounded and free of control characters.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator
from pydantic.alias_generators import to_camel

from corral.core.registry import AgentSpec
from corral.errors import InvalidRequest
from corral.store.thread_binding import MAX_EXTERNAL_ID

# What _printable accepts, as a JSON Schema pattern (the schema says what the server takes).
PRINTABLE = "^[^\\x00-\\x1f\\x7f-\\x9f]+$"


class AguiMessage(BaseModel):
    """One message of the conversation; only ``role`` and ``content`` are read."""

    model_config = ConfigDict(extra="allow", alias_generator=to_camel, populate_by_name=True)

    id: str = Field(max_length=MAX_EXTERNAL_ID)
    role: str = Field(max_length=32)
    content: str | list[dict[str, JsonValue]] | None = None


class RunAgentInput(BaseModel):
    """AG-UI's ``RunAgentInput``: ``threadId``, ``runId`` and ``messages`` are required."""

    model_config = ConfigDict(extra="allow", alias_generator=to_camel, populate_by_name=True)

    thread_id: str = Field(
        min_length=1, max_length=MAX_EXTERNAL_ID, json_schema_extra={"pattern": PRINTABLE}
    )
    run_id: str = Field(
        min_length=1, max_length=MAX_EXTERNAL_ID, json_schema_extra={"pattern": PRINTABLE}
    )
    messages: list[AguiMessage]
    state: JsonValue = None
    tools: list[JsonValue] | None = None
    context: list[JsonValue] | None = None
    forwarded_props: JsonValue = None

    @field_validator("thread_id", "run_id")
    @classmethod
    def _printable(cls, value: str) -> str:
        if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
            raise ValueError("must not contain control characters")
        return value


def last_user_text(messages: list[AguiMessage]) -> str | None:
    """The text of the last ``user`` message (its text parts joined), or None."""
    for message in reversed(messages):
        if message.role != "user":
            continue
        content = message.content
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            texts = [
                part["text"]
                for part in content
                if part.get("type") == "text" and isinstance(part.get("text"), str)
            ]
            if texts:
                return "\n".join(str(t) for t in texts)
        return None
    return None


def text_field(spec: AgentSpec) -> str | None:
    """The agent's one required string field (``message``, ``question``), if it has one."""
    schema = spec.input_schema()
    required = schema.get("required") or []
    if len(required) != 1:
        return None
    field = required[0]
    prop = (schema.get("properties") or {}).get(field) or {}
    return field if prop.get("type") == "string" else None


def agent_input(spec: AgentSpec, body: RunAgentInput) -> dict[str, Any]:
    """The input of ``spec`` for this request: ``forwardedProps.input`` when present, else the
    last user message's text in the agent's one required string field; else a 422."""
    props = body.forwarded_props
    if isinstance(props, dict) and "input" in props:
        given = props["input"]
        if not isinstance(given, dict):
            raise InvalidRequest(
                "forwardedProps.input must be a JSON object: the agent's input",
                [
                    {
                        "field": "forwardedProps.input",
                        "message": "must be an object",
                        "type": "dict_type",
                    }
                ],
            )
        return dict(given)
    field = text_field(spec)
    if field is None:
        raise InvalidRequest(
            f"{spec.name} takes more than one text: send its input as forwardedProps.input "
            "(GET /v1/agents shows its schema)",
            [
                {
                    "field": "forwardedProps.input",
                    "message": "required for this agent",
                    "type": "missing",
                }
            ],
        )
    text = last_user_text(body.messages)
    if text is None:
        raise InvalidRequest(
            f"send a user message with text (it becomes {spec.name}'s {field}), or the whole "
            "input as forwardedProps.input",
            [{"field": "messages", "message": "no user message with text", "type": "missing"}],
        )
    return {field: text}
