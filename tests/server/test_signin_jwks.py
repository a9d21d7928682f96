"""``corral serve`` pointed at a JWKS served by a real local HTTP server (contract §2).

The JWKS document is served over real HTTP in the test's loop; corral runs as a child process
with ``CORRAL_JWT_JWKS_URL``, issuer and audience set, and is asked over real HTTP, SSE and
WebSocket connections.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.exceptions import ConnectionClosed

from corral import AuthRequest
from corral.errors import AuthUnavailable
from corral.server.app import create_app
from corral.settings import Settings
from support import ServerProcess, spawn_server
from support_auth import JwksServer, jwk, sign
from support_identity import Signer, jwks_env, jwks_settings, unauthorized, unavailable

pytestmark = pytest.mark.slow

TIMEOUT = 10.0


@pytest.fixture
async def jwks() -> AsyncIterator[JwksServer]:
    server = JwksServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def signer() -> Signer:
    return Signer.make("jwks")


async def serve(
    tmp_path: Path, jwks: JwksServer, procs: list[ServerProcess], **env: str
) -> ServerProcess:
    """``corral serve`` (a child process) verifying tokens with the keys at ``jwks``."""
    proc = await asyncio.to_thread(
        spawn_server,
        tmp_path / "data",
        f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}",
        **jwks_env(jwks.url, **env),
    )
    procs.append(proc)
    return proc


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def ws_answer(
    url: str, headers: dict[str, str] | None = None, token: str | None = None
) -> tuple[dict[str, Any], int | None]:
    """The first message a socket gets (sending ``auth`` with ``token`` when given) and the
    close code that follows it (None while the socket stays open)."""
    ws_url = url.replace("http://", "ws://") + "/v1/ws"
    async with websockets.connect(ws_url, additional_headers=headers or {}) as ws:
        if token is not None:
            await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
        first = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        if first["type"] == "ready":
            return first, None
        try:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        except ConnectionClosed as exc:
            return first, exc.rcvd.code if exc.rcvd is not None else None
        raise AssertionError(f"the socket stayed open after {first}")


async def test_corral_serve_with_a_jwks_signs_in_rs256_and_es256_tokens_on_every_transport(
    tmp_path: Path, jwks: JwksServer, signer: Signer, server_processes: list[ServerProcess]
) -> None:
    """RS256 and ES256 tokens of the JWKS's keys sign in over HTTP (GET /v1/me with roles),
    SSE (the run's stream) and WebSocket (upgrade header, and a first `auth` message)."""
    jwks.document = signer.jwks_document()
    proc = await serve(tmp_path, jwks, server_processes)
    token = signer.sign("alice", roles=["analyst", "admin"])
    async with httpx.AsyncClient(base_url=proc.url, headers=bearer(token), timeout=30) as http:
        me = await http.get("/v1/me")
        assert me.status_code == 200, me.text
        assert me.json() == {"user_id": "alice", "roles": ["admin", "analyst"]}
        run = await http.post("/v1/runs", json={"agent": "echo", "input": {"message": "hi"}})
        assert run.status_code == 202, run.text
        async with http.stream("GET", f"/v1/runs/{run.json()['run_id']}/stream") as stream:
            assert stream.status_code == 200
            body = (await stream.aread()).decode()
        assert "event: agent_completed" in body
    payload = {
        "sub": "bob",
        "iss": "https://idp.test",
        "aud": "corral-tests",
        "iat": int(time.time()),
        "exp": int(time.time()) + 600,
    }
    es_token = sign(payload, signer.ec_key, "ES256", kid="ec-1")  # the EC key of the set
    async with httpx.AsyncClient(base_url=proc.url, timeout=30) as http:
        me = await http.get("/v1/me", headers=bearer(es_token))
        assert me.json() == {"user_id": "bob", "roles": []}
    assert await ws_answer(proc.url, headers=bearer(token)) == (
        {"type": "ready", "user_id": "alice"},
        None,
    )
    assert await ws_answer(proc.url, token=es_token) == ({"type": "ready", "user_id": "bob"}, None)
    assert jwks.requests == 1  # one fetch; every later token used the cached keys


async def test_a_key_rotated_in_after_the_first_fetch_signs_in_after_the_refetch(
    tmp_path: Path, jwks: JwksServer, signer: Signer, server_processes: list[ServerProcess]
) -> None:
    """The provider adds a new key after corral fetched the set: the first tokens naming it
    fetch the set again (at most once per refetch interval) and then sign in."""
    jwks.document = signer.jwks_document()
    proc = await serve(tmp_path, jwks, server_processes, CORRAL_JWT_JWKS_REFETCH_S="0.5")
    async with httpx.AsyncClient(base_url=proc.url, timeout=30) as http:
        assert (await http.get("/v1/me", headers=signer.headers("alice"))).status_code == 200
        assert jwks.requests == 1
        new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwks.document = {"keys": [*signer.jwks_document()["keys"], jwk(new_key, "key-2")]}
        rotated = Signer("jwks", key=new_key, other_key=signer.other_key, kid="key-2")
        statuses: list[int] = []
        async with asyncio.timeout(TIMEOUT):
            while True:
                resp = await http.get("/v1/me", headers=rotated.headers("carol"))
                statuses.append(resp.status_code)
                if resp.status_code == 200:
                    break
                assert unauthorized(resp), resp.text  # "a key this server does not know"
                await asyncio.sleep(0.1)
        assert resp.json()["user_id"] == "carol"
        assert jwks.requests == 2, statuses
        # The old key is still in the set, and still signs in.
        assert (await http.get("/v1/me", headers=signer.headers("alice"))).status_code == 200


async def test_issuer_audience_expiry_and_not_before_are_checked_with_a_reason(
    tmp_path: Path, jwks: JwksServer, signer: Signer, server_processes: list[ServerProcess]
) -> None:
    """Well-signed tokens of another issuer, for another audience, expired past the leeway or
    not valid yet are 401 with a message saying which, never holding the token."""
    jwks.document = signer.jwks_document()
    proc = await serve(tmp_path, jwks, server_processes)
    now = time.time()
    cases = {
        "issuer": signer.sign("alice", iss="https://evil.test"),
        "audience": signer.sign("alice", aud="another-app"),
        "expired": signer.sign("alice", exp=now - 120),
        "not valid yet": signer.sign("alice", nbf=int(now) + 600),
    }
    async with httpx.AsyncClient(base_url=proc.url, timeout=30) as http:
        for why, token in cases.items():
            resp = await http.get("/v1/me", headers=bearer(token))
            assert unauthorized(resp), (why, resp.text)
            message = resp.json()["error"]["message"]
            assert why.split()[0] in message, (why, message)
            assert token not in message
            assert token.split(".")[1] not in resp.text
        within_leeway = signer.sign("alice", exp=now - 10)
        assert (await http.get("/v1/me", headers=bearer(within_leeway))).status_code == 200


async def test_every_algorithm_confusion_form_is_refused_over_http_and_websocket(
    tmp_path: Path, jwks: JwksServer, signer: Signer, server_processes: list[ServerProcess]
) -> None:
    """HS256/HS512 signed with the public key, `none` in any case, algorithms outside the
    allow-list or not the key's, a key embedded in or pointed to by the header, stripped or
    swapped signatures: each is 401 over HTTP and `unauthorized` + 1008 on a socket."""
    jwks.document = signer.jwks_document()
    proc = await serve(tmp_path, jwks, server_processes)
    forms = signer.confusion_tokens("mallory")
    assert len(forms) >= 12
    wrong: list[str] = []
    async with httpx.AsyncClient(base_url=proc.url, timeout=30) as http:
        assert (await http.get("/v1/me", headers=signer.headers("alice"))).status_code == 200
        for form, token in forms.items():
            resp = await http.get("/v1/me", headers=bearer(token))
            if not unauthorized(resp):
                wrong.append(f"HTTP {form}: {resp.status_code} {resp.text}")
            first, code = await ws_answer(proc.url, headers=bearer(token))
            if (first.get("code"), code) != ("unauthorized", 1008):
                wrong.append(f"WS {form}: {first} {code}")
        # None of them made anything in mallory's name.
        listing = await http.get("/v1/runs", headers=signer.headers("mallory"))
        assert listing.json()["runs"] == []
    assert not wrong, "\n".join(wrong)


async def test_a_jwks_that_is_down_is_503_for_uncached_keys_and_never_a_sign_in(
    tmp_path: Path, jwks: JwksServer, signer: Signer, server_processes: list[ServerProcess]
) -> None:
    """With the key set unreachable, tokens whose key is cached still sign in; a token naming
    another key is 503 `unavailable` (HTTP) or `unavailable` + 1013 (socket) — never a 401,
    a 500 or a sign-in — and the server logs why."""
    jwks.document = signer.jwks_document()
    proc = await serve(tmp_path, jwks, server_processes, CORRAL_JWT_JWKS_REFETCH_S="0.2")
    stranger = Signer("jwks", key=signer.other_key, other_key=signer.key, kid="rotated-in")
    async with httpx.AsyncClient(base_url=proc.url, timeout=30) as http:
        assert (await http.get("/v1/me", headers=signer.headers("alice"))).status_code == 200
        await jwks.stop()
        assert (await http.get("/v1/me", headers=signer.headers("alice"))).status_code == 200
        seen: list[int] = []
        async with asyncio.timeout(TIMEOUT):
            while True:  # within the refetch interval of the last fetch: an unknown key, 401
                resp = await http.get("/v1/me", headers=stranger.headers("alice"))
                seen.append(resp.status_code)
                if resp.status_code == 503:
                    break
                assert unauthorized(resp), resp.text
                await asyncio.sleep(0.1)
        assert unavailable(resp), resp.text
        assert set(seen) <= {401, 503}
    first, code = await ws_answer(proc.url, headers=stranger.headers("alice"))
    assert (first["type"], first["code"], code) == ("error", "unavailable", 1013)
    proc.output.wait_for("cannot fetch the signing keys", TIMEOUT)


async def test_a_server_whose_jwks_never_answered_is_503_on_every_transport(
    tmp_path: Path, jwks: JwksServer, signer: Signer, server_processes: list[ServerProcess]
) -> None:
    """No key was ever fetched: HTTP and SSE are 503 `unavailable`, the socket gets
    `unavailable` and 1013; the error keeps corral's shape."""
    jwks.status = 500
    proc = await serve(tmp_path, jwks, server_processes)
    async with httpx.AsyncClient(base_url=proc.url, headers=signer.headers("alice")) as http:
        assert unavailable(await http.get("/v1/me"))
        assert unavailable(await http.get("/v1/runs/run_x/stream"))
    first, code = await ws_answer(proc.url, token=signer.sign("alice"))
    assert (first["code"], code) == ("unavailable", 1013)
    assert jwks.requests >= 1


async def test_the_apps_one_authenticator_is_closed_with_its_lifespan(
    tmp_path: Path, jwks: JwksServer, signer: Signer
) -> None:
    """The lifespan makes one authenticator, which every front door shares; leaving the
    lifespan closes it (its key set client too): it then answers 'unavailable'."""
    jwks.document = signer.jwks_document()
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}",
        **jwks_settings(jwks.url),
    )
    app = create_app(settings)
    request = AuthRequest(transport="http", token=signer.sign("alice"))
    async with app.router.lifespan_context(app):
        authenticator = app.state.runtime.signin.authenticator
        identity = await authenticator.authenticate(request)
        assert identity is not None
        assert identity.user_id == "alice"
    with pytest.raises(AuthUnavailable):
        await authenticator.authenticate(request)
