"""The frozen, validated identity of one request: who, which thread, which run."""

from __future__ import annotations

import copy
import re
import secrets
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from corral.errors import ContextDepthError, ContextError

MAX_ID_LENGTH = 128
MAX_DEPTH = 10

# Values that show an id was never really set: a defaulted variable, a fixture, a sentinel.
PLACEHOLDER_IDS = frozenset(
    {
        "none",
        "null",
        "nil",
        "undefined",
        "registry",
        "placeholder",
        "default",
        "test",
        "mock",
        "example",
        "dummy",
        "fake",
        "sample",
        "temp",
        "tmp",
        "unknown",
        "anonymous",
        "system",
        "todo",
        "xxx",
        "changeme",
        "0",
        "-1",
        "nan",
        "false",
        "true",
        "user",
        "user_id",
        "thread_id",
        "run_id",
        "request_id",
        "id",
    }
)


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _any_case(word: str) -> str:
    return "".join(
        f"[{c.lower()}{c.upper()}]" if c.isalpha() else ("\\" + c if c in ".^$*+?()[]{}|\\" else c)
        for c in word
    )


# validate_id's rules as a JSON Schema (ECMA-262) pattern, for API documents: not a placeholder
# (in any letter case), no surrounding white space, no control characters. (The NFKC fold of
# placeholders cannot be written as a pattern; validate_id still applies it.)
ID_JSON_PATTERN = (
    "^(?!(?:"
    + "|".join(_any_case(w) for w in sorted(PLACEHOLDER_IDS))
    + ")$)(?=\\S)(?=[\\s\\S]*\\S$)[^\\x00-\\x1f\\x7f-\\x9f]{1,128}$"
)


def new_id(prefix: str) -> str:
    """An unguessable id: ``prefix`` + 128 random bits in URL-safe base64."""
    return f"{prefix}_{secrets.token_urlsafe(16)}"


def validate_id(field_name: str, value: object) -> str:
    """Return ``value`` if it is an acceptable id, else raise :class:`ContextError` naming it."""
    if not isinstance(value, str):
        raise ContextError(field_name, f"expected a string, got {type(value).__name__}")
    if not value or not value.strip():
        raise ContextError(field_name, "must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise ContextError(field_name, f"longer than {MAX_ID_LENGTH} characters")
    if value != value.strip():
        raise ContextError(field_name, "has leading or trailing white space")
    if _CONTROL.search(value):
        raise ContextError(field_name, "contains control characters")
    if is_placeholder(value):
        raise ContextError(field_name, f"{value!r} is a placeholder, not a real id")
    return value


def is_placeholder(value: str) -> bool:
    """Whether ``value`` reads as a placeholder once compatibility forms are folded.

    NFKC first, so full-width ``ｎｕｌｌ`` or ``ＮＯＮＥ`` is the ``null``/``none`` it shows on a
    screen; only the comparison uses the folded form, the id itself is kept as given.
    """
    folded = unicodedata.normalize("NFKC", value).strip().casefold()
    return folded in PLACEHOLDER_IDS


def freeze(value: Any) -> Any:
    """A read-only deep copy: mappings become MappingProxyType, lists and sets become tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, set | frozenset):
        return frozenset(freeze(v) for v in value)
    return copy.deepcopy(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class UserExecutionContext:
    """Who a piece of work is done for. Immutable; pass it explicitly to whatever acts for a user.

    Ids are validated on construction (see :func:`validate_id`); ``metadata`` is deep-copied
    into read-only mappings and tuples so that no caller can change it afterwards.
    """

    user_id: str
    thread_id: str
    run_id: str
    request_id: str = field(default_factory=lambda: new_id("req"))
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    depth: int = 0
    parent_request_id: str | None = None

    def __post_init__(self) -> None:
        for name in ("user_id", "thread_id", "run_id", "request_id"):
            validate_id(name, getattr(self, name))
        if self.parent_request_id is not None:
            validate_id("parent_request_id", self.parent_request_id)
        if not isinstance(self.depth, int) or isinstance(self.depth, bool) or self.depth < 0:
            raise ContextError("depth", "expected a non-negative integer")
        if self.depth > MAX_DEPTH:
            raise ContextDepthError("depth", f"deeper than {MAX_DEPTH} nested sub-agents")
        if not isinstance(self.metadata, Mapping):
            raise ContextError("metadata", f"expected a mapping, got {type(self.metadata)}")
        object.__setattr__(self, "metadata", freeze(self.metadata))

    def child(self, **metadata: Any) -> UserExecutionContext:
        """A context for a sub-agent: same user, thread and run; new request id; depth + 1.

        Raises :class:`ContextDepthError` past :data:`MAX_DEPTH`.
        """
        if self.depth + 1 > MAX_DEPTH:
            raise ContextDepthError("depth", f"deeper than {MAX_DEPTH} nested sub-agents")
        merged = {**self.metadata, **metadata}
        return UserExecutionContext(
            user_id=self.user_id,
            thread_id=self.thread_id,
            run_id=self.run_id,
            metadata=merged,
            depth=self.depth + 1,
            parent_request_id=self.request_id,
        )
