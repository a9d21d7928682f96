"""Who a request is made for: :class:`Identity`, and the rules for a user id (contract §2)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from corral.core.context import freeze, validate_id
from corral.errors import ContextError

MAX_ROLES = 256


def validate_user_id(value: object, field_name: str = "user_id") -> str:
    """``value`` if it is an acceptable user id, else :class:`ContextError` naming ``field_name``.

    On top of :func:`corral.core.context.validate_id` (1–128 characters, no control
    characters, no surrounding white space, not a placeholder after NFKC folding): valid Unicode
    (no lone surrogates, which no UTF-8 database column or JSON encoder takes) and printable
    characters only, so zero-width, private-use and unassigned code points cannot make two ids
    that look the same on a screen.
    """
    user_id = validate_id(field_name, value)
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in user_id):
        raise ContextError(field_name, "contains a lone surrogate (not valid Unicode)")
    if not user_id.isprintable():
        raise ContextError(field_name, "contains characters that are not printable")
    return user_id


def _roles(value: object) -> frozenset[str]:
    # A bare string is iterable too, and would become a set of its letters.
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ContextError("roles", f"expected a set of strings, got {type(value).__name__}")
    roles = frozenset(value)
    if not all(isinstance(r, str) and r for r in roles):
        raise ContextError("roles", "every role must be a non-empty string")
    if len(roles) > MAX_ROLES:
        raise ContextError("roles", f"more than {MAX_ROLES} roles")
    return roles


@dataclass(frozen=True, slots=True)
class Identity:
    """The user a request acts for, as an authenticator established it. Immutable.

    ``user_id`` is validated (:func:`validate_user_id`); ``roles`` becomes a frozenset of
    strings; ``claims`` (everything the credential said, e.g. a JWT's payload) is deep-copied
    into read-only mappings and tuples, and kept out of ``repr`` so that a log line of an
    identity never carries them; ``expires_at`` is when the credential stops being valid, in
    epoch seconds (a JWT's ``exp``), or None when it does not say.
    """

    user_id: str
    roles: frozenset[str] = frozenset()
    claims: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, hash=False
    )
    expires_at: float | None = None

    def __post_init__(self) -> None:
        validate_user_id(self.user_id)
        object.__setattr__(self, "roles", _roles(self.roles))
        if not isinstance(self.claims, Mapping):
            raise ContextError("claims", f"expected a mapping, got {type(self.claims).__name__}")
        object.__setattr__(self, "claims", freeze(self.claims))
        expires_at = self.expires_at
        if expires_at is not None:
            if (
                isinstance(expires_at, bool)
                or not isinstance(expires_at, int | float)
                or not math.isfinite(expires_at)
            ):
                raise ContextError("expires_at", "expected epoch seconds (a finite number)")
            object.__setattr__(self, "expires_at", float(expires_at))

    def has_any_role(self, roles: Iterable[str]) -> bool:
        """Whether this user holds at least one of ``roles`` (how agents are gated, §2)."""
        return not self.roles.isdisjoint(roles)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (dicts, lists), e.g. to carry the identity to a worker on another
        node; :meth:`from_dict` makes the same identity again."""
        return {
            "user_id": self.user_id,
            "roles": sorted(self.roles),
            "claims": thaw(self.claims),
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Identity:
        """The identity :meth:`to_dict` described; :class:`ContextError` for anything else."""
        if not isinstance(doc, Mapping) or "user_id" not in doc:
            raise ContextError("identity", "expected a mapping with a user_id")
        return cls(
            user_id=doc["user_id"],
            roles=_roles(doc.get("roles") or ()),
            claims=doc.get("claims") or {},
            expires_at=doc.get("expires_at"),
        )


def thaw(value: Any) -> Any:
    """The plain JSON form of a frozen value: mappings become dicts, tuples and sets lists."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(v) for v in value]
    if isinstance(value, frozenset | set):
        return [thaw(v) for v in value]
    return value
