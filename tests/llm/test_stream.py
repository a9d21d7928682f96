"""Reading chat-completions streams and the adapter's settings: pure, no server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from corral.llm import (
    CompletionBuilder,
    LLMProtocolError,
    LLMServerError,
    LLMSettings,
    SSEDecoder,
    safe_url,
)
from corral.llm.client import _retry_after

from .servers import chunk


def feed_all(lines: list[str]) -> tuple[CompletionBuilder, list[str]]:
    decoder, builder, texts = SSEDecoder(), CompletionBuilder(), []
    for line in lines:
        data = decoder.feed(line)
        if data is not None:
            texts.append(builder.feed(data))
    return builder, texts


def test_sse_decoder_joins_data_lines_and_skips_comments_and_other_fields() -> None:
    decoder = SSEDecoder()
    out = [
        decoder.feed(line)
        for line in [": keepalive", "", "event: x", "id: 3", "data: a", "data:b", ""]
    ]
    assert out == [None, None, None, None, None, None, "a\nb"]
    decoder.feed("data: tail")
    assert decoder.flush() == "tail"
    assert decoder.flush() is None


def test_text_pieces_concatenate_and_done_ends_the_stream() -> None:
    lines = [chunk(role="assistant"), "", chunk("Hel"), "", chunk("lo"), "", chunk(finish="stop")]
    builder, texts = feed_all([*lines, "", "data: [DONE]", ""])
    result = builder.result()
    assert texts == ["", "Hel", "lo", "", ""]
    assert result.content == "Hello"
    assert result.finish_reason == "stop"
    assert builder.done
    assert result.tokens == 2  # one per chunk carrying content, without usage


def test_usage_from_the_server_replaces_the_chunk_count() -> None:
    usage = json.dumps({"choices": [], "usage": {"completion_tokens": 7}})
    builder, _ = feed_all([chunk("a"), "", chunk(finish="stop"), "", f"data: {usage}", ""])
    assert builder.result().tokens == 7


def test_tool_calls_accumulate_by_index_and_names_are_not_repeated() -> None:
    def call(index: int | None, name: str | None, args: str, id_: str | None = None) -> str:
        part: dict[str, object] = {"function": {"name": name, "arguments": args}}
        if index is not None:
            part["index"] = index
        if id_ is not None:
            part["id"] = id_
        return chunk(tool_calls=[part])

    lines = [
        call(0, "calculator", '{"expr', "c1"),
        call(0, "calculator", 'ession": "1+1"}'),  # a server repeating the name
        call(1, "current_date", "{}", "c2"),
        chunk(finish="tool_calls"),
    ]
    builder, _ = feed_all([x for line in lines for x in (line, "")])
    calls = builder.result().tool_calls
    assert [(c.id, c.name, json.loads(c.arguments)) for c in calls] == [
        ("c1", "calculator", {"expression": "1+1"}),
        ("c2", "current_date", {}),
    ]
    assert calls[0].as_message_part()["function"]["name"] == "calculator"


def test_tool_calls_without_indices_are_told_apart_by_id() -> None:
    def call(id_: str | None, name: str | None, args: str) -> str:
        return chunk(tool_calls=[{"id": id_, "function": {"name": name, "arguments": args}}])

    lines = [call("a", "x", "{"), call(None, None, "}"), call("b", "y", "{}"), chunk(finish="stop")]
    builder, _ = feed_all([x for line in lines for x in (line, "")])
    assert [(c.id, c.name, c.arguments) for c in builder.result().tool_calls] == [
        ("a", "x", "{}"),
        ("b", "y", "{}"),
    ]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"choices": "nope"}', "chat-completions shape"),
        ('{"choices": [{"delta": {"content": 5}}]}', "chat-completions shape"),
        ('{"choices": [{"delta": {"tool_calls": [{"function": 3}]}}]}', "shape"),
    ],
)
def test_a_malformed_chunk_is_a_protocol_error(data: str, match: str) -> None:
    with pytest.raises(LLMProtocolError, match=match):
        CompletionBuilder().feed(data)


def test_an_error_inside_the_stream_is_a_server_error() -> None:
    with pytest.raises(LLMServerError, match="out of memory"):
        CompletionBuilder().feed('{"error": {"message": "out of memory"}}')


def test_a_tool_call_without_a_name_is_a_protocol_error() -> None:
    builder = CompletionBuilder()
    builder.feed(chunk(tool_calls=[{"index": 0, "function": {"arguments": "{}"}}])[6:])
    with pytest.raises(LLMProtocolError, match="no function name"):
        builder.result()


def test_settings_parse_the_tool_list_and_normalise_the_url() -> None:
    settings = LLMSettings(
        base_url="http://127.0.0.1:8080/v1/", model="m", tools="calculator, current_date,"
    )
    assert settings.tools == ("calculator", "current_date")
    assert settings.completions_url == "http://127.0.0.1:8080/v1/chat/completions"
    assert settings.configured
    assert not LLMSettings(base_url=None, model="m").configured
    with pytest.raises(ValueError, match="http"):
        LLMSettings(base_url="ftp://x", model="m")


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_LLM_BASE_URL", "https://api.example.com/v1")
    monkeypatch.setenv("CORRAL_LLM_MODEL", "gpt-x")
    monkeypatch.setenv("CORRAL_LLM_API_KEY", "sk-not-shown")
    monkeypatch.setenv("CORRAL_LLM_MAX_TOOL_ROUNDS", "2")
    settings = LLMSettings()
    assert (settings.base_url, settings.model, settings.max_tool_rounds) == (
        "https://api.example.com/v1",
        "gpt-x",
        2,
    )
    assert "sk-not-shown" not in repr(settings)


def test_display_urls_drop_credentials_and_query() -> None:
    assert (
        safe_url("https://user:pw@host.example:8443/v1?key=s#f") == "https://host.example:8443/v1"
    )
    assert safe_url("http://[::1]:9/v1") == "http://[::1]:9/v1"


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert _retry_after("3") == 3.0
    assert _retry_after("-1") == 0.0
    assert _retry_after(None) is None
    assert _retry_after("soon") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    wait = _retry_after(later)
    assert wait is not None
    assert 25 < wait <= 30
