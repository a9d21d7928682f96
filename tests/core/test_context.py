"""UserExecutionContext: validated ids, read-only metadata, child contexts."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from corral import UserExecutionContext
from corral.core.context import MAX_DEPTH
from corral.errors import ContextDepthError, ContextError

IDS = {"user_id": "alice", "thread_id": "thr_1", "run_id": "run_1"}
ID_FIELDS = ["user_id", "thread_id", "run_id", "request_id", "parent_request_id"]

REFUSED_FORMS: list[Any] = [
    pytest.param("", id="empty"),
    pytest.param("   ", id="blank"),
    pytest.param(42, id="int"),
    pytest.param(None, id="None-object"),
    pytest.param(b"alice", id="bytes"),
    pytest.param(["alice"], id="list"),
    pytest.param("x" * 129, id="129-chars"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("a\nb", id="newline"),
    pytest.param("a\tb", id="tab"),
    pytest.param("a\x1bb", id="escape"),
    pytest.param("a\x7fb", id="del"),
    pytest.param("a\x85b", id="c1-control"),
    pytest.param(" alice", id="leading-space"),
    pytest.param("alice ", id="trailing-space"),
]
PLACEHOLDERS = [
    "none", "null", "undefined", "registry", "placeholder", "default", "test", "mock",
    "example", "0", "None", "NULL", "Undefined", "REGISTRY", "Test",
]  # fmt: skip


def make(**overrides: Any) -> UserExecutionContext:
    return UserExecutionContext(**{**IDS, **overrides})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param(field, *form.values, id=f"{field}-{form.id}")
        for field in ID_FIELDS
        for form in REFUSED_FORMS
        # None is how a top-level context says it has no parent (tested below).
        if not (field == "parent_request_id" and form.values == (None,))
    ],
)
def test_malformed_id_raises_context_error_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ContextError) as info:
        make(**{field: value})
    assert info.value.field == field
    assert field in str(info.value)


@pytest.mark.parametrize("value", PLACEHOLDERS)
@pytest.mark.parametrize("field", ID_FIELDS)
def test_placeholder_id_raises_context_error_naming_the_field(field: str, value: str) -> None:
    with pytest.raises(ContextError) as info:
        make(**{field: value})
    assert info.value.field == field
    assert "placeholder" in info.value.reason


@pytest.mark.parametrize("value", ["ｎｕｌｌ", "ＮＯＮＥ", "ｕｎｄｅｆｉｎｅｄ", "ｔｅｓｔ", "０"])
@pytest.mark.parametrize("field", ID_FIELDS)
def test_placeholder_after_nfkc_raises_context_error(field: str, value: str) -> None:
    """Full-width forms read as the placeholder they show (NFKC), and are refused too."""
    with pytest.raises(ContextError) as info:
        make(**{field: value})
    assert info.value.field == field
    assert "placeholder" in info.value.reason


def test_nfkc_is_only_for_the_comparison_the_id_is_kept_as_given() -> None:
    """A compatibility character that is no placeholder stays as it was given."""
    ctx = make(user_id="ｎｕｌｌｉｆｉｅｄ", thread_id="ﬁle-1")
    assert (ctx.user_id, ctx.thread_id) == ("ｎｕｌｌｉｆｉｅｄ", "ﬁle-1")


@pytest.mark.parametrize(
    "value", ["x" * 128, "user-42", "run_AbC-123", "ユーザー", "alice@example.org", "00"]
)
def test_real_looking_ids_are_accepted(value: str) -> None:
    ctx = make(user_id=value, thread_id=value, run_id=value)
    assert (ctx.user_id, ctx.thread_id, ctx.run_id) == (value, value, value)


def test_top_level_context_has_no_parent() -> None:
    ctx = make(parent_request_id=None)
    assert ctx.parent_request_id is None
    assert ctx.depth == 0


def test_request_id_is_generated_and_unique_per_context() -> None:
    first, second = make(), make()
    assert first.request_id.startswith("req_")
    assert first.request_id != second.request_id
    assert len(first.request_id) >= 20  # 128 random bits, not a counter


@pytest.mark.parametrize("depth", [-1, True, 1.5, "1"])
def test_bad_depth_raises_context_error(depth: Any) -> None:
    with pytest.raises(ContextError) as info:
        make(depth=depth)
    assert info.value.field == "depth"


def test_fields_cannot_be_reassigned() -> None:
    ctx = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.user_id = "mallory"  # type: ignore[misc]
    assert ctx.user_id == "alice"


def test_metadata_is_a_read_only_deep_copy() -> None:
    buffer = bytearray(b"abc")
    meta: dict[str, Any] = {
        "tags": ["a", "b"],
        "nested": {"list": [1, {"deep": "v"}], "set": {1, 2}},
        "buffer": buffer,
    }
    ctx = make(metadata=meta)

    # Changing the caller's objects afterwards changes nothing in the context...
    meta["tags"].append("c")
    meta["nested"]["list"][1]["deep"] = "changed"
    meta["nested"]["set"].add(3)
    meta["added"] = True
    buffer[0] = ord("z")
    assert ctx.metadata["tags"] == ("a", "b")
    assert ctx.metadata["nested"]["list"][1]["deep"] == "v"
    assert ctx.metadata["nested"]["set"] == frozenset({1, 2})
    assert "added" not in ctx.metadata
    assert ctx.metadata["buffer"] == bytearray(b"abc")
    assert ctx.metadata["buffer"] is not buffer

    # ...and nothing reachable from the context can be changed through it.
    with pytest.raises(TypeError):
        ctx.metadata["added"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        ctx.metadata["nested"]["new"] = 1
    with pytest.raises(TypeError):
        ctx.metadata["nested"]["list"][1]["deep"] = "x"
    with pytest.raises(AttributeError):
        ctx.metadata["tags"].append("d")


def test_metadata_must_be_a_mapping() -> None:
    with pytest.raises(ContextError) as info:
        make(metadata=[("a", 1)])
    assert info.value.field == "metadata"


def test_child_keeps_identity_with_new_request_id_and_depth_plus_one() -> None:
    parent = make(metadata={"origin": "api"})
    child = parent.child(tool="search")
    assert (child.user_id, child.thread_id, child.run_id) == ("alice", "thr_1", "run_1")
    assert child.request_id != parent.request_id
    assert child.depth == parent.depth + 1 == 1
    assert child.parent_request_id == parent.request_id
    assert dict(child.metadata) == {"origin": "api", "tool": "search"}
    assert dict(parent.metadata) == {"origin": "api"}  # the parent is untouched

    grandchild = child.child()
    assert grandchild.depth == 2
    assert grandchild.parent_request_id == child.request_id


def test_child_is_refused_past_depth_ten() -> None:
    assert MAX_DEPTH == 10
    ctx = make()
    for expected_depth in range(1, MAX_DEPTH + 1):
        ctx = ctx.child()
        assert ctx.depth == expected_depth
    with pytest.raises(ContextDepthError) as info:
        ctx.child()
    assert info.value.field == "depth"
    with pytest.raises(ContextDepthError):
        make(depth=MAX_DEPTH + 1)
