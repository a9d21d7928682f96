"""auth_request(conn, transport): what a real HTTP request and WebSocket upgrade show an
authenticator, end to end through a hook, over real connections to a local uvicorn."""

from __future__ import annotations

import json
from typing import Any

import httpx
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from corral import AuthRequest, Identity
from corral.auth.hook import HookAuthenticator
from corral.server.auth_request import auth_request, with_token
from support_auth import serve


def app_for(auth: HookAuthenticator, seen: list[AuthRequest]) -> Starlette:
    """An app whose front doors ask ``auth`` like corral's will: HTTP, then WS with a retry
    using the first message's token."""

    async def whoami(request: Request) -> JSONResponse:
        req = auth_request(request, "http")
        seen.append(req)
        identity = await auth.authenticate(req)
        return JSONResponse({"user": identity.user_id if identity else None})

    async def ws(socket: WebSocket) -> None:
        req = auth_request(socket, "ws")
        await socket.accept()
        identity = await auth.authenticate(req)
        if identity is None:
            message = await socket.receive_json()
            req = with_token(req, message["token"])
            identity = await auth.authenticate(req)
        seen.append(req)
        await socket.send_json({"user": identity.user_id if identity else None})
        await socket.close()

    return Starlette(routes=[Route("/whoami", whoami), WebSocketRoute("/ws", ws)])


async def hook(request: AuthRequest) -> Identity | None:
    if request.token == "t-alice" or request.cookies.get("session") == "s-bob":
        return Identity("alice" if request.token == "t-alice" else "bob")
    return None


async def test_an_http_request_shows_headers_cookies_query_client_and_token() -> None:
    seen: list[AuthRequest] = []
    auth = HookAuthenticator(hook)
    async with serve(app_for(auth, seen)) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.get(
            "/whoami?a=1&a=2&Case=x",
            headers=[
                ("Authorization", "Bearer t-alice"),
                ("X-Team", "blue"),
                ("X-Team", "red"),
                ("Cookie", "session=s1; theme=dark"),
            ],
        )
        assert response.json() == {"user": "alice"}
        cookie_only = await client.get("/whoami", headers={"Cookie": "session=s-bob"})
        assert cookie_only.json() == {"user": "bob"}
        nobody = await client.get("/whoami")
        assert nobody.json() == {"user": None}
    req = seen[0]
    assert req.transport == "http"
    assert req.token == "t-alice"
    assert req.headers["x-team"] == "blue"
    assert req.headers.getlist("X-TEAM") == ["blue", "red"]
    assert dict(req.cookies) == {"session": "s1", "theme": "dark"}
    assert req.query.getlist("a") == ["1", "2"]
    assert "case" not in req.query
    assert req.client_host == "127.0.0.1"
    assert seen[2].token is None


async def test_a_websocket_is_asked_at_the_upgrade_then_with_the_auth_message_token() -> None:
    """No identity from the upgrade headers: the hook is asked again with the first auth
    message's token, and the request keeps the upgrade's headers."""
    seen: list[AuthRequest] = []
    auth = HookAuthenticator(hook)
    async with serve(app_for(auth, seen)) as url:
        ws_url = url.replace("http://", "ws://") + "/ws?room=7"
        async with websockets.connect(ws_url, additional_headers={"X-Team": "blue"}) as ws:
            await ws.send(json.dumps({"type": "auth", "token": "t-alice"}))
            answer: dict[str, Any] = json.loads(await ws.recv())
        assert answer == {"user": "alice"}
        headers = {"Authorization": "Bearer t-alice"}
        async with websockets.connect(ws_url, additional_headers=headers) as ws:
            assert json.loads(await ws.recv()) == {"user": "alice"}
    first, second = seen
    assert first.transport == "ws"
    assert first.token == "t-alice"
    assert first.headers["x-team"] == "blue"
    assert first.query["room"] == "7"
    assert second.headers["authorization"] == "Bearer t-alice"
