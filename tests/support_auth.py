"""Helpers for the identity tests: keys, tokens (honest and forged), a real JWKS server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

NOW = 1_800_000_000.0  # a fixed "now" for the policy's clock: time claims are exact


class ManualClock:
    """A clock the test moves: ``clock()`` is ``clock.now``."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Keys:
    """Private keys made once per test session (RSA generation takes a while)."""

    rsa: rsa.RSAPrivateKey
    rsa2: rsa.RSAPrivateKey
    ec256: ec.EllipticCurvePrivateKey
    ec384: ec.EllipticCurvePrivateKey
    rsa_short: rsa.RSAPrivateKey


def make_keys() -> Keys:
    return Keys(
        rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa2=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec256=ec.generate_private_key(ec.SECP256R1()),
        ec384=ec.generate_private_key(ec.SECP384R1()),
        rsa_short=rsa.generate_private_key(public_exponent=65537, key_size=1024),
    )


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def jwk(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str, **extra: Any
) -> dict[str, Any]:
    """The public JWK of ``key`` with ``kid`` (and ``extra`` members such as ``alg``)."""
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        doc = RSAAlgorithm.to_jwk(public, as_dict=True)
    else:
        doc = ECAlgorithm.to_jwk(public, as_dict=True)
    return {**doc, "kid": kid, "use": "sig", **extra}


def claims(sub: Any = "alice", *, now: float = NOW, ttl: float = 3600, **extra: Any) -> dict:
    """A payload: ``sub``, ``iat`` = now, ``exp`` = now + ttl, then ``extra`` (None drops)."""
    doc: dict[str, Any] = {"sub": sub, "iat": int(now), "exp": int(now + ttl), **extra}
    return {k: v for k, v in doc.items() if v is not None}


def sign(payload: dict, key: Any, alg: str, kid: str | None = None) -> str:
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid} if kid else None)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], hmac_key: bytes | None) -> str:
    """A token built by hand, as an attacker would: HMAC-SHA256 with ``hmac_key`` (any bytes,
    such as a public key's PEM, which PyJWT itself refuses to sign with), or no signature."""
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(payload).encode())
    signing_input = f"{head}.{body}".encode()
    if hmac_key is None:
        return f"{head}.{body}."
    digest = hashlib.sha512 if header["alg"] == "HS512" else hashlib.sha256
    return f"{head}.{body}.{_b64(hmac.new(hmac_key, signing_input, digest).digest())}"


# -- real local servers ----------------------------------------------------------------------


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test process keeps its own handlers
        yield


class LocalServer:
    """An ASGI app on uvicorn, on an ephemeral loopback port, in the test's event loop."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", access_log=False
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None
        self.base_url = ""

    async def start(self) -> str:
        self._task = asyncio.get_running_loop().create_task(self._server.serve())
        ready = asyncio.ensure_future(self._server.ready.wait())
        await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not self._server.started:
            ready.cancel()
            await self._task
            raise RuntimeError("the server did not start")
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def stop(self) -> None:
        """Stop listening (the port then refuses connections) and wait until it has."""
        if self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, 30)
            self._task = None


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """``app`` served on a local port for the block; yields its base URL."""
    server = LocalServer(app)
    try:
        yield await server.start()
    finally:
        await server.stop()


@dataclass
class JwksServer:
    """Serves ``document`` at ``/jwks.json`` over real HTTP on an ephemeral loopback port.

    ``requests`` counts the fetches; ``status`` and ``body`` (raw bytes instead of the JSON
    of ``document``) make it answer garbage; ``hang`` makes it hold each answer until
    :meth:`release`. :meth:`stop` takes it down (the port then refuses connections).
    """

    document: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    status: int = 200
    body: bytes | None = None
    hang: bool = False
    requests: int = 0
    url: str = ""
    _server: LocalServer | None = None
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    fetched: asyncio.Event = field(default_factory=asyncio.Event)

    def publish(self, *keys: dict[str, Any]) -> None:
        self.document = {"keys": list(keys)}

    def release(self) -> None:
        self._released.set()

    async def _jwks(self, request: Request) -> Response:
        self.requests += 1
        self.fetched.set()
        if self.hang:
            await self._released.wait()
        body = self.body if self.body is not None else json.dumps(self.document).encode()
        return Response(body, status_code=self.status, media_type="application/json")

    async def start(self) -> None:
        self._server = LocalServer(Starlette(routes=[Route("/jwks.json", self._jwks)]))
        self.url = await self._server.start() + "/jwks.json"

    async def stop(self) -> None:
        self.release()  # a held answer would keep uvicorn from stopping
        if self._server is not None:
            await self._server.stop()
