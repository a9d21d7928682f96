"""Where verification keys come from: one fixed key (a secret or a PEM file), or a JWKS."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from corral.auth.policy import VerifyKey, key_problem
from corral.auth.tokens import TokenHeader
from corral.errors import ConfigurationError

PublicKey = RSAPublicKey | EllipticCurvePublicKey
PUBLIC_KEY_SETTING = "CORRAL_JWT_PUBLIC_KEY"


class KeySource(Protocol):
    """Picks the key for a token. Safe to call concurrently; ``aclose`` is idempotent."""

    async def key_for(self, header: TokenHeader) -> VerifyKey:
        """The key to verify a token with this header.

        Raises :class:`~corral.errors.AuthRefused` when the token names no known key, and
        :class:`~corral.errors.AuthUnavailable` when the keys cannot be had now.
        """
        ...

    async def aclose(self) -> None: ...


class StaticKey:
    """One key for every token: the HS256 secret, or the public key of a PEM file."""

    __slots__ = ("key",)

    def __init__(self, key: VerifyKey) -> None:
        self.key = key

    async def key_for(self, header: TokenHeader) -> VerifyKey:
        return self.key

    async def aclose(self) -> None:
        return None


def load_public_key(path: Path, setting: str = PUBLIC_KEY_SETTING) -> PublicKey:
    """The RSA or EC public key in the PEM file ``path`` (a public key or a certificate).

    Raises :class:`ConfigurationError` naming ``setting`` for a missing or unreadable file,
    a private key, anything else that is not a PEM public key, and keys corral cannot use.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"{setting}={path}: cannot read the file ({exc.strerror or exc}); "
            "give the path of a PEM public key"
        ) from None
    if b"PRIVATE KEY-----" in data:
        raise ConfigurationError(
            f"{setting}={path} holds a private key; give only its public half "
            f"(`openssl pkey -in {path} -pubout -out public.pem`) and keep the private key "
            "with the token issuer"
        )
    key: object
    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError):
        try:
            key = x509.load_pem_x509_certificate(data).public_key()
        except ValueError:
            raise ConfigurationError(
                f"{setting}={path} is not a PEM public key or certificate "
                "(expected -----BEGIN PUBLIC KEY-----)"
            ) from None
    problem = key_problem(key)
    if problem is not None or not isinstance(key, RSAPublicKey | EllipticCurvePublicKey):
        raise ConfigurationError(f"{setting}={path}: {problem}")
    return key
