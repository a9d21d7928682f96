"""--secrets MODULE:ATTR: a per-user secrets resolver loaded by its spec from a module on disk."""

from __future__ import annotations

import importlib
import logging
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral import Identity
from corral.auth.factory import secret_resolver_from
from corral.auth.resolver import SecretResolver
from corral.errors import ConfigurationError, RunError, SecretUnavailable
from corral.settings import Settings

RESOLVERS = """
import asyncio
import corral

VAULT = {("alice", "GITHUB_TOKEN"): "ghp_alice_0123456789", ("bob", "GITHUB_TOKEN"): "ghp_bob_x"}

async def resolve(identity: corral.Identity, name: str) -> str | None:
    return VAULT.get((identity.user_id, name))

async def raises(identity, name):
    raise ConnectionError("vault unreachable; value would have been ghp_alice_0123456789")

async def junk(identity, name):
    return b"ghp_alice_0123456789"

async def hangs(identity, name):
    await asyncio.Event().wait()

async def one_arg(identity):
    return None
"""


@pytest.fixture
def resolver_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"team_vault_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(RESOLVERS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield name
    sys.modules.pop(name, None)


ALICE = Identity("alice")
BOB = Identity("bob")


async def test_each_user_gets_their_own_secret_or_none(resolver_module: str) -> None:
    resolver = secret_resolver_from(Settings(secrets=resolver_module))
    assert resolver is not None
    assert await resolver.resolve(ALICE, "GITHUB_TOKEN") == "ghp_alice_0123456789"
    assert await resolver.resolve(BOB, "GITHUB_TOKEN") == "ghp_bob_x"
    assert await resolver.resolve(BOB, "OTHER") is None


def test_no_setting_no_resolver() -> None:
    assert secret_resolver_from(Settings()) is None


@pytest.mark.parametrize(("attr", "logged"), [("raises", "raised"), ("junk", "answered a bytes")])
async def test_a_failing_resolver_is_secret_unavailable_and_logged_without_the_value(
    resolver_module: str, caplog: pytest.LogCaptureFixture, attr: str, logged: str
) -> None:
    """A resolver that raises or answers a non-string: SecretUnavailable (a RunError of type
    secret_unavailable) naming the secret, and an ERROR line; the message carries no value."""
    resolver = SecretResolver.from_spec(f"{resolver_module}:{attr}")
    with (
        caplog.at_level(logging.ERROR, logger="corral.auth"),
        pytest.raises(SecretUnavailable) as info,
    ):
        await resolver.resolve(ALICE, "GITHUB_TOKEN")
    assert isinstance(info.value, RunError)
    assert info.value.error_type == "secret_unavailable"
    assert "GITHUB_TOKEN" in str(info.value)
    assert "ghp_" not in str(info.value)
    assert any(logged in r.getMessage() for r in caplog.records)


async def test_a_hanging_resolver_times_out(resolver_module: str) -> None:
    resolver = SecretResolver.from_spec(f"{resolver_module}:hangs", timeout_s=0.2)
    with pytest.raises(SecretUnavailable, match="in time"):
        await resolver.resolve(ALICE, "GITHUB_TOKEN")


@pytest.mark.parametrize("name", ["", "has space", "x" * 129, "new\nline", 42])
async def test_a_bad_secret_name_is_refused_before_the_resolver_runs(
    resolver_module: str, name: object
) -> None:
    resolver = SecretResolver.from_spec(resolver_module)
    with pytest.raises(SecretUnavailable, match="1-128"):
        await resolver.resolve(ALICE, name)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "match"),
    [("{module}:one_arg", "2 argument"), ("{module}:nothing", "has no"), ("nope_zz", "import")],
)
def test_a_bad_resolver_spec_is_a_configuration_error(
    resolver_module: str, spec: str, match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match) as info:
        secret_resolver_from(Settings(secrets=spec.format(module=resolver_module)))
    assert "CORRAL_SECRETS" in str(info.value)
