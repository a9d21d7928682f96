"""Servers that sign in with an HS256 secret, a JWKS (served over real HTTP) or a hook module."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from conftest import StartServer
from corral.core.registry import AgentRegistry
from support_auth import JwksServer
from support_identity import (
    HOOK_SOURCE,
    MODES,
    SignedServer,
    Signer,
    StartSigned,
    jwks_settings,
    write_module,
)


@pytest.fixture
async def start_signed(start_server: StartServer, tmp_path: Path) -> AsyncIterator[StartSigned]:
    """Start an in-process server verifying callers in ``mode``: ``secret`` (HS256), ``jwks``
    (RS256 tokens, keys from a JWKS on a real local HTTP server, issuer and audience checked)
    or ``hook`` (``--auth`` naming a hook module written to disk)."""
    jwks_servers: list[JwksServer] = []
    modules: list[str] = []

    async def start(
        mode: str, registry: AgentRegistry | None = None, **overrides: Any
    ) -> SignedServer:
        signer = Signer.make(mode)
        settings: dict[str, Any] = {}
        if mode == "secret":
            settings["jwt_secret"] = signer.secret
        elif mode == "jwks":
            jwks = JwksServer()
            await jwks.start()
            jwks.document = signer.jwks_document()
            jwks_servers.append(jwks)
            settings.update(jwks_settings(jwks.url))
        else:
            name = write_module(tmp_path, HOOK_SOURCE, "team_hook")
            modules.append(name)
            settings["auth"] = f"{name}:{overrides.pop('hook', 'authenticate')}"
        live = await start_server(registry, **{**settings, **overrides})
        return SignedServer(live.url, signer, live)

    yield start
    for jwks in jwks_servers:
        await jwks.stop()
    for name in modules:
        sys.modules.pop(name, None)
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


@pytest.fixture(params=MODES)
async def signed_server(request: pytest.FixtureRequest, start_signed: StartSigned) -> SignedServer:
    """A server with the built-in agents, once per sign-in mode."""
    return await start_signed(request.param)
