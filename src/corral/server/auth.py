"""Bearer tokens the server issues: HS256 JWTs with the user in ``sub`` (contract §2).

They are what ``corral token`` prints and ``POST /v1/dev/token`` gives out; they sign in where
the server verifies with its HS256 secret (the default), through the app's
:class:`corral.auth.jwt_authenticator.JwtAuthenticator` like any other token.
"""

from __future__ import annotations

import time

import jwt

from corral.auth.identity import Identity, validate_user_id
from corral.auth.request import bearer

ALGORITHM = "HS256"

__all__ = ["ALGORITHM", "Identity", "bearer", "issue_token"]


def issue_token(secret: str, user_id: str, ttl_s: int = 3600, roles: tuple[str, ...] = ()) -> str:
    validate_user_id(user_id)
    now = int(time.time())
    claims: dict[str, object] = {"sub": user_id, "iat": now, "exp": now + int(ttl_s)}
    if roles:
        claims["roles"] = list(roles)
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
