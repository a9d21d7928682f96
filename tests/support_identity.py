"""Servers signing in three ways (HS256 secret, JWKS, a hook module), and their credentials.

A :class:`Signer` makes the credentials of one mode — honest ones for any user, and the bad
ones that mode must refuse — so the same test can run against every authenticator. The hook
is a real module written to disk and loaded by its ``MODULE:ATTR`` spec, as a team's would be.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import secrets
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from support_auth import _b64, forge, jwk, public_pem

MODES = ("secret", "jwks", "hook")  # HS256 secret, RS256 tokens of a JWKS, a hook module
ISSUER = "https://idp.test"
AUDIENCE = "corral-tests"

# A team's sign-in hook: a bearer credential or a `team_session` cookie, each
# "user|role,role|exp|hmac"; `broken` is a hook whose directory service is down.
HOOK_SOURCE = """
import hashlib
import hmac

import corral
from corral.errors import AuthRefused

KEY = b"team-hook-key-for-tests-0123456789"


def _check(credential):
    parts = credential.split("|")
    if len(parts) != 4:
        raise AuthRefused("malformed", "that is not a session this team gave out")
    user, roles, exp, sig = parts
    expected = hmac.new(KEY, f"{user}|{roles}|{exp}".encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(sig, expected):
        raise AuthRefused("signature", "the session's signature does not verify")
    return corral.Identity(
        user,
        roles=frozenset(r for r in roles.split(",") if r),
        claims={"via": "hook", "team": "blue-" + user},
        expires_at=float(exp),
    )


async def authenticate(request: corral.AuthRequest) -> corral.Identity | None:
    if request.token is not None:
        return _check(request.token)
    cookie = request.cookies.get("team_session")
    return None if cookie is None else _check(cookie)


async def broken(request):
    raise RuntimeError("the directory service is down")
"""
HOOK_KEY = b"team-hook-key-for-tests-0123456789"


def hook_credential(user: str, roles: tuple[str, ...] = (), exp: float | None = None) -> str:
    """A credential the test hook accepts (as a bearer token or the ``team_session`` cookie)."""
    expires = int(time.time() + 3600 if exp is None else exp)
    body = f"{user}|{','.join(roles)}|{expires}"
    return body + "|" + hmac.new(HOOK_KEY, body.encode(), hashlib.sha256).hexdigest()


def write_module(folder: Path, source: str, prefix: str = "team_mod") -> str:
    """A fresh module with ``source`` in ``folder`` (on sys.path); returns its unique name."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(source)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    importlib.invalidate_caches()
    return name


def _claims(user: Any, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    doc = {"sub": user, "iat": now, "exp": now + 3600, **extra}
    return {k: v for k, v in doc.items() if v is not None}


def _none_token(payload: dict[str, Any], alg: str = "none") -> str:
    return forge({"alg": alg, "typ": "JWT"}, payload, None)


@dataclass
class Signer:
    """Credentials for one sign-in mode: ``secret`` (HS256), ``jwks`` (RS256 keys of a JWKS
    document), or ``hook`` (the module :data:`HOOK_SOURCE`)."""

    mode: str
    secret: str = field(default_factory=lambda: secrets.token_hex(32))
    key: rsa.RSAPrivateKey | None = None
    other_key: rsa.RSAPrivateKey | None = None
    ec_key: ec.EllipticCurvePrivateKey | None = None
    kid: str = "key-1"

    @classmethod
    def make(cls, mode: str) -> Signer:
        if mode == "jwks":
            return cls(
                mode,
                key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
                other_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
                ec_key=ec.generate_private_key(ec.SECP256R1()),
            )
        return cls(mode)

    def jwks_document(self) -> dict[str, Any]:
        assert self.key is not None
        assert self.ec_key is not None
        return {"keys": [jwk(self.key, self.kid, alg="RS256"), jwk(self.ec_key, "ec-1")]}

    def _sign(self, payload: dict[str, Any], **header: Any) -> str:
        if self.mode == "secret":
            return jwt.encode(payload, self.secret, algorithm="HS256")
        assert self.key is not None
        return jwt.encode(payload, self.key, algorithm="RS256", headers={"kid": self.kid, **header})

    def sign(
        self,
        user: str,
        *,
        exp: float | None = None,
        roles: list[str] | None = None,
        **claims: Any,
    ) -> str:
        """An honest credential of ``user`` (with ``exp`` in epoch seconds, ``roles``)."""
        expires = int(time.time() + 3600 if exp is None else exp)
        if self.mode == "hook":
            return hook_credential(user, tuple(roles or ()), expires)
        extra: dict[str, Any] = dict(claims)
        if self.mode == "jwks":
            extra.setdefault("iss", ISSUER)
            extra.setdefault("aud", AUDIENCE)
        if roles is not None:
            extra["roles"] = roles
        return self._sign(_claims(user, exp=expires, **extra))

    def headers(self, user: str, **kwargs: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.sign(user, **kwargs)}"}

    def bad_tokens(self, user: str) -> dict[str, str]:
        """Credentials naming ``user`` that this mode must refuse, by what is wrong."""
        now = time.time()
        if self.mode == "hook":
            good = hook_credential(user)
            return {
                "expired beyond the leeway": hook_credential(user, exp=now - 120),
                "signature altered": good[:-4] + ("0000" if not good.endswith("0000") else "1111"),
                "not this team's format": "alice",
                "a JWT": jwt.encode(_claims(user), self.secret, algorithm="HS256"),
            }
        common = {
            "expired beyond the leeway": self.sign(user, exp=now - 120),
            "alg none": _none_token(_claims(user, iss=ISSUER, aud=AUDIENCE)),
            "not a JWT": "not.a.jwt",
        }
        if self.mode == "secret":
            return {
                **common,
                "signed with another secret": jwt.encode(
                    _claims(user), secrets.token_hex(32), algorithm="HS256"
                ),
                "no exp": jwt.encode({"sub": user, "iat": int(now)}, self.secret),
                "no sub": jwt.encode({"iat": int(now), "exp": int(now) + 3600}, self.secret),
                "HS512 with the right secret": jwt.encode(
                    _claims(user), self.secret, algorithm="HS512"
                ),
            }
        assert self.key is not None
        assert self.other_key is not None
        good = _claims(user, iss=ISSUER, aud=AUDIENCE)
        return {
            **common,
            **self.confusion_tokens(user),
            "signed with another key under the right kid": jwt.encode(
                good, self.other_key, algorithm="RS256", headers={"kid": self.kid}
            ),
            "an unknown kid": jwt.encode(
                good, self.key, algorithm="RS256", headers={"kid": "nobody-knows"}
            ),
            "no kid": jwt.encode(good, self.key, algorithm="RS256"),
            "no exp": self._sign({k: v for k, v in good.items() if k != "exp"}),
            "no sub": self._sign({k: v for k, v in good.items() if k != "sub"}),
            "another issuer": self._sign({**good, "iss": "https://evil.test"}),
            "another audience": self._sign({**good, "aud": "another-app"}),
            "not valid yet": self._sign({**good, "nbf": int(now) + 600}),
        }

    def confusion_tokens(self, user: str) -> dict[str, str]:
        """Every algorithm-confusion form against an RS256 key of a JWKS."""
        assert self.key is not None
        assert self.other_key is not None
        payload = _claims(user, iss=ISSUER, aud=AUDIENCE)
        pem = public_pem(self.key)
        attacker_jwk = jwk(self.other_key, self.kid)
        return {
            "HS256 signed with the public key's PEM as the secret": forge(
                {"alg": "HS256", "typ": "JWT", "kid": self.kid}, payload, pem
            ),
            "HS256 signed with the JWK's modulus as the secret": forge(
                {"alg": "HS256", "kid": self.kid}, payload, jwk(self.key, "x")["n"].encode()
            ),
            "HS512 signed with the public key's PEM": forge(
                {"alg": "HS512", "kid": self.kid}, payload, pem
            ),
            "alg none with the right kid": forge({"alg": "none", "kid": self.kid}, payload, None),
            "alg NONE in capitals": forge({"alg": "NONE", "kid": self.kid}, payload, None),
            "RS512, outside the allow-list": jwt.encode(
                payload, self.key, algorithm="RS512", headers={"kid": self.kid}
            ),
            "PS256 on a key pinned to RS256": jwt.encode(
                payload, self.key, algorithm="PS256", headers={"kid": self.kid}
            ),
            "ES256 naming the RSA key": jwt.encode(
                payload, self.ec_key, algorithm="ES256", headers={"kid": self.kid}
            ),
            "RS256 naming the EC key": jwt.encode(
                payload, self.key, algorithm="RS256", headers={"kid": "ec-1"}
            ),
            "the attacker's own key embedded in the header (jwk)": jwt.encode(
                payload,
                self.other_key,
                algorithm="RS256",
                headers={"kid": self.kid, "jwk": attacker_jwk},
            ),
            "the attacker's key set named in the header (jku)": jwt.encode(
                payload,
                self.other_key,
                algorithm="RS256",
                headers={"kid": self.kid, "jku": "http://127.0.0.1:9/jwks.json"},
            ),
            "a signature stripped to nothing": self.sign(user).rsplit(".", 1)[0] + ".",
            "a signature of another token": ".".join(
                [*self.sign(user).split(".")[:2], self.sign("bob").split(".")[2]]
            ),
            "header and payload not base64": f"{_b64(b'{')}.{_b64(b'[')}.xx",
        }

    def bad_authorizations(self, user: str) -> dict[str, str | None]:
        """Authorization header values that must get 401 (None: no header at all)."""
        headers: dict[str, str | None] = {
            f"token {kind}": f"Bearer {token}" for kind, token in self.bad_tokens(user).items()
        }
        headers.update(
            {
                "no Authorization header": None,
                "'Bearer' alone": "Bearer",
                "two words after Bearer": "Bearer abc def",
                "Basic scheme": "Basic xyz",
                "credential without a scheme": self.sign(user),
            }
        )
        return headers


@dataclass
class SignedServer:
    """A live server (in-process or a child process) and the signer of its mode."""

    url: str
    signer: Signer
    live: Any = None

    @property
    def mode(self) -> str:
        return self.signer.mode

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/v1/ws"

    def token(self, user: str, **kwargs: Any) -> str:
        return self.signer.sign(user, **kwargs)

    def headers(self, user: str, **kwargs: Any) -> dict[str, str]:
        return self.signer.headers(user, **kwargs)

    def client(self, user: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
        headers = self.headers(user) if user else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def bad_tokens(self, user: str) -> dict[str, str]:
        return self.signer.bad_tokens(user)

    def bad_authorizations(self, user: str) -> dict[str, str | None]:
        return self.signer.bad_authorizations(user)


def jwks_settings(url: str, **extra: Any) -> dict[str, Any]:
    """Settings of a server verifying RS256/ES256 tokens of the test issuer with a JWKS."""
    return {
        "jwt_jwks_url": url,
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
        **extra,
    }


def jwks_env(url: str, **extra: str) -> dict[str, str]:
    """The same as environment variables, for a ``corral serve`` child process."""
    return {
        "CORRAL_JWT_JWKS_URL": url,
        "CORRAL_JWT_ISSUER": ISSUER,
        "CORRAL_JWT_AUDIENCE": AUDIENCE,
        **extra,
    }


def unauthorized(response: httpx.Response) -> bool:
    """401 with exactly ``{"error": {"code": "unauthorized", "message": <sentence>}}``."""
    try:
        body = response.json()
    except ValueError:
        return False
    return (
        response.status_code == 401
        and isinstance(body, dict)
        and set(body) == {"error"}
        and isinstance(body["error"], dict)
        and set(body["error"]) == {"code", "message"}
        and body["error"]["code"] == "unauthorized"
        and isinstance(body["error"]["message"], str)
        and bool(body["error"]["message"])
    )


def unavailable(response: httpx.Response) -> bool:
    """503 ``unavailable`` in the contract's error shape, with a Retry-After."""
    try:
        body = response.json()
    except ValueError:
        return False
    return (
        response.status_code == 503
        and body.get("error", {}).get("code") == "unavailable"
        and bool(body["error"].get("message"))
        and "retry-after" in response.headers
    )


StartSigned = Callable[..., Awaitable[SignedServer]]
