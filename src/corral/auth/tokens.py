"""Verifying one JWT against one key and a :class:`JwtPolicy`: pure, synchronous, no I/O.

PyJWT checks the signature, ``iss`` and ``aud``; the time claims and the user are checked
here, because PyJWT reads ``exp``/``nbf``/``iat`` with ``int()``, which takes the string
``"9999999999"``, the boolean ``true`` (1970) and ``1e20`` — none of them a time (contract §2:
``exp`` and ``nbf`` are numbers).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import jwt

from corral.auth.identity import MAX_ROLES, Identity, validate_user_id
from corral.auth.policy import LATEST_PLAUSIBLE_TIME, JwtPolicy, VerifyKey, fits
from corral.errors import AuthRefused, ContextError

_SHOWABLE = re.compile(r"[A-Za-z0-9]{1,16}")
# What reading attacker-made bytes may raise besides PyJWT's own errors (a header nested deeper
# than the JSON parser goes, odd values reaching the crypto layer): all mean "malformed".
_UNREADABLE = (jwt.PyJWTError, ValueError, TypeError, RecursionError)


@dataclass(frozen=True, slots=True)
class TokenHeader:
    """What a token says about how it is signed, read before its signature is checked."""

    alg: str
    kid: str | None


def _show(value: object) -> str:
    # An algorithm name from a token is attacker-controlled: echo it only when it is short
    # and plain, so an error message can never carry someone's payload.
    return repr(value) if isinstance(value, str) and _SHOWABLE.fullmatch(value) else "that one"


def read_header(token: object, policy: JwtPolicy) -> TokenHeader:
    """The header of ``token``; :class:`AuthRefused` when it is malformed or its ``alg`` is
    not allowed (``none`` never is)."""
    if not isinstance(token, str) or not token or len(token) > policy.max_token_chars:
        raise AuthRefused("malformed", "missing or malformed token; send a JWT")
    try:
        header = jwt.get_unverified_header(token)
    except _UNREADABLE:
        raise AuthRefused("malformed", "the token is not a well-formed JWT") from None
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in policy.algorithms:
        raise AuthRefused(
            "algorithm",
            f"tokens signed with the algorithm {_show(alg)} are not accepted here "
            f"(accepted: {', '.join(policy.algorithms)})",
        )
    kid = header.get("kid")
    return TokenHeader(alg=alg, kid=kid if isinstance(kid, str) else None)


def decode(token: str, header: TokenHeader, key: VerifyKey, policy: JwtPolicy) -> Identity:
    """The identity ``token`` proves, checked with ``key``; :class:`AuthRefused` saying why not.

    ``header`` is what :func:`read_header` returned for this token.
    """
    if not fits(header.alg, key):
        raise AuthRefused(
            "algorithm", f"the token's algorithm {header.alg} does not match its key's type"
        )
    try:
        payload: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[header.alg],
            audience=policy.audience,
            issuer=policy.issuer,
            options={
                "verify_signature": True,
                "require": [],
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_iss": policy.issuer is not None,
                "verify_aud": policy.audience is not None,
                "verify_sub": False,
                "verify_jti": False,
                "enforce_minimum_key_length": True,
            },
        )
    except jwt.InvalidSignatureError:
        raise AuthRefused("signature", "the token's signature does not verify") from None
    except (jwt.InvalidIssuerError, jwt.MissingRequiredClaimError) as exc:
        # With verify_iss/verify_aud on, PyJWT requires the claim: missing is refused too.
        claim = getattr(exc, "claim", "iss" if isinstance(exc, jwt.InvalidIssuerError) else "")
        if claim == "aud":
            raise _wrong_audience() from None
        raise AuthRefused(
            "issuer", "the token's issuer (iss) is not the one this server accepts"
        ) from None
    except jwt.InvalidAudienceError:
        raise _wrong_audience() from None
    except _UNREADABLE:
        raise AuthRefused("malformed", "the token is not a well-formed JWT") from None
    expires_at = check_times(payload, policy)
    return Identity(
        user_id=_user(payload, policy.user_claim),
        roles=_roles(payload),
        claims=payload,
        expires_at=expires_at,
    )


def verify(token: str, key: VerifyKey, policy: JwtPolicy) -> Identity:
    """:func:`read_header` and :func:`decode` with one fixed key."""
    return decode(token, read_header(token, policy), key, policy)


def _wrong_audience() -> AuthRefused:
    return AuthRefused("audience", "the token's audience (aud) does not include this server")


def _time(payload: dict[str, Any], name: str) -> float | None:
    if name not in payload:
        return None
    value = payload[name]
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= LATEST_PLAUSIBLE_TIME
    ):
        raise AuthRefused(
            "claims",
            f"the token's {name} claim must be a number of seconds since 1970, "
            f"at most {LATEST_PLAUSIBLE_TIME}",
        )
    return float(value)


def check_times(payload: dict[str, Any], policy: JwtPolicy) -> float:
    """``exp`` (required), ``nbf`` and ``iat`` against ``policy.clock()``; returns ``exp``."""
    exp = _time(payload, "exp")
    nbf = _time(payload, "nbf")
    iat = _time(payload, "iat")
    if exp is None:
        raise AuthRefused(
            "claims", "the token has no exp claim; this server needs tokens that expire"
        )
    now = policy.clock()
    if now - policy.leeway_s >= exp:
        raise AuthRefused("expired", "the token has expired; get a new one")
    if nbf is not None and nbf > now + policy.leeway_s:
        raise AuthRefused(
            "not_yet_valid", "the token is not valid yet (nbf); check the clocks of its issuer"
        )
    if iat is not None and iat > now + policy.leeway_s:
        raise AuthRefused(
            "not_yet_valid", "the token was issued in the future (iat); check the clocks"
        )
    return exp


def _user(payload: dict[str, Any], claim: str) -> str:
    if payload.get(claim) is None:
        raise AuthRefused("user", f"the token has no {claim!r} claim naming its user")
    try:
        return validate_user_id(payload[claim], claim)
    except ContextError as exc:
        raise AuthRefused(
            "user", f"the token's {claim!r} claim is not a usable user id: {exc.reason}"
        ) from None


def _roles(payload: dict[str, Any]) -> frozenset[str]:
    roles = payload.get("roles")
    if roles is None:
        return frozenset()
    if not isinstance(roles, list) or not all(isinstance(r, str) and r for r in roles):
        raise AuthRefused("claims", "the token's roles claim must be a list of strings")
    if len(roles) > MAX_ROLES:
        raise AuthRefused("claims", f"the token's roles claim lists more than {MAX_ROLES} roles")
    return frozenset(roles)
