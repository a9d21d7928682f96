"""The JWT authenticator: a bearer token, verified with a secret, a PEM key or a JWKS (§2)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from corral.auth.identity import Identity
from corral.auth.jwks import JwksKeys
from corral.auth.keys import KeySource, PublicKey, StaticKey, load_public_key
from corral.auth.policy import (
    ALGORITHMS_SETTING,
    DEFAULT_KEY_ALGORITHMS,
    DEFAULT_SECRET_ALGORITHMS,
    HMAC_ALGORITHMS,
    JwtPolicy,
)
from corral.auth.request import AuthRequest
from corral.auth.tokens import decode, read_header
from corral.errors import ConfigurationError
from corral.settings import MIN_SECRET_BYTES

VERIFIED_TTL_S = 30.0
MAX_VERIFIED = 10_000  # tokens remembered (oldest forgotten first): a few MiB at most


class JwtAuthenticator:
    """Signs in the bearer of a JWT that verifies under ``policy`` with a key from ``keys``.

    No token is "not signed in" (None); a refused token raises
    :class:`~corral.errors.AuthRefused` saying why; a key set that cannot be fetched raises
    :class:`~corral.errors.AuthUnavailable`. Safe to call concurrently; an async context
    manager whose exit (like :meth:`aclose`, idempotent) closes the key source. Build one with
    :meth:`with_secret`, :meth:`with_public_key` or :meth:`with_jwks`.
    """

    def __init__(self, policy: JwtPolicy, keys: KeySource) -> None:
        self.policy = policy
        self._keys = keys
        # token -> (identity, verified-until on the policy's clock): a client sends the same
        # token with every request, and verifying it is a good part of what a small request
        # costs (~40-60 µs here). Kept VERIFIED_TTL_S at most, never past the token's own
        # expiry, and only with one fixed key (a secret, a PEM key): with a JWKS a key can be
        # withdrawn at any fetch, and a token it signed must stop signing in at once.
        self._cache = isinstance(keys, StaticKey)
        self._verified: OrderedDict[str, tuple[Identity, float]] = OrderedDict()

    @classmethod
    def with_secret(cls, secret: str | bytes, policy: JwtPolicy | None = None) -> Self:
        """HS256 (or the HMAC algorithms ``policy`` allows) with a shared secret of ≥ 32 bytes."""
        key = secret.encode() if isinstance(secret, str) else secret
        if len(key) < MIN_SECRET_BYTES:
            raise ConfigurationError(
                f"CORRAL_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes long "
                "(HS256 keys shorter than the hash are weak); try `openssl rand -hex 32`"
            )
        policy = policy or JwtPolicy(algorithms=DEFAULT_SECRET_ALGORITHMS)
        policy.require_fit(key, "CORRAL_JWT_SECRET")
        # RFC 7518 §3.2: an HMAC key at least as long as the hash (PyJWT refuses shorter).
        needed = max(int(a[2:]) // 8 for a in policy.algorithms)
        if len(key) < needed:
            raise ConfigurationError(
                f"{ALGORITHMS_SETTING} allows {', '.join(policy.algorithms)}, which needs a "
                f"CORRAL_JWT_SECRET of at least {needed} bytes; this one has {len(key)}"
            )
        return cls(policy, StaticKey(key))

    @classmethod
    def with_public_key(cls, key: PublicKey | Path, policy: JwtPolicy | None = None) -> Self:
        """RS256/ES256 (or what ``policy`` allows) with one public key, or the PEM file's."""
        where = f"the key in {key}" if isinstance(key, Path) else "the key"
        if isinstance(key, Path):
            key = load_public_key(key)
        policy = policy or JwtPolicy(algorithms=DEFAULT_KEY_ALGORITHMS)
        policy.require_fit(key, where)
        return cls(policy, StaticKey(key))

    @classmethod
    def with_jwks(cls, url: str, policy: JwtPolicy | None = None, **options: Any) -> Self:
        """Keys from the JWKS at ``url``; ``options`` go to :class:`JwksKeys`."""
        policy = policy or JwtPolicy(algorithms=DEFAULT_KEY_ALGORITHMS)
        symmetric = [a for a in policy.algorithms if a in HMAC_ALGORITHMS]
        if symmetric:
            raise ConfigurationError(
                f"{ALGORITHMS_SETTING} allows {', '.join(symmetric)} with a JWKS: keys from a "
                "URL are public and can never be HMAC secrets; allow RS256/ES256-style "
                "algorithms only"
            )
        return cls(policy, JwksKeys(url, **options))

    async def authenticate(self, request: AuthRequest) -> Identity | None:
        """The bearer of ``request.token``; None when there is no token."""
        if request.token is None:
            return None
        return await self.verify(request.token)

    async def verify(self, token: str) -> Identity:
        """The identity ``token`` proves; :class:`~corral.errors.AuthRefused` saying why not.

        May fetch keys (JWKS); see :class:`JwksKeys` for how that behaves under cancellation.
        """
        now = self.policy.clock()
        hit = self._verified.get(token)
        if hit is not None:
            if now < hit[1]:
                return hit[0]
            del self._verified[token]
        header = read_header(token, self.policy)
        key = await self._keys.key_for(header)
        identity = decode(token, header, key, self.policy)
        if not self._cache:
            return identity
        until = now + VERIFIED_TTL_S
        if identity.expires_at is not None:
            until = min(until, identity.expires_at + self.policy.leeway_s)
        self._verified[token] = (identity, until)
        if len(self._verified) > MAX_VERIFIED:
            self._verified.popitem(last=False)
        return identity

    async def aclose(self) -> None:
        self._verified.clear()
        await self._keys.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
