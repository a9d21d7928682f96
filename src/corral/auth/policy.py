"""What a JWT must satisfy here: the algorithm allow-list, the keys that fit it, the claims.

Algorithm confusion is refused in three places, each on its own enough: the allow-list never
holds ``none`` and never mixes HMAC with a public key (:func:`parse_algorithms` and the
authenticator's constructors raise :class:`~corral.errors.ConfigurationError`); a token's
``alg`` must be in the list; and the key picked for it must be of that algorithm's family
(:func:`fits`), so a public key is never used as an HMAC secret.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import MappingProxyType

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from corral.errors import ConfigurationError

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
# Each ECDSA algorithm is defined on exactly one curve (RFC 7518 §3.4).
EC_CURVES = MappingProxyType({"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"})
SUPPORTED_ALGORITHMS = (*HMAC_ALGORITHMS, *RSA_ALGORITHMS, *EC_CURVES)
DEFAULT_SECRET_ALGORITHMS = ("HS256",)
DEFAULT_KEY_ALGORITHMS = ("RS256", "ES256")

MIN_RSA_BITS = 2048  # below this PyJWT warns, and NIST has disallowed it since 2013
MAX_LEEWAY_S = 30.0  # contract §2: at most 30 s of clock skew
# 9999-12-31T23:59:59Z: a time claim past it is no date at all (1e20 would be "never expires").
LATEST_PLAUSIBLE_TIME = 253402300799
MAX_TOKEN_CHARS = 16 * 1024  # the whole request head is capped at 16 KiB (contract §3)

VerifyKey = bytes | RSAPublicKey | EllipticCurvePublicKey
ALGORITHMS_SETTING = "CORRAL_JWT_ALGORITHMS"


def parse_algorithms(names: Iterable[str], setting: str = ALGORITHMS_SETTING) -> tuple[str, ...]:
    """The allow-list ``names`` names, in order, without repeats.

    Raises :class:`ConfigurationError` for ``none`` (in any spelling: a token without a
    signature is never accepted) and for names corral does not support.
    """
    result: list[str] = []
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        if name.lower() == "none":
            raise ConfigurationError(
                f"{setting} lists 'none': unsigned tokens are never accepted; remove it"
            )
        if name not in SUPPORTED_ALGORITHMS:
            raise ConfigurationError(
                f"{setting} lists {name!r}, which corral does not verify; "
                f"use some of {', '.join(SUPPORTED_ALGORITHMS)}"
            )
        if name not in result:
            result.append(name)
    return tuple(result)


def fits(algorithm: str, key: VerifyKey) -> bool:
    """Whether ``key`` is of the family ``algorithm`` verifies with (and on its curve)."""
    if algorithm in HMAC_ALGORITHMS:
        return isinstance(key, bytes)
    if algorithm in RSA_ALGORITHMS:
        return isinstance(key, RSAPublicKey)
    curve = EC_CURVES.get(algorithm)
    return curve is not None and isinstance(key, EllipticCurvePublicKey) and key.curve.name == curve


def algorithms_for(key: VerifyKey) -> tuple[str, ...]:
    """Every supported algorithm that verifies with ``key``."""
    return tuple(a for a in SUPPORTED_ALGORITHMS if fits(a, key))


def describe_key(key: VerifyKey) -> str:
    """A short description for messages: ``an RSA key (2048 bits)``, ``an EC key (secp384r1)``."""
    if isinstance(key, bytes):
        return "an HMAC secret"
    if isinstance(key, RSAPublicKey):
        return f"an RSA key ({key.key_size} bits)"
    return f"an EC key ({key.curve.name})"


def key_problem(key: object) -> str | None:
    """Why a public key cannot verify tokens here, or None when it can."""
    if isinstance(key, RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            return f"an RSA key of {key.key_size} bits is too short (at least {MIN_RSA_BITS})"
        return None
    if isinstance(key, EllipticCurvePublicKey):
        if key.curve.name not in EC_CURVES.values():
            return f"EC keys on {key.curve.name} are not supported (P-256, P-384 or P-521)"
        return None
    return f"{type(key).__name__} keys are not supported (RSA or EC public keys are)"


@dataclass(frozen=True, slots=True, kw_only=True)
class JwtPolicy:
    """The checks every token goes through besides its signature (contract §2).

    ``algorithms`` is the allow-list; ``issuer`` / ``audience``, when set, must match the
    token's ``iss`` / ``aud`` (when unset they are not looked at); ``user_claim`` names the
    claim holding the user id; ``leeway_s`` (0–30) is the clock skew allowed on ``exp``,
    ``nbf`` and ``iat``; ``clock`` gives the time in epoch seconds.
    """

    algorithms: tuple[str, ...]
    issuer: str | None = None
    audience: str | None = None
    user_claim: str = "sub"
    leeway_s: float = MAX_LEEWAY_S
    max_token_chars: int = MAX_TOKEN_CHARS
    clock: Callable[[], float] = field(default=time.time, repr=False, compare=False)

    def __post_init__(self) -> None:
        algorithms = parse_algorithms(self.algorithms)
        if not algorithms:
            raise ConfigurationError(f"{ALGORITHMS_SETTING} names no algorithm")
        object.__setattr__(self, "algorithms", algorithms)
        if not 0 <= self.leeway_s <= MAX_LEEWAY_S:
            raise ConfigurationError(f"the JWT leeway must be 0–{MAX_LEEWAY_S:g} s")
        if not isinstance(self.user_claim, str) or not self.user_claim.strip():
            raise ConfigurationError("CORRAL_JWT_USER_CLAIM must name a claim, e.g. 'sub'")
        for name, value in (
            ("CORRAL_JWT_ISSUER", self.issuer),
            ("CORRAL_JWT_AUDIENCE", self.audience),
        ):
            if value is not None and not value.strip():
                raise ConfigurationError(f"{name} is empty; unset it or give a value")

    def require_fit(self, key: VerifyKey, where: str) -> None:
        """:class:`ConfigurationError` unless every allowed algorithm verifies with ``key``."""
        misfits = [a for a in self.algorithms if not fits(a, key)]
        if misfits:
            usable = ", ".join(algorithms_for(key)) or "none"
            raise ConfigurationError(
                f"{ALGORITHMS_SETTING} allows {', '.join(misfits)}, but {where} is "
                f"{describe_key(key)}, which verifies only {usable}; allow those instead"
            )
