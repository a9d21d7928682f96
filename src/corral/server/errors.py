"""HTTP errors in the contract's shape: ``{"error": {"code", "message", "details"?}}``."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from corral.errors import CorralError

STATUS_OF: Mapping[str, int] = MappingProxyType(
    {
        "bad_request": 400,
        "unauthorized": 401,
        "forbidden": 403,
        "not_found": 404,
        "conflict": 409,
        "payload_too_large": 413,
        "uri_too_long": 414,
        "validation_error": 422,
        "rate_limited": 429,
        "headers_too_large": 431,
        "unavailable": 503,
    }
)


class ApiError(CorralError):
    """An answer other than success; rendered as the contract's error body."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.code = code
        self.status = STATUS_OF[code]
        self.message = message
        self.details = details
        self.headers = headers or {}
        super().__init__(message)

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


NOT_FOUND_RUN = "no such run: check the run id (runs are visible only to the user who started them)"
NOT_FOUND_THREAD = (
    "no such thread: start a run without thread_id to begin one, or use a thread id of yours"
)


def details_from(exc: ValidationError, prefix: tuple[str | int, ...] = ()) -> list[dict[str, Any]]:
    """One entry per bad field: ``{"field": "input.steps", "message": ..., "type": ...}``."""
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = (*prefix, *err["loc"])
        out.append(
            {
                "field": ".".join(str(p) for p in loc) or "(body)",
                "message": err["msg"],
                "type": err["type"],
            }
        )
    return out


def validation_error(
    exc: ValidationError, prefix: tuple[str | int, ...] = (), what: str = "the request"
) -> ApiError:
    details = details_from(exc, prefix)
    fields = ", ".join(d["field"] for d in details[:5])
    return ApiError(
        "validation_error",
        f"{what} is not valid: check {fields}",
        details=details,
    )
