"""--auth MODULE:ATTR: a hook module written to disk and loaded by its spec, like a team's."""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral import AuthRequest, Identity
from corral.auth.factory import authenticator_from, check_auth_settings
from corral.auth.hook import HookAuthenticator, load_auth_hook
from corral.errors import AuthRefused, AuthUnavailable, ConfigurationError
from corral.settings import Settings

HOOKS = """
import asyncio
import corral
from corral.errors import AuthRefused

calls = []

async def authenticate(request: corral.AuthRequest) -> corral.Identity | None:
    calls.append(request)
    if request.token == "alice-token":
        return corral.Identity("alice", roles={"analyst"}, claims={"via": request.transport})
    if request.cookies.get("session") == "bob-session":
        return corral.Identity("bob")
    return None

async def raises(request):
    raise RuntimeError("the directory service is down")

async def junk(request):
    return {"user_id": "alice"}

async def refuses(request):
    raise AuthRefused("refused", "your account is locked; ask an administrator")

async def hangs(request):
    await asyncio.Event().wait()

async def own_timeout(request):
    raise TimeoutError("the LDAP server timed out")

async def bad_identity(request):
    return corral.Identity("ｎｕｌｌ")

def not_async(request):
    return None

async def two_args(request, other):
    return None

value = 42
"""


@pytest.fixture
def hook_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The name of a fresh hook module in a temporary folder, importable from the cwd."""
    name = f"team_hooks_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(HOOKS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield name
    sys.modules.pop(name, None)


async def test_a_hook_returning_an_identity_signs_in(hook_module: str) -> None:
    """The hook sees the request (token, transport) and its Identity is the answer."""
    auth = HookAuthenticator.from_spec(f"{hook_module}:authenticate")
    identity = await auth.authenticate(AuthRequest(transport="ws", token="alice-token"))
    assert identity is not None
    assert identity.user_id == "alice"
    assert identity.roles == {"analyst"}
    assert identity.claims["via"] == "ws"
    module = sys.modules[hook_module]
    assert module.calls[0].transport == "ws"


async def test_the_attr_defaults_to_authenticate_and_reads_cookies(hook_module: str) -> None:
    auth = HookAuthenticator.from_spec(hook_module)
    request = AuthRequest(transport="sse", cookies={"session": "bob-session"})
    identity = await auth.authenticate(request)
    assert identity is not None
    assert identity.user_id == "bob"


async def test_a_hook_returning_none_is_not_signed_in(hook_module: str) -> None:
    auth = HookAuthenticator.from_spec(f"{hook_module}:authenticate")
    assert await auth.authenticate(AuthRequest(transport="http", token="nobody")) is None


@pytest.mark.parametrize(
    ("attr", "logged"),
    [
        ("raises", "raised"),
        ("junk", "returned a dict"),
        ("bad_identity", "raised"),
        ("own_timeout", "raised"),
    ],
)
async def test_a_failing_hook_is_unavailable_and_logged(
    hook_module: str, caplog: pytest.LogCaptureFixture, attr: str, logged: str
) -> None:
    """A hook that raises (its own TimeoutError too, or building an invalid Identity), or that
    returns junk, is AuthUnavailable (503) with an ERROR log line, never a sign-in; the
    request's token is not in the log."""
    auth = HookAuthenticator.from_spec(f"{hook_module}:{attr}")
    with caplog.at_level(logging.ERROR, logger="corral.auth"), pytest.raises(AuthUnavailable):
        await auth.authenticate(AuthRequest(transport="http", token="tok-SECRET-123"))
    records = [r for r in caplog.records if r.name == "corral.auth"]
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR
    assert logged in records[0].getMessage()
    assert hook_module in records[0].getMessage()
    assert "tok-SECRET-123" not in caplog.text


async def test_a_hanging_hook_times_out_as_unavailable(
    hook_module: str, caplog: pytest.LogCaptureFixture
) -> None:
    auth = HookAuthenticator.from_spec(f"{hook_module}:hangs", timeout_s=0.2)
    with caplog.at_level(logging.ERROR, logger="corral.auth"), pytest.raises(AuthUnavailable):
        await auth.authenticate(AuthRequest(transport="http"))
    assert "did not answer within 0.2 s" in caplog.text


async def test_a_hook_may_refuse_with_its_own_reason(hook_module: str) -> None:
    """AuthRefused raised by the hook passes through: 401 with the hook's message."""
    auth = HookAuthenticator.from_spec(f"{hook_module}:refuses")
    with pytest.raises(AuthRefused, match="account is locked"):
        await auth.authenticate(AuthRequest(transport="http"))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("", "empty"),
        (":authenticate", "MODULE:ATTR"),
        ("no_such_module_xyz:authenticate", "cannot import"),
        ("{module}:missing", "has no 'missing'"),
        ("{module}:not_async", "async function"),
        ("{module}:value", "async function"),
        ("{module}:two_args", "1 argument"),
        ("{module}:bad name", "not a Python name"),
        ("bad-module:authenticate", "MODULE:ATTR"),
    ],
)
def test_a_bad_spec_is_a_configuration_error(hook_module: str, spec: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match) as info:
        load_auth_hook(spec.format(module=hook_module))
    assert "CORRAL_AUTH" in str(info.value)


def test_a_module_that_fails_to_import_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"broken_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("raise RuntimeError('no config file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    with pytest.raises(ConfigurationError, match="no config file"):
        load_auth_hook(name)


async def test_the_factory_prefers_the_hook_and_says_what_it_ignores(
    hook_module: str, caplog: pytest.LogCaptureFixture
) -> None:
    """CORRAL_AUTH wins over the JWT settings, and a warning names the unused ones."""
    settings = Settings(auth=f"{hook_module}:authenticate", jwt_jwks_url="https://idp/jwks")
    with caplog.at_level(logging.WARNING, logger="corral.auth"):
        auth = authenticator_from(settings)
    assert isinstance(auth, HookAuthenticator)
    assert "CORRAL_JWT_JWKS_URL" in caplog.text
    identity = await auth.authenticate(AuthRequest(transport="http", token="alice-token"))
    assert identity == Identity("alice", frozenset({"analyst"}), claims={"via": "http"})


def test_check_auth_settings_loads_the_hook_for_a_worker(hook_module: str) -> None:
    with pytest.raises(ConfigurationError, match="cannot import"):
        check_auth_settings(Settings(auth="nope_missing_module:x"), tokens=False)
    check_auth_settings(Settings(auth=f"{hook_module}:authenticate"), tokens=False)


@pytest.mark.parametrize("command", ["serve", "worker"])
@pytest.mark.parametrize(
    ("option", "spec"),
    [("--auth", "missing_hooks_mod:authenticate"), ("--secrets", "missing_secrets_mod:resolve")],
)
def test_the_cli_exits_2_on_a_bad_spec(
    tmp_path: Path, command: str, option: str, spec: str
) -> None:
    """`corral serve|worker --auth/--secrets MODULE:ATTR` that cannot load: exit 2, a message."""
    result = subprocess.run(
        [sys.executable, "-m", "corral.cli", command, option, spec, "--log-level", "ERROR"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot import" in result.stderr
    assert spec.split(":")[0] in result.stderr


def test_the_cli_reads_corral_auth_from_the_environment(tmp_path: Path) -> None:
    """CORRAL_AUTH works like --auth (and is checked the same way)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    result = subprocess.run(
        [sys.executable, "-m", "corral.cli", "serve", "--data-dir", str(tmp_path / "data")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "CORRAL_AUTH": "not_a_module_here:authenticate"},
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "not_a_module_here" in result.stderr
