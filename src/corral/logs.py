"""Logging set-up: text or JSON lines carrying user, run and request ids, never tokens or payloads.

A request's id (``X-Request-ID``, :mod:`corral.server.request_id`) lives in a ``ContextVar`` for
as long as the request is served — set by :class:`request_scope`, which resets it — and
:class:`ContextFilter` writes it into every log record made meanwhile, in that task and in the
tasks it starts. Log lines written from a run's agent task (and the tasks it starts) have that
run's resolved per-user secrets masked, like its events (:class:`SecretLogFilter`).
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import TracebackType

from corral.core.events import dumps
from corral.core.secrets import CURRENT_REDACTOR

# Fields a record may carry (``extra={...}``), written by both formats in this order.
_CONTEXT_FIELDS = (
    "request_id",
    "user_id",
    "run_id",
    "agent",
    "status",
    "duration_ms",
    "error_type",
    "worker_id",
)

# The id of the HTTP request (or WebSocket) being served; log/trace metadata only.
current_request_id: ContextVar[str | None] = ContextVar("corral_request_id", default=None)


class request_scope:
    """Makes ``request_id`` the current request id for the body of the ``with``; resets it on
    leaving (a class, not ``@contextmanager``: it runs once per request)."""

    __slots__ = ("_request_id", "_token")

    def __init__(self, request_id: str) -> None:
        self._request_id = request_id
        self._token: Token[str | None] | None = None

    def __enter__(self) -> str:
        self._token = current_request_id.set(self._request_id)
        return self._request_id

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            current_request_id.reset(self._token)
            self._token = None


class ContextFilter(logging.Filter):
    """Adds the current request id to each record that has none. Add it to your own handler
    when corral runs inside your app with your logging set-up."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            request_id = current_request_id.get()
            if request_id is not None:
                record.request_id = request_id
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                doc[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = record.exc_text
        return dumps(doc).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = [
            f"{n}={value}"
            for n in _CONTEXT_FIELDS
            if (value := getattr(record, n, None)) is not None and value != ""
        ]
        return f"{line} [{' '.join(ids)}]" if ids else line


class SecretLogFilter(logging.Filter):
    """Masks the secrets the logging run resolved (``ctx.secret``) in the message, its
    arguments and its traceback, before any formatter sees them (contract §2: a resolved value
    never leaves the run). A line logged outside a run's tasks passes unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        redactor = CURRENT_REDACTOR.get()
        if not redactor:
            return True
        record.msg = redactor.redact_text(record.getMessage())
        record.args = None
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None  # formatters print the masked exc_text instead
        if record.exc_text:
            record.exc_text = redactor.redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redactor.redact_text(record.stack_info)
        return True


def configure(level: str = "INFO", json: bool = False) -> None:
    """Send corral's and uvicorn's logs to stderr in one format, secrets of runs masked."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    handler.addFilter(SecretLogFilter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # One line per WebSocket open and close drowns everything else under load.
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
