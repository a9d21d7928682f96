"""The Python client's parts that need no server: the SSE parser, per-run ordering, errors."""

from __future__ import annotations

import random
from typing import Any

import pytest

from corral.client import CorralAPIError, SSEParser
from corral.client.order import RunOrder
from corral.client.types import Event

STREAM = (
    b": keepalive\n\n"
    b'id: 1\nevent: agent_started\ndata: {"a": 1}\n\n'
    b"id: 2\r\nevent: agent_thinking\r\ndata: line one\r\ndata: line two\r\n\r\n"
    b"data:no space\rid: 3\r\r"
    b'event: run\ndata: {"caf\xc3\xa9": true}\n\n'
)


def test_sse_parser_follows_the_html_rules_however_the_bytes_are_split() -> None:
    """CR, LF and CRLF line ends, multi-line data, comments, ids carried forward, UTF-8 —
    the same messages whether the body arrives whole or one byte at a time."""
    whole = SSEParser().feed(STREAM)
    rng = random.Random(7)
    for _ in range(50):
        parser, got, at = SSEParser(), [], 0
        while at < len(STREAM):
            step = rng.randint(1, 7)
            got += parser.feed(STREAM[at : at + step])
            at += step
        assert got == whole
    assert [(m.event, m.data, m.id, m.own_id) for m in whole] == [
        ("agent_started", '{"a": 1}', "1", True),
        ("agent_thinking", "line one\nline two", "2", True),
        ("message", "no space", "3", True),
        ("run", '{"café": true}', "3", False),  # the last id, carried forward
    ]


def test_sse_parser_keeps_an_unfinished_message_until_its_blank_line() -> None:
    """A message is only complete at its blank line (a cut stream drops the partial one)."""
    parser = SSEParser()
    assert parser.feed(b"id: 5\ndata: {}\n") == []
    assert [m.id for m in parser.feed(b"\n")] == ["5"]


def event(run: str, seq: int, kind: str = "agent_thinking") -> Event:
    return {"type": kind, "run_id": run, "thread_id": "t", "seq": seq, "ts": "", "data": {}}


def test_run_order_delivers_each_event_once_in_seq_order() -> None:
    """Duplicates are dropped; an event after a gap is held (and asks for a resume) until the
    gap is filled; nothing after a terminal event is delivered."""
    order = RunOrder()
    delivered: list[int] = []

    def offer(seq: int, kind: str = "agent_thinking") -> bool:
        out, gap = order.offer(event("r", seq, kind))
        delivered.extend(e["seq"] for e in out)
        return gap

    assert offer(1, "agent_started") is False
    assert offer(1) is False  # a duplicate
    assert offer(3) is True  # seq 2 is missing: held, resume the run
    assert offer(4) is True
    assert delivered == [1]
    assert offer(2) is False  # fills the gap: 2, 3, 4 go out
    assert offer(3) is False
    assert offer(5, "agent_completed") is False
    assert offer(6) is False  # after the end: nothing
    assert delivered == [1, 2, 3, 4, 5]
    assert order.unfinished() == []


def test_run_order_follows_runs_from_a_given_seq_and_keeps_runs_apart() -> None:
    """A run tracked from seq 4 delivers from 5; two runs' seqs never mix."""
    order = RunOrder()
    order.track("a", after=4)
    assert order.offer(event("a", 4)) == ([], False)
    out, _ = order.offer(event("a", 5))
    assert [e["seq"] for e in out] == [5]
    out, _ = order.offer(event("b", 1, "agent_started"))
    assert [(e["run_id"], e["seq"]) for e in out] == [("b", 1)]
    assert sorted(r.run_id for r in order.unfinished()) == ["a", "b"]


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected"),
    [
        (
            422,
            b'{"error": {"code": "validation_error", "message": "bad", '
            b'"details": [{"field": "x"}]}}',
            {},
            (422, "validation_error", "bad", [{"field": "x"}], None),
        ),
        (
            429,
            b'{"error": {"code": "rate_limited", "message": "slow"}}',
            {"retry-after": "3"},
            (429, "rate_limited", "slow", None, 3.0),
        ),
        (502, b"<html>bad gateway</html>", {}, (502, "http_error", None, None, None)),
        (404, b"", {}, (404, "not_found", None, None, None)),
    ],
)
def test_errors_carry_status_code_message_and_details(
    status: int, body: bytes, headers: dict[str, str], expected: tuple[Any, ...]
) -> None:
    """An HTTP refusal becomes CorralAPIError(status, code, message, details); an answer
    without corral's error body gets a code from its status and a message quoting it."""
    error = CorralAPIError.from_answer(status, body, headers)
    got = (error.status, error.code, error.message, error.details, error.retry_after)
    assert got[:2] == expected[:2]
    if expected[2] is not None:
        assert error.message == expected[2]
    else:
        assert str(status) in error.message
    assert got[3:] == expected[3:]


def test_a_socket_refusal_gets_the_status_of_its_http_route() -> None:
    """A WebSocket error message carries only a code: the error gets that code's status."""
    error = CorralAPIError.from_message({"type": "error", "code": "conflict", "message": "m"})
    assert (error.status, error.code, error.message) == (409, "conflict", "m")
