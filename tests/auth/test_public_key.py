"""CORRAL_JWT_PUBLIC_KEY: tokens verified with a PEM public key (RS256 / ES256), and every
form of algorithm confusion refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from corral.auth.factory import authenticator_from
from corral.auth.jwt_authenticator import JwtAuthenticator
from corral.auth.policy import JwtPolicy
from corral.errors import AuthRefused, ConfigurationError
from corral.settings import Settings
from support_auth import Keys, ManualClock, claims, forge, private_pem, public_pem, sign


def pem_file(tmp_path: Path, data: bytes, name: str = "public.pem") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def with_pem(path: Path, *algorithms: str) -> JwtAuthenticator:
    policy = JwtPolicy(algorithms=algorithms or ("RS256", "ES256"), clock=ManualClock())
    return JwtAuthenticator.with_public_key(path, policy)


async def test_rs256_with_a_pem_rsa_key(tmp_path: Path, keys: Keys) -> None:
    """A token signed with the RSA private key verifies with its public PEM."""
    auth = with_pem(pem_file(tmp_path, public_pem(keys.rsa)), "RS256")
    identity = await auth.verify(sign(claims("alice", roles=["analyst"]), keys.rsa, "RS256"))
    assert (identity.user_id, identity.roles) == ("alice", {"analyst"})


async def test_es256_with_a_pem_ec_key(tmp_path: Path, keys: Keys) -> None:
    auth = with_pem(pem_file(tmp_path, public_pem(keys.ec256)), "ES256")
    assert (await auth.verify(sign(claims("bob"), keys.ec256, "ES256"))).user_id == "bob"


async def test_a_certificate_pem_works_like_its_public_key(tmp_path: Path, keys: Keys) -> None:
    """Identity providers often publish a certificate; its public key is used."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.example")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(keys.rsa.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(keys.rsa, hashes.SHA256())
    )
    auth = with_pem(pem_file(tmp_path, cert.public_bytes(Encoding.PEM)), "RS256")
    assert (await auth.verify(sign(claims("carol"), keys.rsa, "RS256"))).user_id == "carol"


async def test_a_token_signed_by_another_key_is_refused(tmp_path: Path, keys: Keys) -> None:
    auth = with_pem(pem_file(tmp_path, public_pem(keys.rsa)), "RS256")
    with pytest.raises(AuthRefused) as info:
        await auth.verify(sign(claims("alice"), keys.rsa2, "RS256"))
    assert info.value.kind == "signature"


CONFUSION: dict[str, Any] = {
    "HS256 signed with the PEM bytes": lambda pem, keys: forge(
        {"alg": "HS256", "typ": "JWT"}, claims("mallory"), pem
    ),
    "HS256 signed with the PEM bytes, stripped": lambda pem, keys: forge(
        {"alg": "HS256", "typ": "JWT"}, claims("mallory"), pem.strip()
    ),
    "alg none": lambda pem, keys: forge({"alg": "none", "typ": "JWT"}, claims("mallory"), None),
    "HS512 signed with the PEM bytes": lambda pem, keys: forge(
        {"alg": "HS512", "typ": "JWT"}, claims("mallory"), pem
    ),
    "PS256 (RSA, outside the list)": lambda pem, keys: sign(claims("mallory"), keys.rsa, "PS256"),
    "RS512 (RSA, outside the list)": lambda pem, keys: sign(claims("mallory"), keys.rsa, "RS512"),
    "ES256 by another key": lambda pem, keys: sign(claims("mallory"), keys.ec256, "ES256"),
}


@pytest.mark.parametrize("form", list(CONFUSION))
async def test_algorithm_confusion_is_refused(tmp_path: Path, keys: Keys, form: str) -> None:
    """HS256/HS512 tokens whose HMAC key is the public PEM, alg none, and RSA algorithms outside
    the allow-list never sign anyone in, with the default allow-list (RS256, ES256)."""
    pem = public_pem(keys.rsa)
    auth = with_pem(pem_file(tmp_path, pem), "RS256")
    token = CONFUSION[form](pem, keys)
    with pytest.raises(AuthRefused) as info:
        await auth.verify(token)
    assert info.value.kind in ("algorithm", "signature")


async def test_the_default_allow_list_narrows_to_what_the_key_verifies(
    tmp_path: Path, keys: Keys
) -> None:
    """Default RS256,ES256: an EC P-256 key allows ES256 only, an RSA key RS256 only, so an
    ES256 token meets an RSA key's server as a refused algorithm."""
    ec_auth = authenticator_from(
        Settings(jwt_public_key=pem_file(tmp_path, public_pem(keys.ec256), "ec.pem"))
    )
    assert isinstance(ec_auth, JwtAuthenticator)
    assert ec_auth.policy.algorithms == ("ES256",)
    rsa_auth = authenticator_from(
        Settings(jwt_public_key=pem_file(tmp_path, public_pem(keys.rsa), "rsa.pem"))
    )
    assert isinstance(rsa_auth, JwtAuthenticator)
    assert rsa_auth.policy.algorithms == ("RS256",)
    with pytest.raises(AuthRefused) as info:
        await rsa_auth.verify(sign(claims("mallory", ttl=10**6), keys.ec256, "ES256"))
    assert info.value.kind == "algorithm"


def test_hs256_allowed_with_a_public_key_is_a_configuration_error(
    tmp_path: Path, keys: Keys
) -> None:
    """Listing an HMAC algorithm next to a public key is refused at start-up."""
    path = pem_file(tmp_path, public_pem(keys.rsa))
    with pytest.raises(ConfigurationError, match="HS256"):
        with_pem(path, "RS256", "HS256")
    with pytest.raises(ConfigurationError, match="HS256"):
        authenticator_from(Settings(jwt_public_key=path, jwt_algorithms=["HS256"]))


def test_an_algorithm_the_key_cannot_verify_is_a_configuration_error(
    tmp_path: Path, keys: Keys
) -> None:
    """ES256 listed for an RSA key, ES256 for a P-384 key: the message names what fits."""
    with pytest.raises(ConfigurationError, match="RS256"):
        with_pem(pem_file(tmp_path, public_pem(keys.rsa)), "ES256")
    p384 = pem_file(tmp_path, public_pem(keys.ec384), "p384.pem")
    with pytest.raises(ConfigurationError, match="ES384"):
        authenticator_from(Settings(jwt_public_key=p384))
    auth = authenticator_from(Settings(jwt_public_key=p384, jwt_algorithms=["ES384"]))
    assert isinstance(auth, JwtAuthenticator)
    assert auth.policy.algorithms == ("ES384",)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "cannot read"),
        (b"", "not a PEM public key"),
        (b"-----BEGIN PUBLIC KEY-----\nnonsense\n-----END PUBLIC KEY-----\n", "not a PEM"),
        ("private", "private key"),
        ("short", "too short"),
    ],
    ids=["missing", "empty", "garbage", "private-key", "rsa-1024"],
)
def test_unusable_key_files_are_configuration_errors(
    tmp_path: Path, keys: Keys, content: Any, match: str
) -> None:
    """A missing file, garbage, a private key, a 1024-bit RSA key: exit-2 errors naming it."""
    path = tmp_path / "key.pem"
    if content == "private":
        path.write_bytes(private_pem(keys.rsa))
    elif content == "short":
        path.write_bytes(public_pem(keys.rsa_short))
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigurationError, match=match) as info:
        authenticator_from(Settings(jwt_public_key=path))
    assert "CORRAL_JWT_PUBLIC_KEY" in str(info.value)
