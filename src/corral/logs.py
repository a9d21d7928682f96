"""Logging set-up: text or JSON lines carrying user and run ids, never tokens or payloads.

Log lines written from a run's agent task (and the tasks it starts) have that run's resolved
per-user secrets masked, like its events (:class:`SecretLogFilter`).
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

from corral.core.events import dumps
from corral.core.secrets import CURRENT_REDACTOR

_CONTEXT_FIELDS = ("user_id", "run_id", "request_id")


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
        ids = [f"{n}={getattr(record, n)}" for n in _CONTEXT_FIELDS if getattr(record, n, None)]
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
