"""Signing in at the front doors: one authenticator for HTTP, SSE and the WebSocket (§2).

Every front door builds an :class:`~corral.AuthRequest` and asks :class:`SignIn`, which maps the
authenticator's answers to corral's errors — the one place that does:

- an :class:`~corral.Identity` signs in;
- None (no credential, or a hook that found no user) → :class:`~corral.errors.Unauthorized`
  (401; ``error`` + 1008 on a socket) saying how to sign in;
- :class:`~corral.errors.AuthRefused` → Unauthorized with its reason (never the token);
- :class:`~corral.errors.AuthUnavailable` (a key set that cannot be fetched, a hook that
  raised) → :class:`~corral.errors.ServiceUnavailable` (503 ``unavailable``) and a log line:
  never a 500, and never a sign-in.

It also says when a sign-in stops being valid (:meth:`SignIn.valid_until`): an open socket is
closed and an SSE stream ends then.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from corral.auth.identity import Identity
from corral.auth.jwt_authenticator import JwtAuthenticator
from corral.auth.policy import MAX_LEEWAY_S
from corral.auth.request import Authenticator, AuthRequest
from corral.errors import AuthRefused, AuthUnavailable, ServiceUnavailable, Unauthorized
from corral.settings import Settings

log = logging.getLogger("corral.auth")

Mode = Literal["secret", "key", "hook"]

_HINTS: Mapping[Mode, str] = MappingProxyType(
    {
        "secret": "not signed in: send Authorization: Bearer <token> "
        "(`corral token USER` prints one)",
        "key": "not signed in: send Authorization: Bearer <token>, "
        "a token from your identity provider",
        "hook": "not signed in: this server's sign-in found no user in the request; sign in first",
    }
)


def mode_of(settings: Settings) -> Mode:
    """How the server verifies callers: an HS256 secret, a public key or JWKS, or a hook."""
    if settings.auth:
        return "hook"
    if settings.jwt_public_key is not None or settings.jwt_jwks_url:
        return "key"
    return "secret"


@dataclass(frozen=True, slots=True)
class SignIn:
    """The app's authenticator as the front doors use it. Safe to call concurrently.

    ``leeway_s`` is the clock skew allowed past an identity's ``expires_at`` (the JWT
    policy's; 30 s for a hook).
    """

    authenticator: Authenticator
    mode: Mode
    leeway_s: float = MAX_LEEWAY_S

    @classmethod
    def of(cls, authenticator: Authenticator, settings: Settings) -> SignIn:
        leeway = (
            authenticator.policy.leeway_s
            if isinstance(authenticator, JwtAuthenticator)
            else MAX_LEEWAY_S
        )
        return cls(authenticator, mode_of(settings), leeway)

    @property
    def token_only(self) -> bool:
        """Whether the authenticator reads the bearer token alone (a JWT check), so that a
        front door need not copy a request's headers, cookies and query for it."""
        return isinstance(self.authenticator, JwtAuthenticator)

    @property
    def hint(self) -> str:
        """What a caller with no identity is told."""
        return _HINTS[self.mode]

    async def identify(self, request: AuthRequest) -> Identity | None:
        """The identity ``request`` proves, or None when it carries none.

        Raises :class:`Unauthorized` for a refused credential (or one already expired) and
        :class:`ServiceUnavailable` when the authenticator cannot decide now. Cancelling it
        cancels the authenticator's call.
        """
        try:
            identity = await self.authenticator.authenticate(request)
        except AuthRefused as exc:
            raise Unauthorized(exc.message) from None
        except AuthUnavailable as exc:
            log.warning(
                "sign-in cannot be checked now (%s request): %s; answering 503",
                request.transport,
                exc.message,
            )
            raise ServiceUnavailable(exc.message, retry_after=1) from None
        if identity is not None and self.expired(identity):
            # A hook may hand back an identity whose credential has run out.
            raise Unauthorized("your sign-in has expired; sign in again")
        return identity

    async def require(self, request: AuthRequest) -> Identity:
        """:meth:`identify`, with no identity an :class:`Unauthorized` saying how to sign in."""
        identity = await self.identify(request)
        if identity is None:
            raise Unauthorized(self.hint)
        return identity

    def valid_until(self, identity: Identity) -> float | None:
        """Epoch seconds after which ``identity`` no longer signs anything in (its
        ``expires_at`` plus the leeway), or None when it does not expire."""
        if identity.expires_at is None:
            return None
        return identity.expires_at + self.leeway_s

    def expired(self, identity: Identity, now: float | None = None) -> bool:
        until = self.valid_until(identity)
        return until is not None and (time.time() if now is None else now) >= until

    def remaining_s(self, identity: Identity) -> float | None:
        """Seconds until ``identity`` expires (0 when it has), or None when it never does."""
        until = self.valid_until(identity)
        return None if until is None else max(0.0, until - time.time())
