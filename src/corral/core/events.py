"""Run events (contract §4): the types, the model, redaction and the one serializer."""

from __future__ import annotations

import enum
import itertools
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson


class EventType(enum.StrEnum):
    AGENT_STARTED = "agent_started"
    AGENT_THINKING = "agent_thinking"
    TOOL_EXECUTING = "tool_executing"
    TOOL_COMPLETED = "tool_completed"
    AGENT_UPDATE = "agent_update"
    INPUT_REQUESTED = "input_requested"
    INPUT_RECEIVED = "input_received"
    AGENT_COMPLETED = "agent_completed"
    AGENT_ERROR = "agent_error"
    AGENT_CANCELLED = "agent_cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_TYPES


TERMINAL_TYPES = frozenset(
    {EventType.AGENT_COMPLETED, EventType.AGENT_ERROR, EventType.AGENT_CANCELLED}
)


class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"  # for its user's input (contract §9)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def finished(self) -> bool:
        return self not in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING)


def now_ts() -> str:
    """UTC now with microseconds and a ``Z``: ``2026-11-27T02:54:31.123456Z``."""
    # isoformat is about twice as fast as strftime, and this runs once per event; with
    # timespec="microseconds" it always writes six digits, then "+00:00", swapped for "Z".
    return datetime.now(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


_COPY_BELOW = 2048  # bytes; see dumps


def dumps(value: Any) -> bytes:
    """The one JSON serializer: orjson, non-str dict keys allowed, UTC datetimes with ``Z``."""
    data = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z)
    # orjson's result keeps its whole output buffer: ~4 KiB of memory for a 200-byte event.
    # Events are held (queued per connection, pending in the writer, held for a replay) and
    # the connection bound counts len(payload), so a small one is copied to its real size.
    return bytes(memoryview(data)) if len(data) < _COPY_BELOW else data


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def plain_json(value: Any) -> Any:
    """``value`` round-tripped through the serializer, so events hold plain JSON values only.

    Raises :class:`TypeError` naming what cannot be serialized.
    """
    try:
        return orjson.loads(dumps(value))
    except TypeError as exc:
        raise TypeError(f"not JSON-serializable: {exc}") from None


@dataclass(frozen=True, slots=True)
class Event:
    """One event of one run. ``user_id`` is the owner: routing metadata, never serialized.

    ``thread_state`` (``agent_completed`` only, never serialized) is the thread's new state as
    JSON, which the writer saves in the transaction that stores this event.
    """

    type: EventType
    run_id: str
    thread_id: str
    seq: int
    data: dict[str, Any]
    user_id: str
    ts: str = field(default_factory=now_ts)
    # Wall-clock emission time (seconds), for the delivery-latency metric; never serialized.
    emitted_at: float = field(default_factory=time.time, compare=False)
    # The run's agent, for the per-run log line (corral.runlog); never serialized.
    agent: str = field(default="", compare=False)
    thread_state: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type.value,
            "run_id": self.run_id,
            "thread_id": self.thread_id,
            "seq": self.seq,
            "ts": self.ts,
            "data": self.data,
        }

    def to_json(self) -> bytes:
        """The wire form (contract §4); serialize once and share the bytes between sockets."""
        return dumps(self.to_dict())

    @classmethod
    def from_json(cls, raw: bytes | str, user_id: str) -> Event:
        doc = loads(raw)
        return cls(
            type=EventType(doc["type"]),
            run_id=doc["run_id"],
            thread_id=doc["thread_id"],
            seq=int(doc["seq"]),
            data=doc["data"],
            user_id=user_id,
            ts=doc["ts"],
            emitted_at=_parse_ts(doc["ts"]),
        )


def _parse_ts(ts: str) -> float:
    try:
        return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    except (TypeError, ValueError):
        return time.time()


def terminal_status(event_type: EventType, data: dict[str, Any]) -> RunStatus:
    """The run status a terminal event means."""
    if event_type is EventType.AGENT_COMPLETED:
        return RunStatus.SUCCEEDED
    if event_type is EventType.AGENT_CANCELLED:
        return RunStatus.CANCELLED
    error = data.get("error") or {}
    if error.get("type") == "timeout":
        return RunStatus.TIMED_OUT
    return RunStatus.FAILED


# --- redaction -------------------------------------------------------------------------------
# Redaction by *key* (and inline ``key=value`` text) lives here and stays. Redaction by *value*
# — the per-user secrets a run resolved (contract §2) — is corral.core.secrets.SecretRedactor,
# one per run. Both apply only to what is stored and sent: agents get tool results unchanged.

REDACTED = "[REDACTED]"

# Whole key segments that mark a secret ("max_tokens" is not one; "api_key", "x-auth-token" are).
_SECRET_SEGMENTS = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "pwd",
        "secret",
        "token",
        "apikey",
        "authorization",
        "auth",
        "cookie",
        "cookies",
        "credential",
        "credentials",
        "privatekey",
        "sessionid",
        "session",
        "jwt",
        "bearer",
        "signature",
        "accesskey",
        "clientsecret",
        "setcookie",
    }
)
_SEGMENT_SPLIT = re.compile(r"[^a-zA-Z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
_INLINE_SECRET = re.compile(
    r"(?i)(\b(?:password|passwd|pwd|secret|token|api[_-]?key|authorization|cookie|"
    r"access[_-]?key|client[_-]?secret|private[_-]?key)\b\s*[=:]\s*"
    # An auth scheme before the credential ("Authorization: Bearer <token>") is kept, and the
    # credential after it is what gets masked; otherwise only the scheme word was replaced.
    r"(?:(?:bearer|basic|token)\s+)?)"
    r"(\"[^\"]*\"|'[^']*'|[^\s,;&\"']+)"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_JWT_LIKE = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")


def is_secret_key(key: str) -> bool:
    if key.isalpha() and key.islower():  # one plain word, the common case: no splitting
        return key in _SECRET_SEGMENTS
    parts = [p.lower() for p in _SEGMENT_SPLIT.split(key) if p]
    if not parts:
        return False
    if any(p in _SECRET_SEGMENTS for p in parts):
        return True
    joined = [a + b for a, b in itertools.pairwise(parts)]
    return any(j in _SECRET_SEGMENTS for j in joined) or "".join(parts) in _SECRET_SEGMENTS


def redact_text(text: str) -> str:
    """Mask ``key=value`` secrets, bearer credentials and JWTs inside free text."""
    text = _INLINE_SECRET.sub(lambda m: m.group(1) + REDACTED, text)
    text = _BEARER.sub(lambda m: m.group(1) + " " + REDACTED, text)
    return _JWT_LIKE.sub(REDACTED, text)


def redact(value: Any) -> Any:
    """A copy of ``value`` with every value under a secret-looking key replaced by ``[REDACTED]``.

    Strings are scanned for inline secrets too (``password=...``, ``Bearer ...``).
    """
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and is_secret_key(k) else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
