"""CORRAL_JWT_JWKS_URL against a real JWKS server on a local port: kid picks the key, keys are
cached, an unknown kid refetches at most once per 30 s, a server that is down or answers
garbage is 503 (AuthUnavailable) for uncached keys while cached ones keep working."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest

from corral.auth.factory import authenticator_from
from corral.auth.jwks import MAX_DOCUMENT_BYTES, JwksKeys, parse_jwks
from corral.auth.jwt_authenticator import JwtAuthenticator
from corral.auth.policy import JwtPolicy
from corral.errors import AuthRefused, AuthUnavailable, ConfigurationError
from corral.settings import Settings
from support_auth import JwksServer, Keys, ManualClock, claims, forge, jwk, public_pem, sign

Make = Callable[..., JwtAuthenticator]


@pytest.fixture
async def make(jwks: JwksServer) -> AsyncIterator[Make]:
    """JWKS authenticators on the test's server, with a manual refetch clock; closed after."""
    made: list[JwtAuthenticator] = []

    def factory(
        monotonic: ManualClock | None = None,
        *algorithms: str,
        issuer: str | None = None,
        audience: str | None = None,
        **options: Any,
    ) -> JwtAuthenticator:
        policy = JwtPolicy(
            algorithms=algorithms or ("RS256", "ES256"),
            issuer=issuer,
            audience=audience,
            clock=ManualClock(),
        )
        options.setdefault("clock", monotonic or ManualClock(0.0))
        auth = JwtAuthenticator.with_jwks(jwks.url, policy, **options)
        made.append(auth)
        return auth

    yield factory
    for auth in made:
        await auth.aclose()


async def test_rs256_and_es256_tokens_verify_with_the_key_their_kid_names(
    jwks: JwksServer, keys: Keys, make: Make
) -> None:
    """Two keys in one set; each token's kid picks its key; one fetch serves both."""
    jwks.publish(jwk(keys.rsa, "rsa-1", alg="RS256"), jwk(keys.ec256, "ec-1"))
    auth = make()
    alice = await auth.verify(sign(claims("alice"), keys.rsa, "RS256", kid="rsa-1"))
    bob = await auth.verify(sign(claims("bob"), keys.ec256, "ES256", kid="ec-1"))
    assert (alice.user_id, bob.user_id) == ("alice", "bob")
    assert jwks.requests == 1


async def test_issuer_and_audience_are_checked_on_jwks_tokens(
    jwks: JwksServer, keys: Keys, make: Make
) -> None:
    """A well-signed token of another issuer or for another audience is refused."""
    jwks.publish(jwk(keys.rsa, "k"))
    auth = make(None, issuer="https://idp.example", audience="corral")
    good = claims("alice", iss="https://idp.example", aud="corral")
    assert (await auth.verify(sign(good, keys.rsa, "RS256", kid="k"))).user_id == "alice"
    for kind, payload in (
        ("issuer", {**good, "iss": "https://other.example"}),
        ("audience", {**good, "aud": "another-app"}),
    ):
        with pytest.raises(AuthRefused) as info:
            await auth.verify(sign(payload, keys.rsa, "RS256", kid="k"))
        assert info.value.kind == kind


async def test_a_kid_naming_the_wrong_key_is_refused(
    jwks: JwksServer, keys: Keys, make: Make
) -> None:
    """A token signed by key A but naming kid B fails its signature; an ES256 token naming an
    RSA key is an algorithm mismatch; an RS256 token naming a key pinned to another alg too."""
    jwks.publish(jwk(keys.rsa, "a"), jwk(keys.rsa2, "b"), jwk(keys.rsa2, "pinned", alg="RS256"))
    auth = make(None, "RS256", "ES256", "PS256")
    cases = {
        "signature": sign(claims("mallory"), keys.rsa, "RS256", kid="b"),
        "algorithm": sign(claims("mallory"), keys.ec256, "ES256", kid="a"),
    }
    for kind, token in cases.items():
        with pytest.raises(AuthRefused) as info:
            await auth.verify(token)
        assert info.value.kind == kind
    with pytest.raises(AuthRefused) as info:
        await auth.verify(sign(claims("mallory"), keys.rsa2, "PS256", kid="pinned"))
    assert info.value.kind == "algorithm"


async def test_a_token_without_a_kid_is_refused(jwks: JwksServer, keys: Keys, make: Make) -> None:
    jwks.publish(jwk(keys.rsa, "only"))
    with pytest.raises(AuthRefused) as info:
        await make().verify(sign(claims("alice"), keys.rsa, "RS256"))
    assert info.value.kind == "unknown_key"


async def test_a_rotated_in_key_is_accepted_after_the_refetch(
    jwks: JwksServer, keys: Keys, make: Make
) -> None:
    """The provider adds kid "new": the first token naming it triggers a refetch and passes
    (the previous fetch being more than 30 s old); a withdrawn key is then refused."""
    jwks.publish(jwk(keys.rsa, "old"))
    clock = ManualClock(0.0)
    auth = make(clock)
    assert (await auth.verify(sign(claims("alice"), keys.rsa, "RS256", kid="old"))).user_id
    jwks.publish(jwk(keys.rsa2, "new"))
    clock.now += 31
    new = await auth.verify(sign(claims("bob"), keys.rsa2, "RS256", kid="new"))
    assert new.user_id == "bob"
    assert jwks.requests == 2
    clock.now += 31
    with pytest.raises(AuthRefused) as info:
        await auth.verify(sign(claims("alice"), keys.rsa, "RS256", kid="old-gone"))
    assert info.value.kind == "unknown_key"
    with pytest.raises(AuthRefused) as info:  # "old" was withdrawn by the last fetch
        await auth.verify(sign(claims("alice"), keys.rsa, "RS256", kid="old"))
    assert info.value.kind == "unknown_key"


async def test_unknown_kids_refetch_at_most_once_per_30_s(
    jwks: JwksServer, keys: Keys, make: Make
) -> None:
    """A stream of 200 tokens with random kids costs the provider one request per 30 s."""
    jwks.publish(jwk(keys.rsa, "k1"))
    clock = ManualClock(0.0)
    auth = make(clock)
    await auth.verify(sign(claims("alice"), keys.rsa, "RS256", kid="k1"))
    assert jwks.requests == 1

    async def forged_stream(count: int) -> None:
        for _ in range(count):
            token = sign(claims("mallory"), keys.rsa2, "RS256", kid=secrets.token_hex(8))
            with pytest.raises(AuthRefused) as info:
                await auth.verify(token)
            assert info.value.kind == "unknown_key"
            clock.now += 0.1  # 100 tokens span 10 s

    await forged_stream(100)
    assert jwks.requests == 1  # the first fetch was less than 30 s before every one of them
    clock.now += 20  # 30 s after the first fetch
    await forged_stream(100)
    assert jwks.requests == 2  # one refetch, then quiet for the next 30 s
    assert (await auth.verify(sign(claims("a"), keys.rsa, "RS256", kid="k1"))).user_id == "a"


async def test_concurrent_unknown_kids_share_one_fetch(
    jwks: JwksServer, keys: Keys, make: Make
) -> None:
    """50 simultaneous tokens with a just-published kid: one request, all 50 signed in."""
    jwks.publish(jwk(keys.ec256, "fresh"))
    auth = make()
    tokens = [sign(claims(f"user-{i}"), keys.ec256, "ES256", kid="fresh") for i in range(50)]
    identities = await asyncio.gather(*(auth.verify(t) for t in tokens))
    assert [i.user_id for i in identities] == [f"user-{i}" for i in range(50)]
    assert jwks.requests == 1


async def test_a_server_that_is_down_is_unavailable_for_uncached_kids_only(
    jwks: JwksServer, keys: Keys, make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    """After the JWKS server goes away: a cached kid still verifies, an uncached one is
    AuthUnavailable (never a sign-in, never a 401), with a log line; back up, it recovers."""
    jwks.publish(jwk(keys.rsa, "cached"))
    clock = ManualClock(0.0)
    auth = make(clock)
    await auth.verify(sign(claims("alice"), keys.rsa, "RS256", kid="cached"))
    url = jwks.url
    await jwks.stop()
    clock.now += 31
    with caplog.at_level(logging.WARNING, logger="corral.auth"), pytest.raises(AuthUnavailable):
        await auth.verify(sign(claims("bob"), keys.rsa2, "RS256", kid="uncached"))
    assert any("cannot fetch the signing keys" in r.getMessage() for r in caplog.records)
    assert url.split("/jwks.json")[0] in caplog.text
    # still down, and within 30 s of the failed attempt: no new attempt, still unavailable
    with pytest.raises(AuthUnavailable):
        await auth.verify(sign(claims("bob"), keys.rsa2, "RS256", kid="uncached"))
    cached = await auth.verify(sign(claims("carol"), keys.rsa, "RS256", kid="cached"))
    assert cached.user_id == "carol"


async def test_a_stale_cache_keeps_working_while_the_server_is_down(
    jwks: JwksServer, keys: Keys, make: Make
) -> None:
    """Past max_age a cached kid triggers a refetch; when that fails, the key still works."""
    jwks.publish(jwk(keys.rsa, "k"))
    clock = ManualClock(0.0)
    auth = make(clock, max_age_s=60)
    await auth.verify(sign(claims("alice"), keys.rsa, "RS256", kid="k"))
    jwks.status = 503
    clock.now += 61
    assert (await auth.verify(sign(claims("bob"), keys.rsa, "RS256", kid="k"))).user_id == "bob"
    assert jwks.requests == 2


async def test_a_stale_cache_is_replaced_when_the_server_answers(
    jwks: JwksServer, keys: Keys, make: Make
) -> None:
    """Past max_age, a key the provider withdrew stops being accepted."""
    jwks.publish(jwk(keys.rsa, "k"))
    clock = ManualClock(0.0)
    auth = make(clock, max_age_s=60)
    await auth.verify(sign(claims("alice"), keys.rsa, "RS256", kid="k"))
    jwks.publish(jwk(keys.rsa2, "k2"))
    clock.now += 61
    with pytest.raises(AuthRefused) as info:
        await auth.verify(sign(claims("alice"), keys.rsa, "RS256", kid="k"))
    assert info.value.kind == "unknown_key"


GARBAGE: dict[str, dict[str, Any]] = {
    "HTTP 500": {"status": 500},
    "HTTP 404": {"status": 404},
    "not JSON": {"body": b"<html>maintenance</html>"},
    "a JSON list": {"body": b"[]"},
    "no keys member": {"body": b'{"issuer": "x"}'},
    "keys is not a list": {"body": b'{"keys": {"kid": "x"}}'},
    "an empty key set": {"body": b'{"keys": []}'},
    "only a symmetric key": {"body": b'{"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]}'},
    "too large": {"body": b'{"keys": [], "pad": "' + b"x" * MAX_DOCUMENT_BYTES + b'"}'},
}


@pytest.mark.parametrize("answer", list(GARBAGE))
async def test_a_garbage_answer_is_unavailable_and_logged(
    jwks: JwksServer, keys: Keys, make: Make, caplog: pytest.LogCaptureFixture, answer: str
) -> None:
    """Error statuses, non-JSON, non-JWKS JSON, a set without a usable key, an oversized body:
    AuthUnavailable and a warning naming the reason."""
    for name, value in GARBAGE[answer].items():
        setattr(jwks, name, value)
    auth = make()
    with caplog.at_level(logging.WARNING, logger="corral.auth"), pytest.raises(AuthUnavailable):
        await auth.verify(sign(claims("alice"), keys.rsa, "RS256", kid="k"))
    assert any("cannot fetch the signing keys" in r.getMessage() for r in caplog.records)


async def test_a_server_that_never_answers_times_out_as_unavailable(
    jwks: JwksServer, keys: Keys, make: Make
) -> None:
    """The fetch is bounded as a whole (timeout_s), so a hanging provider costs one wait."""
    jwks.hang = True
    jwks.publish(jwk(keys.rsa, "k"))
    auth = make(None, timeout_s=0.3)
    with pytest.raises(AuthUnavailable):
        await auth.verify(sign(claims("alice"), keys.rsa, "RS256", kid="k"))
    assert jwks.requests == 1


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch(
    jwks: JwksServer, keys: Keys, make: Make
) -> None:
    """A request that gives up while the keys are being fetched leaves the fetch running for
    the others: the next token verifies with no second request."""
    jwks.hang = True
    jwks.publish(jwk(keys.rsa, "k"))
    auth = make()
    token = sign(claims("alice"), keys.rsa, "RS256", kid="k")
    first = asyncio.ensure_future(auth.verify(token))
    await jwks.fetched.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    second = asyncio.ensure_future(auth.verify(token))
    jwks.release()
    assert (await second).user_id == "alice"
    assert jwks.requests == 1


async def test_unusable_keys_in_a_set_are_skipped(keys: Keys) -> None:
    """Symmetric, encryption-only, short RSA, unknown-alg and kid-less keys are skipped with a
    reason; the good key is kept."""
    document = {
        "keys": [
            {"kty": "oct", "kid": "sym", "k": "c2VjcmV0"},
            jwk(keys.rsa, "enc", use="enc"),
            jwk(keys.rsa_short, "short"),
            jwk(keys.rsa, "weird-alg", alg="XS1"),
            jwk(keys.rsa, "misfit", alg="ES256"),
            {k: v for k, v in jwk(keys.rsa, "x").items() if k != "kid"},
            "not an object",
            jwk(keys.ec384, "good"),
        ]
    }
    parsed, skipped = parse_jwks(orjson.dumps(document))
    assert set(parsed) == {"good"}
    assert len(skipped) == 7


async def test_the_hs256_token_signed_with_a_jwk_as_secret_is_refused(
    jwks: JwksServer, keys: Keys, make: Make
) -> None:
    """Algorithm confusion through a JWKS: HS256 signed with the public PEM, and alg none,
    naming a real kid."""
    jwks.publish(jwk(keys.rsa, "k"))
    auth = make()
    for token in (
        forge({"alg": "HS256", "kid": "k"}, claims("mallory"), public_pem(keys.rsa)),
        forge({"alg": "none", "kid": "k"}, claims("mallory"), None),
    ):
        with pytest.raises(AuthRefused) as info:
            await auth.verify(token)
        assert info.value.kind == "algorithm"


async def test_aclose_is_idempotent_and_later_calls_are_unavailable(
    jwks: JwksServer, keys: Keys, make: Make
) -> None:
    jwks.publish(jwk(keys.rsa, "k"))
    auth = make()
    await auth.aclose()
    await auth.aclose()
    with pytest.raises(AuthUnavailable):
        await auth.verify(sign(claims("alice"), keys.rsa, "RS256", kid="k"))


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"jwt_jwks_url": "ftp://idp.example/jwks"}, "http"),
        ({"jwt_jwks_url": "not a url"}, "http"),
        ({"jwt_jwks_url": "https://idp.example/jwks", "jwt_algorithms": ["HS256"]}, "HMAC"),
        (
            {"jwt_jwks_url": "https://idp.example/jwks", "jwt_public_key": "/x.pem"},
            "both set",
        ),
    ],
)
def test_jwks_settings_that_cannot_work_are_configuration_errors(
    settings: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match):
        authenticator_from(Settings(**settings))


async def test_the_factory_builds_a_jwks_authenticator_without_fetching(
    jwks: JwksServer, keys: Keys
) -> None:
    """authenticator_from does no network I/O; the first token fetches."""
    jwks.publish(jwk(keys.ec256, "e"))
    auth = authenticator_from(Settings(jwt_jwks_url=jwks.url, jwt_audience="corral"))
    assert isinstance(auth, JwtAuthenticator)
    async with auth:
        assert jwks.requests == 0
        payload = claims("alice", now=time.time(), aud="corral")
        token = sign(payload, keys.ec256, "ES256", kid="e")
        assert (await auth.verify(token)).user_id == "alice"
        assert jwks.requests == 1


def test_a_plain_http_url_off_loopback_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="corral.auth"):
        JwksKeys("http://idp.example/jwks")
    assert "plain http" in caplog.text
