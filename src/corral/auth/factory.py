"""``authenticator_from(settings)``: the hook, else a public key or JWKS, else the secret."""

from __future__ import annotations

import logging

from corral.auth.hook import HookAuthenticator
from corral.auth.jwt_authenticator import JwtAuthenticator
from corral.auth.keys import load_public_key
from corral.auth.policy import (
    ALGORITHMS_SETTING,
    DEFAULT_KEY_ALGORITHMS,
    DEFAULT_SECRET_ALGORITHMS,
    JwtPolicy,
    algorithms_for,
    describe_key,
    fits,
    parse_algorithms,
)
from corral.auth.request import Authenticator
from corral.auth.resolver import SecretResolver
from corral.errors import ConfigurationError
from corral.settings import Settings, load_secret

log = logging.getLogger("corral.auth")


def _policy(settings: Settings, algorithms: tuple[str, ...]) -> JwtPolicy:
    return JwtPolicy(
        algorithms=algorithms,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        user_claim=settings.jwt_user_claim,
    )


def authenticator_from(settings: Settings) -> Authenticator:
    """The authenticator ``settings`` ask for (contract §2), not yet used for anything.

    Precedence: ``CORRAL_AUTH`` (a hook; the JWT settings are then not used, and a line says
    so) > ``CORRAL_JWT_PUBLIC_KEY`` or ``CORRAL_JWT_JWKS_URL`` > the HS256 secret
    (``CORRAL_JWT_SECRET``, else ``<data_dir>/secret``, made once). Building one does no
    network I/O (a JWKS is fetched on first use); it reads the PEM file or the secret file.
    Close it with ``aclose()`` (or ``async with``) in the app's lifespan.

    Raises :class:`~corral.errors.ConfigurationError` for settings that cannot work: a hook
    that cannot be loaded, a public key and a JWKS both set, a missing or unusable key file,
    an allow-list with ``none``, with unknown names, or with algorithms the key cannot verify
    (HMAC with a public key: algorithm confusion), an empty issuer, audience or user claim.
    """
    if settings.auth:
        ignored = [
            name
            for name, value in (
                ("CORRAL_JWT_PUBLIC_KEY", settings.jwt_public_key),
                ("CORRAL_JWT_JWKS_URL", settings.jwt_jwks_url),
                (ALGORITHMS_SETTING, settings.jwt_algorithms),
                ("CORRAL_JWT_ISSUER", settings.jwt_issuer),
                ("CORRAL_JWT_AUDIENCE", settings.jwt_audience),
            )
            if value
        ]
        if ignored:
            log.warning(
                "the authentication hook %s replaces the JWT check: %s not used",
                settings.auth,
                ", ".join(ignored),
            )
        return HookAuthenticator.from_spec(settings.auth)
    explicit = parse_algorithms(settings.jwt_algorithms)
    if settings.jwt_public_key is not None and settings.jwt_jwks_url:
        raise ConfigurationError(
            "CORRAL_JWT_PUBLIC_KEY and CORRAL_JWT_JWKS_URL are both set; keep one (a JWKS "
            "serves rotating keys, a PEM file one fixed key)"
        )
    if settings.jwt_public_key is not None:
        key = load_public_key(settings.jwt_public_key)
        algorithms = explicit or tuple(a for a in DEFAULT_KEY_ALGORITHMS if fits(a, key))
        if not algorithms:
            raise ConfigurationError(
                f"the key in CORRAL_JWT_PUBLIC_KEY={settings.jwt_public_key} is "
                f"{describe_key(key)}, which verifies none of the default "
                f"{', '.join(DEFAULT_KEY_ALGORITHMS)}; set {ALGORITHMS_SETTING} to one of "
                f"{', '.join(algorithms_for(key))}"
            )
        return JwtAuthenticator.with_public_key(key, _policy(settings, algorithms))
    if settings.jwt_jwks_url:
        policy = _policy(settings, explicit or DEFAULT_KEY_ALGORITHMS)
        return JwtAuthenticator.with_jwks(
            settings.jwt_jwks_url, policy, refetch_interval_s=settings.jwt_jwks_refetch_s
        )
    policy = _policy(settings, explicit or DEFAULT_SECRET_ALGORITHMS)
    return JwtAuthenticator.with_secret(load_secret(settings), policy)


def dev_token_secret(settings: Settings) -> str | None:
    """The HS256 secret that development tokens (``POST /v1/dev/token``, ``corral token``)
    are signed with, when the server verifies with it; else None.

    None with a hook, a PEM key or a JWKS (an HS256 token could never verify there), and when
    ``CORRAL_JWT_ALGORITHMS`` leaves HS256 out. Reads (or makes once) the secret file.
    """
    if settings.auth or settings.jwt_public_key is not None or settings.jwt_jwks_url:
        return None
    algorithms = parse_algorithms(settings.jwt_algorithms) or DEFAULT_SECRET_ALGORITHMS
    return load_secret(settings) if "HS256" in algorithms else None


def secret_resolver_from(settings: Settings) -> SecretResolver | None:
    """The per-user secrets resolver ``CORRAL_SECRETS`` names, or None when it is not set.

    Raises :class:`~corral.errors.ConfigurationError` when it cannot be loaded.
    """
    return SecretResolver.from_spec(settings.secrets) if settings.secrets else None


def check_auth_settings(settings: Settings, *, tokens: bool = True) -> None:
    """Load what the identity settings name, so that a bad one stops a command at start-up.

    With ``tokens`` (``corral serve``) the whole authenticator is built; without (``corral
    worker``, which signs nobody in) only the hook and the resolver are loaded, and no secret
    file is made. Raises :class:`~corral.errors.ConfigurationError` (the CLI exits 2).
    Nothing is left open: building an authenticator does no network I/O.
    """
    if tokens:
        authenticator_from(settings)
    elif settings.auth:
        HookAuthenticator.from_spec(settings.auth)
    secret_resolver_from(settings)
