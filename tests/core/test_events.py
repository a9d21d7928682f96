"""Events: the wire shape of contract §4, terminal status, and redaction of secrets."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from corral import Event, EventType, RunStatus
from corral.core.events import REDACTED, loads, now_ts, redact, redact_text, terminal_status

TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def make_event(type_: EventType = EventType.AGENT_THINKING, **data: Any) -> Event:
    return Event(type=type_, run_id="run_1", thread_id="thr_1", seq=3, data=data, user_id="alice")


def test_ts_is_utc_with_microseconds_and_z() -> None:
    before = datetime.now(UTC)
    ts = now_ts()
    assert TS.match(ts), ts
    parsed = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%f%z")
    assert parsed.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= parsed <= datetime.now(UTC)


def test_event_serializes_to_exactly_the_contract_keys() -> None:
    event = make_event(text="hello", step=1)
    doc = loads(event.to_json())
    assert list(doc) == ["type", "run_id", "thread_id", "seq", "ts", "data"]
    assert doc["type"] == "agent_thinking"
    assert (doc["run_id"], doc["thread_id"], doc["seq"]) == ("run_1", "thr_1", 3)
    assert TS.match(doc["ts"])
    assert doc["data"] == {"text": "hello", "step": 1}
    assert doc == event.to_dict()


def test_owner_is_routing_metadata_never_serialized() -> None:
    event = Event(
        type=EventType.AGENT_STARTED,
        run_id="run_1",
        thread_id="thr_1",
        seq=1,
        data={"agent": "echo"},
        user_id="owner-7f3a9c",
    )
    assert b"owner-7f3a9c" not in event.to_json()
    assert "user_id" not in loads(event.to_json())


def test_event_round_trips_through_json() -> None:
    event = make_event(EventType.TOOL_COMPLETED, call_id="call_1", status="success")
    again = Event.from_json(event.to_json(), user_id="alice")
    assert again == event


def test_event_types_are_the_contract_types_with_three_terminals() -> None:
    assert {t.value for t in EventType} == {
        "agent_started", "agent_thinking", "tool_executing", "tool_completed",
        "agent_update", "input_requested", "input_received", "agent_completed", "agent_error",
        "agent_cancelled",
    }  # fmt: skip
    assert {t.value for t in EventType if t.terminal} == {
        "agent_completed", "agent_error", "agent_cancelled",
    }  # fmt: skip


def test_run_statuses_are_the_contract_statuses_and_waiting_is_unfinished() -> None:
    assert {s.value for s in RunStatus} == {
        "queued", "running", "waiting", "succeeded", "failed", "cancelled", "timed_out",
    }  # fmt: skip
    assert {s.value for s in RunStatus if not s.finished} == {"queued", "running", "waiting"}


@pytest.mark.parametrize(
    ("type_", "data", "status"),
    [
        (EventType.AGENT_COMPLETED, {"output": 1}, RunStatus.SUCCEEDED),
        (EventType.AGENT_CANCELLED, {"reason": "x"}, RunStatus.CANCELLED),
        (EventType.AGENT_ERROR, {"error": {"type": "timeout", "message": ""}}, RunStatus.TIMED_OUT),
        (
            EventType.AGENT_ERROR,
            {"error": {"type": "agent_failed", "message": ""}},
            RunStatus.FAILED,
        ),
        (
            EventType.AGENT_ERROR,
            {"error": {"type": "interrupted", "message": ""}},
            RunStatus.FAILED,
        ),
    ],
)
def test_terminal_event_maps_to_run_status(
    type_: EventType, data: dict[str, Any], status: RunStatus
) -> None:
    assert terminal_status(type_, data) is status
    assert status.finished


SECRET_KEYS = [
    "password", "Password", "PASSWORD", "passwd", "api_key", "apiKey", "API-KEY", "api-key",
    "Authorization", "authorization", "x-auth-token", "X-Auth-Token", "clientSecret",
    "client_secret", "access_token", "refreshToken", "secret", "cookie", "Set-Cookie",
    "private_key", "session_id", "jwt",
]  # fmt: skip
INNOCENT_KEYS = [
    "max_tokens", "author", "text", "prompt_tokens", "authority", "keyboard", "passage",
    "description", "tokens", "monkey",
]  # fmt: skip


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_values_under_secret_looking_keys_are_redacted(key: str) -> None:
    value = {key: "s3cr3t-value", "nested": [{key: {"deeper": "s3cr3t-value"}}]}
    redacted = redact(value)
    assert redacted == {key: REDACTED, "nested": [{key: REDACTED}]}
    assert value[key] == "s3cr3t-value"  # a copy: the original is untouched


@pytest.mark.parametrize("key", INNOCENT_KEYS)
def test_values_under_innocent_keys_are_kept(key: str) -> None:
    value = {key: "plain value 42", "list": [{key: 7}]}
    assert redact(value) == value


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("login with password=hunter2 please", "hunter2"),
        ("api_key: sk-live-12345", "sk-live-12345"),
        ("API-KEY=abc123xyz", "abc123xyz"),
        ('token="two words"', "two words"),
        ("client_secret='cs-9876'", "cs-9876"),
        ("Authorization: Bearer abcdefgh12345xyz", "abcdefgh12345xyz"),
        ("header Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
        ("curl -H 'Bearer zyxwvuts98765'", "zyxwvuts98765"),
        (
            "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl here",
            "eyJhbGciOiJIUzI1NiJ9",
        ),
    ],
)
def test_inline_secrets_in_text_are_redacted(text: str, secret: str) -> None:
    redacted = redact_text(text)
    assert secret not in redacted
    assert REDACTED in redacted
    assert redact({"message": text})["message"] == redacted


@pytest.mark.parametrize(
    "text",
    [
        "the author wrote 512 tokens about passwords",
        "max_tokens=100, temperature=0.2",
        "a keyboard and a monkey",
    ],
)
def test_innocent_text_is_unchanged(text: str) -> None:
    assert redact_text(text) == text
