"""Bearer tokens: HS256 JWTs with the user in ``sub`` (contract §2)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from corral.core.context import validate_id
from corral.errors import ContextError, CorralError

ALGORITHM = "HS256"
LEEWAY_S = 30


class AuthError(CorralError):
    """The token is missing, malformed, expired or not signed by this server."""


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str
    roles: tuple[str, ...] = ()


def issue_token(secret: str, user_id: str, ttl_s: int = 3600, roles: tuple[str, ...] = ()) -> str:
    validate_id("user", user_id)
    now = int(time.time())
    claims: dict[str, object] = {"sub": user_id, "iat": now, "exp": now + int(ttl_s)}
    if roles:
        claims["roles"] = list(roles)
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str) -> Identity:
    """The identity in ``token``; :class:`AuthError` for anything not acceptable."""
    if not isinstance(token, str) or not token or len(token) > 8192:
        raise AuthError("missing or malformed token")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            leeway=LEEWAY_S,
            options={"require": ["exp", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("the token has expired; get a new one") from None
    except jwt.PyJWTError:
        raise AuthError("the token is not valid for this server") from None
    sub = claims.get("sub")
    try:
        user_id = validate_id("sub", sub)
    except ContextError:
        raise AuthError("the token's subject is not a usable user id") from None
    roles = claims.get("roles") or ()
    if not isinstance(roles, list | tuple) or not all(isinstance(r, str) for r in roles):
        raise AuthError("the token's roles claim must be a list of strings")
    return Identity(user_id=user_id, roles=tuple(roles))


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, or None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
