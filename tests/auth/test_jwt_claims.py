"""The JWT checks every token goes through, shown with the default HS256 secret (contract §2)."""

from __future__ import annotations

import math
import random
import time
from typing import Any

import jwt
import pytest

from corral import AuthRequest, Identity
from corral.auth.jwt_authenticator import JwtAuthenticator
from corral.auth.policy import MAX_LEEWAY_S, JwtPolicy
from corral.errors import AuthRefused, ConfigurationError
from corral.server.auth import issue_token
from support_auth import NOW, ManualClock, claims, forge, sign

SECRET = "s" * 32 + "-a-test-secret"
KEY = SECRET.encode()


def authenticator(clock: ManualClock | None = None, **policy: Any) -> JwtAuthenticator:
    policy.setdefault("algorithms", ("HS256",))
    return JwtAuthenticator.with_secret(SECRET, JwtPolicy(clock=clock or ManualClock(), **policy))


async def refused(auth: JwtAuthenticator, token: str) -> AuthRefused:
    with pytest.raises(AuthRefused) as info:
        await auth.verify(token)
    assert SECRET not in info.value.message
    assert not token or token not in info.value.message
    return info.value


async def test_a_valid_token_signs_in_its_user_with_roles_claims_and_expiry() -> None:
    """sub, roles, all claims (read-only) and exp come out as the Identity."""
    auth = authenticator()
    token = sign(claims("alice", roles=["analyst", "admin"], team="blue"), KEY, "HS256")
    identity = await auth.verify(token)
    assert identity.user_id == "alice"
    assert identity.roles == frozenset({"analyst", "admin"})
    assert identity.expires_at == NOW + 3600
    assert identity.claims["team"] == "blue"
    assert identity.claims["roles"] == ("analyst", "admin")
    with pytest.raises(TypeError):
        identity.claims["team"] = "red"  # type: ignore[index]


async def test_authenticate_reads_the_request_token_and_none_without_one() -> None:
    """No token is "not signed in" (None), a bearer header token is verified."""
    auth = authenticator()
    assert await auth.authenticate(AuthRequest(transport="http")) is None
    token = sign(claims("bob"), KEY, "HS256")
    request = AuthRequest(transport="sse", headers={"Authorization": f"Bearer {token}"})
    identity = await auth.authenticate(request)
    assert identity is not None
    assert identity.user_id == "bob"


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(-29.0, True), (-30.0, False), (-31.0, False), (1.0, True)],
)
async def test_exp_has_at_most_30_s_of_leeway(offset: float, accepted: bool) -> None:
    """A token expired 29 s ago passes, one expired 30 s or 31 s ago is 401 expired."""
    auth = authenticator()
    token = sign({"sub": "alice", "exp": NOW + offset}, KEY, "HS256")
    if accepted:
        assert (await auth.verify(token)).user_id == "alice"
    else:
        assert (await refused(auth, token)).kind == "expired"


@pytest.mark.parametrize(("offset", "accepted"), [(29.0, True), (30.0, True), (31.0, False)])
async def test_nbf_has_at_most_30_s_of_leeway(offset: float, accepted: bool) -> None:
    """A token valid from 30 s in the future passes (skew), from 31 s on it is not yet valid."""
    auth = authenticator()
    token = sign(claims("alice", nbf=NOW + offset), KEY, "HS256")
    if accepted:
        assert (await auth.verify(token)).user_id == "alice"
    else:
        assert (await refused(auth, token)).kind == "not_yet_valid"


async def test_a_smaller_configured_leeway_is_honoured() -> None:
    """leeway_s=0: a token expired one second ago is refused."""
    auth = authenticator(leeway_s=0)
    assert (await refused(auth, sign({"sub": "a1", "exp": NOW - 1}, KEY, "HS256"))).kind == (
        "expired"
    )


def test_a_leeway_over_30_s_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="leeway"):
        JwtPolicy(algorithms=("HS256",), leeway_s=31)


async def test_iat_in_the_future_is_refused() -> None:
    """A token issued a minute from now is not valid yet (clock trouble or forgery)."""
    auth = authenticator()
    token = sign({"sub": "alice", "iat": NOW + 60, "exp": NOW + 3600}, KEY, "HS256")
    assert (await refused(auth, token)).kind == "not_yet_valid"


async def test_a_token_without_exp_is_refused() -> None:
    auth = authenticator()
    err = await refused(auth, sign({"sub": "alice"}, KEY, "HS256"))
    assert err.kind == "claims"
    assert "exp" in err.message


NOT_TIMES: list[Any] = [
    pytest.param(str(int(NOW + 3600)), id="string"),
    pytest.param(True, id="bool-true"),
    pytest.param(False, id="bool-false"),
    pytest.param(1e20, id="1e20"),
    pytest.param(-1, id="negative"),
    pytest.param(None, id="null"),
    pytest.param([NOW + 3600], id="list"),
    pytest.param({"t": NOW}, id="object"),
    pytest.param(253402300800, id="past-year-9999"),
]


@pytest.mark.parametrize("value", NOT_TIMES)
async def test_exp_must_be_a_plausible_number(value: Any) -> None:
    """exp as a string, bool, 1e20, negative, null, list, object or past 9999 is refused."""
    auth = authenticator()
    token = forge({"alg": "HS256", "typ": "JWT"}, {"sub": "alice", "exp": value}, KEY)
    err = await refused(auth, token)
    assert err.kind == "claims"
    assert "exp" in err.message


@pytest.mark.parametrize("value", [*NOT_TIMES, pytest.param(math.inf, id="Infinity")])
async def test_nbf_must_be_a_plausible_number(value: Any) -> None:
    """nbf of a wrong type, out of range, or non-finite is refused."""
    auth = authenticator()
    payload = {"sub": "alice", "exp": NOW + 3600, "nbf": value}  # null too: present, no number
    err = await refused(auth, forge({"alg": "HS256", "typ": "JWT"}, payload, KEY))
    assert err.kind == "claims"
    assert "nbf" in err.message


async def test_a_float_exp_is_accepted() -> None:
    """JSON numbers with a fraction are times too."""
    auth = authenticator()
    identity = await auth.verify(sign({"sub": "alice", "exp": NOW + 10.5}, KEY, "HS256"))
    assert identity.expires_at == NOW + 10.5


async def test_alg_none_is_refused() -> None:
    """An unsigned token (alg none, in any spelling) never signs anyone in."""
    auth = authenticator()
    for alg in ("none", "None", "NONE"):
        token = forge({"alg": alg, "typ": "JWT"}, claims("alice"), None)
        assert (await refused(auth, token)).kind == "algorithm"


async def test_an_hmac_algorithm_outside_the_list_is_refused() -> None:
    """HS512 with the right secret is still refused when only HS256 is allowed."""
    auth = authenticator()
    token = forge({"alg": "HS512", "typ": "JWT"}, claims("alice"), KEY)
    err = await refused(auth, token)
    assert err.kind == "algorithm"
    assert "HS256" in err.message


async def test_a_token_signed_with_another_secret_is_refused() -> None:
    auth = authenticator()
    token = sign(claims("alice"), b"x" * 40, "HS256")
    assert (await refused(auth, token)).kind == "signature"


@pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b.c", "x" * 20000, "eyJhbGciOi.e30."])
async def test_malformed_tokens_are_refused(token: str) -> None:
    auth = authenticator()
    assert (await refused(auth, token)).kind == "malformed"


@pytest.mark.parametrize("seed", range(5))
async def test_random_garbage_is_always_a_refusal_never_a_crash(seed: int) -> None:
    """Random dots and base64 pieces, JSON fragments and bytes: only AuthRefused comes out."""
    rng = random.Random(seed)
    auth = authenticator()
    pieces = [
        "eyJhbGciOiJIUzI1NiJ9",
        "e30",
        "W10",
        "bnVsbA",
        "eyJhbGciOiJub25lIn0",
        "",
        ".",
        "=",
        "%%",
        "\u0000",
        "\ud800",
    ]
    for _ in range(200):
        token = ".".join(
            "".join(rng.choice(pieces) for _ in range(rng.randint(0, 3)))
            for _ in range(rng.randint(1, 5))
        )
        if token:
            with pytest.raises(AuthRefused):
                await auth.verify(token)


async def test_an_unshowable_alg_is_not_echoed() -> None:
    """An attacker's alg value never reaches the error message."""
    auth = authenticator()
    payload_alg = "<script>" + "A" * 100
    token = forge({"alg": payload_alg}, claims("alice"), KEY)
    err = await refused(auth, token)
    assert err.kind == "algorithm"
    assert payload_alg not in err.message


async def test_issuer_and_audience_must_match_when_set() -> None:
    """Wrong or missing iss / aud are refused with their own kind; right ones pass."""
    auth = authenticator(issuer="https://idp.example", audience="corral")
    good = claims("alice", iss="https://idp.example", aud=["other", "corral"])
    assert (await auth.verify(sign(good, KEY, "HS256"))).user_id == "alice"
    cases = {
        "issuer": [
            claims("alice", iss="https://evil.example", aud="corral"),
            claims("alice", aud="corral"),
        ],
        "audience": [
            claims("alice", iss="https://idp.example", aud="other"),
            claims("alice", iss="https://idp.example"),
        ],
    }
    for kind, payloads in cases.items():
        for payload in payloads:
            assert (await refused(auth, sign(payload, KEY, "HS256"))).kind == kind


async def test_iss_and_aud_are_not_looked_at_when_unset() -> None:
    """Without CORRAL_JWT_ISSUER / _AUDIENCE, a token naming any issuer and audience passes."""
    auth = authenticator()
    token = sign(claims("alice", iss="whoever", aud="something-else"), KEY, "HS256")
    assert (await auth.verify(token)).user_id == "alice"


async def test_another_user_claim_names_the_user() -> None:
    """CORRAL_JWT_USER_CLAIM=email: the user is the email claim, sub is just a claim."""
    auth = authenticator(user_claim="email")
    token = sign(claims("0a1b2c", email="alice@example.org"), KEY, "HS256")
    identity = await auth.verify(token)
    assert identity.user_id == "alice@example.org"
    assert identity.claims["sub"] == "0a1b2c"
    err = await refused(auth, sign(claims("0a1b2c"), KEY, "HS256"))
    assert err.kind == "user"
    assert "email" in err.message


BAD_USERS: list[Any] = [
    pytest.param("ｎｕｌｌ", id="fullwidth-null"),
    pytest.param("ＵＮＤＥＦＩＮＥＤ", id="fullwidth-undefined"),
    pytest.param("null", id="null"),
    pytest.param("al\ud800ice", id="lone-surrogate"),
    pytest.param("\udfff", id="lone-low-surrogate"),
    pytest.param("ali\u200bce", id="zero-width-space"),
    pytest.param("ali\x00ce", id="nul"),
    pytest.param("ali\u0085ce", id="c1-control"),
    pytest.param("\ue000admin", id="private-use"),
    pytest.param("", id="empty"),
    pytest.param("x" * 129, id="129-chars"),
    pytest.param(42, id="number"),
    pytest.param(["alice"], id="list"),
]


@pytest.mark.parametrize("user", BAD_USERS)
async def test_unusable_user_ids_are_refused(user: Any) -> None:
    """Placeholders (also after NFKC), lone surrogates, invisible or control characters, empty,
    too long, or not a string: 401, kind user."""
    auth = authenticator()
    token = forge({"alg": "HS256", "typ": "JWT"}, claims(user), KEY)
    assert (await refused(auth, token)).kind == "user"


@pytest.mark.parametrize("user", ["x" * 128, "ユーザー", "alice@example.org", "Zoë Ã", "00"])
async def test_real_user_ids_are_accepted_unchanged(user: str) -> None:
    """Unicode ids are kept as given (NFKC is only for the placeholder comparison)."""
    auth = authenticator()
    assert (await auth.verify(sign(claims(user), KEY, "HS256"))).user_id == user


@pytest.mark.parametrize(
    "roles", ["admin", ["admin", 3], [""], {"admin": True}, ["r"] * 257], ids=str
)
async def test_roles_must_be_a_list_of_strings(roles: Any) -> None:
    auth = authenticator()
    assert (await refused(auth, sign(claims("alice", roles=roles), KEY, "HS256"))).kind == (
        "claims"
    )


async def test_issue_token_round_trips_through_the_default_authenticator() -> None:
    """What `corral token` prints signs in through the server's default HS256 authenticator,
    which refuses the same forms: a placeholder user after NFKC and a string exp."""
    auth = JwtAuthenticator.with_secret(SECRET)
    identity = await auth.verify(issue_token(SECRET, "alice", roles=("admin",)))
    assert identity.user_id == "alice"
    assert identity.roles == {"admin"}
    assert isinstance(identity, Identity)
    with pytest.raises(AuthRefused) as info:
        await auth.verify(jwt.encode(claims("ｎｕｌｌ", now=time.time()), SECRET))
    assert info.value.kind == "user"
    with pytest.raises(AuthRefused) as info:
        await auth.verify(forge({"alg": "HS256"}, {"sub": "bob", "exp": "9999999999"}, KEY))
    assert info.value.kind == "claims"


def test_an_hs256_secret_shorter_than_32_bytes_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="32 bytes"):
        JwtAuthenticator.with_secret("short")


def test_a_secret_shorter_than_the_hash_of_an_allowed_algorithm_is_a_configuration_error() -> None:
    """HS512 needs a 64-byte secret (RFC 7518 §3.2); the 46-byte one is refused up front."""
    with pytest.raises(ConfigurationError, match="64 bytes"):
        JwtAuthenticator.with_secret(SECRET, JwtPolicy(algorithms=("HS256", "HS512")))
    auth = JwtAuthenticator.with_secret(SECRET * 2, JwtPolicy(algorithms=("HS512",)))
    assert auth.policy.algorithms == ("HS512",)


def test_a_secret_with_an_asymmetric_algorithm_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="RS256"):
        JwtAuthenticator.with_secret(SECRET, JwtPolicy(algorithms=("HS256", "RS256")))


@pytest.mark.parametrize("names", [("none",), ("HS256", "NONE"), ("HS256", "XS999"), ()])
def test_none_unknown_or_no_algorithm_is_a_configuration_error(names: tuple[str, ...]) -> None:
    with pytest.raises(ConfigurationError):
        JwtPolicy(algorithms=names)


async def test_a_remembered_token_still_expires_and_is_forgotten_at_close() -> None:
    """A token verified once is taken from memory for the next requests — but never past its
    own expiry (plus the leeway), and not after the authenticator closed."""
    clock = ManualClock()
    auth = authenticator(clock)
    token = sign(claims("alice", ttl=60), KEY, "HS256")
    first = await auth.verify(token)
    assert await auth.verify(token) is first  # remembered: the same identity object
    clock.now = NOW + 60 + MAX_LEEWAY_S + 1
    assert (await refused(auth, token)).kind == "expired"
    clock.now = NOW
    assert (await auth.verify(token)).user_id == "alice"
    await auth.aclose()
    assert (await auth.verify(token)) is not first  # verified again, not from memory
