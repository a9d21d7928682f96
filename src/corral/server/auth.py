"""Bearer tokens the server issues: HS256 JWTs with the user in ``sub`` (contract §2).

``verify_token`` is the HS256 case of :class:`corral.auth.jwt_authenticator.JwtAuthenticator`
(the same checks, through :func:`corral.auth.tokens.verify`), kept synchronous for the front
doors that call it until they ask the app's authenticator instead.
"""

from __future__ import annotations

import time

import jwt

from corral.auth.identity import Identity, validate_user_id
from corral.auth.policy import JwtPolicy
from corral.auth.request import bearer
from corral.auth.tokens import verify
from corral.errors import AuthRefused

ALGORITHM = "HS256"
LEEWAY_S = 30

# The front doors catch this name; it is the refusal every authenticator raises.
AuthError = AuthRefused

__all__ = [
    "ALGORITHM",
    "LEEWAY_S",
    "AuthError",
    "Identity",
    "bearer",
    "issue_token",
    "verify_token",
]


def issue_token(secret: str, user_id: str, ttl_s: int = 3600, roles: tuple[str, ...] = ()) -> str:
    validate_user_id(user_id)
    now = int(time.time())
    claims: dict[str, object] = {"sub": user_id, "iat": now, "exp": now + int(ttl_s)}
    if roles:
        claims["roles"] = list(roles)
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str) -> Identity:
    """The identity in ``token``; :class:`AuthError` (``AuthRefused``) saying why not."""
    policy = JwtPolicy(algorithms=(ALGORITHM,), leeway_s=LEEWAY_S)
    return verify(token, secret.encode(), policy)
