"""JSON answers and the documented error answers of the route tables."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from corral.core.events import dumps
from corral.server.api import Answer
from corral.server.schemas import ErrorBody


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json", headers=headers)


def error_answers(
    *statuses: int, not_found: str = "no such run (or not yours)"
) -> dict[int, Answer]:
    """The error answers an operation documents, by status."""
    texts = {
        401: "missing, invalid or expired token",
        403: "addressed by a name that is not this server's (CORRAL_ALLOWED_HOSTS)",
        404: not_found,
        409: "the request conflicts with the resource's state",
        413: "body over the size limit",
        422: "invalid request; `details` names each field",
        429: "your queue is full (see Retry-After)",
        503: "starting, shutting down, or the database is unavailable (see Retry-After)",
    }
    return {s: Answer(texts[s], ErrorBody) for s in statuses}
