"""Identity and AuthRequest: frozen, validated, read-only; nothing secret in their repr."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import orjson
import pytest

from corral import AuthRequest, Identity
from corral.auth import Headers, MultiMap, bearer, validate_user_id
from corral.errors import ContextError


def test_identity_defaults_and_immutability() -> None:
    identity = Identity("alice")
    assert identity.roles == frozenset()
    assert dict(identity.claims) == {}
    assert identity.expires_at is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        identity.user_id = "bob"  # type: ignore[misc]


def test_identity_claims_are_a_deep_read_only_copy() -> None:
    """Changing the dict it was made from changes nothing; nested values are read-only too."""
    source: dict[str, Any] = {"groups": ["a", "b"], "org": {"id": 7}}
    identity = Identity("alice", claims=source)
    source["groups"].append("c")
    source["org"]["id"] = 8
    assert identity.claims["groups"] == ("a", "b")
    assert identity.claims["org"]["id"] == 7
    with pytest.raises(TypeError):
        identity.claims["org"]["id"] = 9


def test_identity_roles_become_a_frozenset_of_strings() -> None:
    identity = Identity("alice", roles=["admin", "admin", "analyst"])  # type: ignore[arg-type]
    assert identity.roles == frozenset({"admin", "analyst"})
    assert identity.has_any_role({"analyst", "x"})
    assert not identity.has_any_role({"x"})


@pytest.mark.parametrize(
    "roles",
    ["admin", [1], [""], None, [f"r{i}" for i in range(300)]],
    ids=["str", "int", "empty", "None", "300-roles"],
)
def test_identity_refuses_roles_that_are_not_strings(roles: Any) -> None:
    """A bare string (which would become a set of letters), non-strings, empty, too many."""
    with pytest.raises(ContextError) as info:
        Identity("alice", roles=roles)
    assert info.value.field == "roles"


@pytest.mark.parametrize("user", ["ｎｕｌｌ", "a\ud800", "a\u200bb", "", " alice", 7])
def test_identity_validates_its_user_id(user: Any) -> None:
    with pytest.raises(ContextError) as info:
        Identity(user)
    assert info.value.field == "user_id"


@pytest.mark.parametrize("value", [True, "1700000000", math.nan, math.inf])
def test_identity_expires_at_is_a_finite_number(value: Any) -> None:
    with pytest.raises(ContextError):
        Identity("alice", expires_at=value)


def test_identity_repr_and_hash_leave_claims_out() -> None:
    """Claims (personal data) are not in the repr; identities hash by user, roles, expiry."""
    a = Identity("alice", claims={"email": "alice@example.org"})
    assert "alice@example.org" not in repr(a)
    assert hash(a) == hash(Identity("alice"))
    assert {Identity("alice"), Identity("alice")} == {Identity("alice")}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("ｎｕｌｌ", "placeholder"),
        ("ＮＯＮＥ", "placeholder"),
        ("ｕｎｄｅｆｉｎｅｄ", "placeholder"),
        ("a\udc00b", "surrogate"),
        ("a\u2028b", "not printable"),
        ("\u00adsoft", "not printable"),
    ],
)
def test_validate_user_id_explains_the_refusal(value: str, reason: str) -> None:
    with pytest.raises(ContextError, match=reason):
        validate_user_id(value)


def test_validate_user_id_keeps_the_id_as_given() -> None:
    """NFKC is only for the placeholder comparison: ﬁ (a ligature) stays ﬁ."""
    assert validate_user_id("ﬁona") == "ﬁona"


def test_identity_round_trips_through_json() -> None:
    """to_dict is plain JSON (for a worker on another node); from_dict gives it back."""
    identity = Identity(
        "alice",
        roles=frozenset({"b", "a"}),
        claims={"groups": ["x", "y"], "org": {"id": 7}},
        expires_at=1_800_000_000,
    )
    doc = orjson.loads(orjson.dumps(identity.to_dict()))
    assert doc == {
        "user_id": "alice",
        "roles": ["a", "b"],
        "claims": {"groups": ["x", "y"], "org": {"id": 7}},
        "expires_at": 1_800_000_000.0,
    }
    again = Identity.from_dict(doc)
    assert again == identity
    assert again.claims["org"]["id"] == 7


@pytest.mark.parametrize("doc", [{}, {"user_id": "null"}, {"user_id": "a", "roles": "admin"}, []])
def test_identity_from_dict_validates(doc: Any) -> None:
    with pytest.raises(ContextError):
        Identity.from_dict(doc)


def test_headers_are_case_insensitive_read_only_and_keep_repeats() -> None:
    headers = Headers([("X-Team", "blue"), ("x-team", "red"), ("Cookie", "a=1")])
    assert headers["x-TEAM"] == "blue"
    assert headers.getlist("X-Team") == ["blue", "red"]
    assert "COOKIE" in headers
    assert len(headers) == 2
    with pytest.raises(TypeError):
        headers["x-team"] = "green"  # type: ignore[index]
    assert "a=1" not in repr(headers)


def test_query_names_are_case_sensitive() -> None:
    query = MultiMap({"Token": "x"})
    assert "token" not in query
    assert query["Token"] == "x"


def test_auth_request_converts_mappings_and_reads_the_bearer_token() -> None:
    request = AuthRequest(
        transport="http",
        headers={"Authorization": "Bearer abc.def.ghi"},
        cookies={"session": "s1"},
        query=[("a", "1"), ("a", "2")],  # type: ignore[arg-type]
        client_host="127.0.0.1",
    )
    assert isinstance(request.headers, Headers)
    assert request.token == "abc.def.ghi"
    assert request.cookies["session"] == "s1"
    assert request.query.getlist("a") == ["1", "2"]
    assert "abc.def.ghi" not in repr(request)
    assert "s1" not in repr(request)


def test_an_explicit_token_wins_over_the_header() -> None:
    """The WebSocket front door passes the auth message's token."""
    request = AuthRequest(transport="ws", headers={"authorization": "Bearer h"}, token="m")
    assert request.token == "m"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"transport": "grpc"}, "transport"),
        ({"transport": "http", "headers": "Authorization: x"}, "headers"),
        ({"transport": "http", "headers": {"a": 1}}, "headers"),
        ({"transport": "http", "token": 5}, "token"),
        ({"transport": "http", "client_host": 5}, "client_host"),
    ],
)
def test_auth_request_refuses_bad_fields(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ContextError) as info:
        AuthRequest(**fields)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer   abc  ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_reads_only_bearer_credentials(header: str | None, token: str | None) -> None:
    assert bearer(header) == token
