""":class:`CorralAPIError`: every refusal or failure the client reports, with the server's code."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson

from corral.errors import CorralError

# The HTTP status of each code the server uses (contract §3); a WebSocket error carries only
# the code, and gets the status its HTTP route would have had.
STATUS_OF_CODE: Mapping[str, int] = MappingProxyType(
    {
        "unauthorized": 401,
        "forbidden": 403,
        "not_found": 404,
        "conflict": 409,
        "payload_too_large": 413,
        "validation_error": 422,
        "rate_limited": 429,
        "headers_too_large": 431,
        "unavailable": 503,
    }
)
_CODE_OF_STATUS: Mapping[int, str] = MappingProxyType(
    {status: code for code, status in STATUS_OF_CODE.items()}
)


class CorralAPIError(CorralError):
    """The server refused a request, or could not be reached.

    ``status`` is the HTTP status (for a WebSocket refusal, the status of the same refusal over
    HTTP; None when no answer came), ``code`` the server's code (``not_found``,
    ``validation_error``, ``conflict``, ``rate_limited``...) or one of the client's own:
    ``network_error`` (no answer, retries included), ``closed`` (the client or session was
    closed), ``http_error`` (an answer without a corral error body). ``details`` lists the bad
    fields of a ``validation_error``; ``retry_after`` is the ``Retry-After`` of a 429 or 503.
    """

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.retry_after = retry_after
        super().__init__(f"{code}: {message}" if status is None else f"{status} {code}: {message}")

    @classmethod
    def from_answer(
        cls, status: int, body: bytes, headers: Mapping[str, str] | None = None
    ) -> CorralAPIError:
        """The error an HTTP answer with a non-2xx ``status`` and ``body`` stands for."""
        error: Any = None
        try:
            doc = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
            error = doc["error"]
        code = error.get("code") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        details = error.get("details") if isinstance(error, dict) else None
        retry_after = None
        raw = (headers or {}).get("retry-after")
        if raw is not None:
            try:
                retry_after = max(0.0, float(raw))
            except ValueError:
                retry_after = None
        return cls(
            status,
            code if isinstance(code, str) else _CODE_OF_STATUS.get(status, "http_error"),
            message
            if isinstance(message, str)
            else f"the server answered {status}: {body[:200].decode(errors='replace')}",
            details if isinstance(details, list) else None,
            retry_after=retry_after,
        )

    @classmethod
    def from_message(cls, doc: Mapping[str, Any]) -> CorralAPIError:
        """The error a WebSocket ``{"type": "error", "code", "message"}`` message stands for."""
        code = doc.get("code")
        code = code if isinstance(code, str) else "unavailable"
        message = doc.get("message")
        details = doc.get("details")
        return cls(
            STATUS_OF_CODE.get(code),
            code,
            message if isinstance(message, str) else "the server reported an error",
            details if isinstance(details, list) else None,
        )


def closed_error(what: str = "client") -> CorralAPIError:
    return CorralAPIError(None, "closed", f"the {what} was closed; open a new one to go on")
