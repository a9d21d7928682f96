"""Who is calling: identities, the request an authenticator sees, and the authenticators.

This package is what the front doors (HTTP, SSE, WebSocket) call; they build an
:class:`AuthRequest`, ask the app's :class:`Authenticator`, and map its answers: an
:class:`Identity` signs in, None is 401, :class:`~corral.errors.AuthRefused` is 401 with its
message, :class:`~corral.errors.AuthUnavailable` is 503 ``unavailable``.

Only the light, pure names are imported here (``import corral`` stays fast); the rest lives in
its module:

- :mod:`corral.auth.factory` — ``authenticator_from(settings)``, ``secret_resolver_from``,
  ``check_auth_settings``
- :mod:`corral.auth.jwt_authenticator` — ``JwtAuthenticator`` (secret, PEM key or JWKS)
- :mod:`corral.auth.hook` — ``HookAuthenticator`` (``--auth MODULE:ATTR``)
- :mod:`corral.auth.resolver` — ``SecretResolver`` (``--secrets MODULE:ATTR``)
- :mod:`corral.auth.policy`, :mod:`corral.auth.tokens`, :mod:`corral.auth.keys`,
  :mod:`corral.auth.jwks` — the JWT checks and where keys come from
"""

from corral.auth.identity import Identity, validate_user_id
from corral.auth.request import Authenticator, AuthRequest, Headers, MultiMap, Transport, bearer

__all__ = [
    "AuthRequest",
    "Authenticator",
    "Headers",
    "Identity",
    "MultiMap",
    "Transport",
    "bearer",
    "validate_user_id",
]
