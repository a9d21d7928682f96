"""``GET /v1/me`` in every sign-in mode, and development tokens only where they can sign in."""

from __future__ import annotations

import httpx
import pytest

from support_identity import MODES, StartSigned, unauthorized

# Signing in never reaches the store: one database is enough here.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.mark.parametrize("mode", MODES)
async def test_me_answers_the_callers_user_id_and_sorted_roles(
    start_signed: StartSigned, mode: str
) -> None:
    """The user id and roles the authenticator established; no claims; 401 without a
    credential, in the contract's error shape."""
    server = await start_signed(mode)
    headers = server.headers("alice", roles=["writer", "analyst"])
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
        me = await http.get("/v1/me")
        assert me.status_code == 200, me.text
        assert me.json() == {"user_id": "alice", "roles": ["analyst", "writer"]}
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert unauthorized(await http.get("/v1/me"))


async def test_me_is_in_the_openapi_document(start_signed: StartSigned) -> None:
    server = await start_signed("secret")
    async with httpx.AsyncClient(base_url=server.url) as http:
        document = (await http.get("/openapi.json")).json()
    operation = document["paths"]["/v1/me"]["get"]
    assert operation["operationId"] == "get_me"
    assert {"200", "401", "503"} <= set(operation["responses"])


@pytest.mark.parametrize("mode", ["jwks", "hook"])
async def test_dev_tokens_are_off_where_the_server_verifies_with_a_jwks_or_a_hook(
    start_signed: StartSigned, mode: str
) -> None:
    """On a loopback server with a JWKS or a hook, `POST /v1/dev/token` is a 404 saying why
    (an HS256 token could not sign in there) and `GET /v1/dev/token` says it is off."""
    server = await start_signed(mode)
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/v1/dev/token")).json() == {"available": False}
        refused = await http.post("/v1/dev/token", json={"user": "alice"})
        assert refused.status_code == 404
        assert refused.json()["error"]["code"] == "not_found"
        assert "dev tokens are off" in refused.json()["error"]["message"]
        assert "token" not in refused.json()


async def test_dev_tokens_sign_in_on_a_loopback_hs256_server(start_signed: StartSigned) -> None:
    """The default mode gives dev tokens out (GET says so) and they sign in."""
    server = await start_signed("secret")
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/v1/dev/token")).json() == {"available": True}
        given = await http.post("/v1/dev/token", json={"user": "dora"})
        assert given.status_code == 200, given.text
        headers = {"Authorization": f"Bearer {given.json()['token']}"}
        assert (await http.get("/v1/me", headers=headers)).json()["user_id"] == "dora"


async def test_dev_tokens_are_off_when_the_allow_list_leaves_hs256_out(
    start_signed: StartSigned,
) -> None:
    """CORRAL_JWT_ALGORITHMS=HS512: corral's HS256 dev tokens could not sign in, so none."""
    server = await start_signed("secret", jwt_secret="k" * 64, jwt_algorithms=["HS512"])
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/v1/dev/token")).json() == {"available": False}
        assert (await http.post("/v1/dev/token", json={"user": "x1"})).status_code == 404
