"""Fixtures of the identity tests: keys made once per session, a real JWKS server per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from support_auth import JwksServer, Keys, make_keys


@pytest.fixture(scope="session")
def keys() -> Keys:
    return make_keys()


@pytest.fixture
async def jwks() -> AsyncIterator[JwksServer]:
    """A JWKS server on an ephemeral port, serving no keys until the test publishes some."""
    server = JwksServer()
    await server.start()
    yield server
    await server.stop()
