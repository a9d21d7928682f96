"""The :class:`~corral.AuthRequest` of a Starlette connection (HTTP, SSE or WebSocket upgrade)."""

from __future__ import annotations

import dataclasses

from starlette.requests import HTTPConnection

from corral.auth.request import AuthRequest, Headers, MultiMap, Transport, bearer


def auth_request(
    conn: HTTPConnection, transport: Transport, token: str | None = None
) -> AuthRequest:
    """What ``conn`` shows an authenticator: every header (repeats kept), its cookies, query
    parameters and client address; ``token`` defaults to the ``Authorization`` bearer token.
    """
    return AuthRequest(
        transport=transport,
        headers=Headers(conn.headers.items()),
        cookies=MultiMap(conn.cookies),
        query=MultiMap(conn.query_params.multi_items()),
        client_host=conn.client.host if conn.client else None,
        token=token if token is not None else bearer(conn.headers.get("authorization")),
    )


def with_token(request: AuthRequest, token: str) -> AuthRequest:
    """``request`` carrying ``token`` (a WebSocket's ``auth`` message) instead of its own."""
    return dataclasses.replace(request, token=token)
