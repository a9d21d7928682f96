"""Request inputs, parsed strictly and described once: what a handler reads is what OpenAPI says.

Each :class:`Param` both parses its value from a request and describes itself for the OpenAPI
document, so the schema cannot drift from the code. Integers are ASCII digits only and stay
within what the database stores (a 32-bit signed column on PostgreSQL): anything else is a 422
naming the field — never a 500 from a driver, or a 503 that sends a client into retries.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import HTTPConnection, Request

from corral.errors import InvalidRequest, PayloadTooLarge
from corral.server.errors import invalid_field, validation_error

MAX_INT = 2**31 - 1  # the largest seq, row id or offset the store keeps (PostgreSQL INTEGER)
_DIGITS = re.compile(r"[0-9]{1,10}")  # a str pattern: [0-9] is ASCII only, unlike \d

Location = Literal["query", "header", "path"]
M = TypeVar("M", bound=BaseModel)


def parse_int(raw: str, field_name: str, *, ge: int = 0, le: int = MAX_INT) -> int:
    """``raw`` as an integer in ``[ge, le]``: ASCII digits only, else :class:`InvalidRequest`."""
    if not _DIGITS.fullmatch(raw):
        raise invalid_field(field_name, f"must be a whole number from {ge} to {le}", "int_parsing")
    value = int(raw)
    if not ge <= value <= le:
        raise invalid_field(field_name, f"must be a whole number from {ge} to {le}", "int_range")
    return value


@dataclass(frozen=True, slots=True)
class Param:
    """A query, header or path parameter: its name, schema and how it is read."""

    name: str
    location: Location
    schema: Mapping[str, Any]
    description: str = ""
    required: bool = False

    @property
    def field(self) -> str:
        return f"{self.location}.{self.name}"

    def raw(self, conn: HTTPConnection) -> str | None:
        if self.location == "query":
            return conn.query_params.get(self.name)
        if self.location == "header":
            return conn.headers.get(self.name)
        value = conn.path_params.get(self.name)
        return None if value is None else str(value)

    def openapi(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name,
            "in": self.location,
            "required": self.required or self.location == "path",
            "schema": dict(self.schema),
        }
        if self.description:
            doc["description"] = self.description
        return doc


@dataclass(frozen=True, slots=True)
class IntParam(Param):
    ge: int = 0
    le: int = MAX_INT
    default: int | None = None

    def get(self, conn: HTTPConnection) -> int | None:
        raw = self.raw(conn)
        if raw is None:
            return self.default
        return parse_int(raw, self.field, ge=self.ge, le=self.le)


@dataclass(frozen=True, slots=True)
class StrParam(Param):
    max_length: int = 200
    min_length: int = 0
    choices: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None
    rule: str = ""  # the pattern in words, for the error message

    def get(self, conn: HTTPConnection) -> str | None:
        raw = self.raw(conn)
        if raw is None:
            return None
        if len(raw) < self.min_length:
            raise invalid_field(
                self.field, f"must be at least {self.min_length} characters", "string_too_short"
            )
        if len(raw) > self.max_length:
            raise invalid_field(
                self.field, f"must be at most {self.max_length} characters", "string_too_long"
            )
        if self.choices and raw not in self.choices:
            raise invalid_field(
                self.field, "must be one of " + ", ".join(self.choices), "literal_error"
            )
        if self.pattern is not None and not self.pattern.fullmatch(raw):
            raise invalid_field(self.field, self.rule or "has an invalid form", "string_pattern")
        return raw


def int_param(
    name: str,
    location: Location,
    *,
    ge: int = 0,
    le: int = MAX_INT,
    default: int | None = None,
    description: str = "",
) -> IntParam:
    schema: dict[str, Any] = {"type": "integer", "minimum": ge, "maximum": le}
    if default is not None:
        schema["default"] = default
    return IntParam(name, location, schema, description, ge=ge, le=le, default=default)


def str_param(
    name: str,
    location: Location,
    *,
    max_length: int = 200,
    min_length: int = 0,
    choices: tuple[str, ...] = (),
    pattern: str | None = None,
    rule: str = "",
    description: str = "",
) -> StrParam:
    schema: dict[str, Any] = {"type": "string", "maxLength": max_length}
    if min_length:
        schema["minLength"] = min_length
    if choices:
        schema["enum"] = list(choices)
    if pattern:
        schema["pattern"] = pattern
    return StrParam(
        name,
        location,
        schema,
        description,
        max_length=max_length,
        min_length=min_length,
        choices=choices,
        pattern=re.compile(pattern) if pattern else None,
        rule=rule,
    )


@dataclass(frozen=True, slots=True)
class Body:
    """A JSON request body validated by a pydantic model."""

    model: type[BaseModel]
    description: str = ""
    required: bool = True
    examples: Mapping[str, Any] = field(default_factory=dict)


async def read_json(request: Request, limit: int) -> Any:
    """The request body as JSON: 413 past ``limit`` bytes, 422 when it is not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and _DIGITS.fullmatch(declared) and int(declared) > limit:
        raise PayloadTooLarge(f"the body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"the body is not valid JSON ({exc.msg} at position {exc.pos})",
            [{"field": "(body)", "message": "malformed JSON", "type": "json_invalid"}],
        ) from None


def parse_model(model: type[M], doc: Any, what: str = "the request body") -> M:
    """``doc`` validated as ``model``; :class:`InvalidRequest` naming each bad field."""
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise validation_error(exc, (), what) from None


async def read_body(request: Request, model: type[M], limit: int) -> M:
    return parse_model(model, await read_json(request, limit))


# Shared by every route that starts a run (POST /v1/runs, /v1/runs/stream, /v1/ag-ui/{agent}).
IDEMPOTENCY_KEY = str_param(
    "Idempotency-Key",
    "header",
    max_length=255,
    min_length=1,
    pattern="[\\x21-\\x7e]+",
    rule="printable ASCII without spaces",
    description="Retries with the same key and body return the same run (kept 24 h); one key "
    "space with the WebSocket's client_ref",
)
