"""authenticator_from(settings): which authenticator the settings (and CORRAL_* variables) ask
for, and a ConfigurationError for the settings that contradict each other."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corral import AuthRequest
from corral.auth.factory import authenticator_from
from corral.auth.jwt_authenticator import JwtAuthenticator
from corral.errors import AuthRefused, ConfigurationError
from corral.server.auth import issue_token
from corral.settings import Settings, load_secret
from support_auth import Keys, claims, public_pem, sign


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "CORRAL_JWT_SECRET",
        "CORRAL_JWT_PUBLIC_KEY",
        "CORRAL_JWT_JWKS_URL",
        "CORRAL_JWT_ALGORITHMS",
        "CORRAL_JWT_ISSUER",
        "CORRAL_JWT_AUDIENCE",
        "CORRAL_JWT_USER_CLAIM",
        "CORRAL_AUTH",
        "CORRAL_SECRETS",
    ):
        monkeypatch.delenv(name, raising=False)


async def test_the_default_is_hs256_with_the_generated_secret(tmp_path: Path) -> None:
    """No settings: HS256 with <data_dir>/secret (made once, mode 0600), which `corral token`
    signs with too."""
    settings = Settings(data_dir=tmp_path / "data")
    auth = authenticator_from(settings)
    assert isinstance(auth, JwtAuthenticator)
    assert auth.policy.algorithms == ("HS256",)
    secret_file = tmp_path / "data" / "secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    token = issue_token(load_secret(settings), "alice", roles=("admin",))
    identity = await auth.authenticate(
        AuthRequest(transport="http", headers={"authorization": f"Bearer {token}"})
    )
    assert identity is not None
    assert identity.user_id == "alice"
    assert identity.roles == {"admin"}


async def test_environment_variables_configure_the_jwt_check(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CORRAL_JWT_PUBLIC_KEY, _ALGORITHMS (comma-separated), _ISSUER, _AUDIENCE, _USER_CLAIM."""
    path = tmp_path / "idp.pem"
    path.write_bytes(public_pem(keys.rsa))
    monkeypatch.setenv("CORRAL_JWT_PUBLIC_KEY", str(path))
    monkeypatch.setenv("CORRAL_JWT_ALGORITHMS", " RS256 , PS256 ,")
    monkeypatch.setenv("CORRAL_JWT_ISSUER", "https://idp.example")
    monkeypatch.setenv("CORRAL_JWT_AUDIENCE", "corral")
    monkeypatch.setenv("CORRAL_JWT_USER_CLAIM", "preferred_username")
    auth = authenticator_from(Settings(data_dir=tmp_path))
    assert isinstance(auth, JwtAuthenticator)
    assert auth.policy.algorithms == ("RS256", "PS256")
    payload = claims(
        "0f9e",
        now=time.time(),
        iss="https://idp.example",
        aud="corral",
        preferred_username="dana",
    )
    assert (await auth.verify(sign(payload, keys.rsa, "PS256"))).user_id == "dana"
    with pytest.raises(AuthRefused) as info:
        await auth.verify(sign({**payload, "iss": "https://evil"}, keys.rsa, "RS256"))
    assert info.value.kind == "issuer"


def test_empty_variables_mean_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CORRAL_JWT_PUBLIC_KEY= (empty) is not the current folder; the default applies."""
    monkeypatch.setenv("CORRAL_JWT_PUBLIC_KEY", "")
    monkeypatch.setenv("CORRAL_JWT_JWKS_URL", " ")
    monkeypatch.setenv("CORRAL_AUTH", "")
    settings = Settings(data_dir=tmp_path)
    assert settings.jwt_public_key is None
    assert settings.jwt_jwks_url is None
    auth = authenticator_from(settings)
    assert isinstance(auth, JwtAuthenticator)
    assert auth.policy.algorithms == ("HS256",)


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"jwt_algorithms": ["RS256"]}, "RS256"),
        ({"jwt_algorithms": ["HS256", "none"]}, "never accepted"),
        ({"jwt_algorithms": ["HS999"]}, "does not verify"),
        ({"jwt_algorithms": ["HS512"]}, "64 bytes"),
        ({"jwt_user_claim": " "}, "USER_CLAIM"),
        ({"jwt_secret": "too-short"}, "32 bytes"),
    ],
)
def test_secret_settings_that_cannot_work_are_configuration_errors(
    tmp_path: Path, values: dict[str, object], match: str
) -> None:
    """An asymmetric or unknown algorithm with a secret, none, a secret too short for HS512 or
    at all, an empty user claim."""
    with pytest.raises(ConfigurationError, match=match):
        authenticator_from(Settings(data_dir=tmp_path, **{"jwt_secret": "k" * 32, **values}))


def test_a_public_key_and_a_jwks_together_are_a_configuration_error(
    tmp_path: Path, keys: Keys
) -> None:
    path = tmp_path / "k.pem"
    path.write_bytes(public_pem(keys.ec256))
    with pytest.raises(ConfigurationError, match="both set"):
        authenticator_from(Settings(jwt_public_key=path, jwt_jwks_url="https://idp/jwks"))


async def test_with_a_public_key_the_secret_signs_nothing_in(tmp_path: Path, keys: Keys) -> None:
    """A key replaces the secret: an HS256 token of the server's own secret is refused."""
    path = tmp_path / "k.pem"
    path.write_bytes(public_pem(keys.ec256))
    secret = "q" * 40
    auth = authenticator_from(Settings(jwt_public_key=path, jwt_secret=secret))
    assert isinstance(auth, JwtAuthenticator)
    with pytest.raises(AuthRefused) as info:
        await auth.verify(issue_token(secret, "alice"))
    assert info.value.kind == "algorithm"


@pytest.mark.parametrize(
    "env",
    [{"CORRAL_JWT_JWKS_URL": "https://idp.example/jwks.json"}, {"CORRAL_AUTH": "m:authenticate"}],
    ids=["jwks", "hook"],
)
def test_corral_token_warns_when_the_settings_would_not_accept_it(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """`corral token` prints its HS256 token, and says on stderr that a server with these
    settings would not accept it; in the default mode it says nothing."""

    def run(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
        return subprocess.run(
            [sys.executable, "-m", "corral.cli", "token", "alice", "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**clean, **extra},
        )

    warned = run(env)
    assert warned.returncode == 0, warned.stderr
    assert warned.stdout.count(".") == 2  # a JWT
    assert "will not sign in" in warned.stderr
    quiet = run({})
    assert quiet.returncode == 0
    assert quiet.stderr == ""
