"""From corral's errors to the contract's answers: one table for HTTP, SSE and the WebSocket.

The service and the store raise domain errors (:mod:`corral.errors`); every front door turns
them into ``{"error": {"code", "message", "details"?}}`` (HTTP) or ``{"type": "error", "code",
"message"}`` (WebSocket) through :func:`answer_for` — never by matching messages.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from corral.errors import (
    NOT_FOUND_RUN,
    NOT_FOUND_THREAD,
    Conflict,
    CorralError,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    QueueFullError,
    RequestError,
    ServiceUnavailable,
    Unauthorized,
    details_from,
)

log = logging.getLogger("corral.server")

# The one table: most specific class first (a class matches its subclasses).
CODES: tuple[tuple[type[RequestError], str, int], ...] = (
    (Unauthorized, "unauthorized", 401),
    (Forbidden, "forbidden", 403),
    (NotFound, "not_found", 404),
    (Conflict, "conflict", 409),
    (PayloadTooLarge, "payload_too_large", 413),
    (InvalidRequest, "validation_error", 422),
    (QueueFullError, "rate_limited", 429),
    (ServiceUnavailable, "unavailable", 503),
)

# Every code, with the ones the connection layer answers itself (before any route runs).
STATUS_OF: Mapping[str, int] = MappingProxyType(
    {
        "bad_request": 400,
        "uri_too_long": 414,
        "headers_too_large": 431,
        **{code: status for _c, code, status in CODES},
    }
)


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """What a front door sends for one refused request."""

    code: str
    status: int
    message: str
    details: list[dict[str, Any]] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}

    def ws_message(self, **extra: Any) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": "error", "code": self.code, "message": self.message}
        if self.details is not None:
            doc["details"] = self.details
        return {**doc, **extra}


def error_answer(code: str, message: str, headers: dict[str, str] | None = None) -> ErrorAnswer:
    """An answer by code, for the layers below the routes (connections, Host checks)."""
    return ErrorAnswer(code, STATUS_OF[code], message, None, headers or {})


def answer_for(exc: CorralError) -> ErrorAnswer | None:
    """The contract's answer to ``exc``, or None when it is not a refusal (a bug: 500)."""
    if not isinstance(exc, RequestError):
        return None
    for cls, code, status in CODES:
        if isinstance(exc, cls):
            headers: dict[str, str] = {}
            if isinstance(exc, QueueFullError | ServiceUnavailable) and exc.retry_after:
                headers["Retry-After"] = str(exc.retry_after)
            details = exc.details if isinstance(exc, InvalidRequest) else None
            return ErrorAnswer(code, status, exc.message, details, headers)
    return None


def validation_error(
    exc: ValidationError, prefix: tuple[str | int, ...] = (), what: str = "the request"
) -> InvalidRequest:
    return InvalidRequest.from_validation(exc, prefix, what)


def invalid_field(field_name: str, message: str, type_: str = "value_error") -> InvalidRequest:
    """A 422 about one field (``query.after``, ``header.Last-Event-ID``...)."""
    return InvalidRequest(
        f"{field_name} is not valid: {message}",
        [{"field": field_name, "message": message, "type": type_}],
    )


__all__ = [
    "CODES",
    "NOT_FOUND_RUN",
    "NOT_FOUND_THREAD",
    "ErrorAnswer",
    "answer_for",
    "details_from",
    "error_answer",
    "invalid_field",
    "validation_error",
]
