"""corral events → AG-UI events (contract §12), for one run, in seq order. Pure: no I/O.

The mapping, documented in docs/api.md:

- the stream opens with ``RUN_STARTED`` (when it starts at the beginning of the run);
- ``tool_executing`` → ``TOOL_CALL_START``, ``TOOL_CALL_ARGS`` (the args as JSON text),
  ``TOOL_CALL_END``; ``tool_completed`` → ``TOOL_CALL_RESULT`` (``toolCallId`` = ``call_id``);
- ``agent_update`` of kind ``text_delta`` or ``answer_delta`` → ``TEXT_MESSAGE_CONTENT``, the
  first of a message preceded by ``TEXT_MESSAGE_START``; the message ends
  (``TEXT_MESSAGE_END``) before the next tool call or the end of the run;
- ``agent_completed`` → ``RUN_FINISHED`` with ``result`` = the output; ``agent_cancelled`` →
  ``RUN_FINISHED`` with outcome ``cancelled``; ``agent_error`` → ``RUN_ERROR`` (``code`` = the
  error's type);
- every other event (``agent_started``, ``agent_thinking``, other ``agent_update`` kinds,
  ``input_requested``, ``input_received``...) → ``CUSTOM`` with ``name`` = its type and
  ``value`` = the corral event itself.

Every corral event becomes at least one AG-UI event, and the last one made from event ``seq``
carries ``id: seq``: ``Last-Event-ID`` always names a whole corral event. Message ids are
derived from the run id and the seq, so a resumed stream names the same messages.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from corral.core.events import TERMINAL_TYPES, dumps, loads

TEXT_KINDS = frozenset({"text_delta", "answer_delta"})
AguiEvent = dict[str, Any]


def _millis(ts: object) -> int | None:
    """A corral ``ts`` (ISO-8601 UTC) as milliseconds since the epoch; None if it is not one."""
    if not isinstance(ts, str):
        return None
    try:
        return int(datetime.fromisoformat(ts).timestamp() * 1000)
    except ValueError:
        return None


def _text(value: object) -> str:
    """A tool's result or args as the text AG-UI carries them (JSON, or the string itself)."""
    return value if isinstance(value, str) else dumps(value).decode()


class AguiEncoder:
    """The AG-UI events of one run, made from its corral events one at a time, in seq order.

    ``thread_id`` and ``run_id`` are what the AG-UI events name (the AG-UI ids of the request,
    or corral's); ``corral`` (run and thread id) goes into ``RUN_STARTED``'s metadata. Holds
    only the id of the text message that is open, so it is cheap to replay a run through it.
    """

    def __init__(self, thread_id: str, run_id: str, corral: dict[str, str]) -> None:
        self.thread_id = thread_id
        self.run_id = run_id
        self.corral = corral
        self._corral_run = corral.get("run_id", run_id)
        self._message: str | None = None

    def opening(self) -> AguiEvent:
        """``RUN_STARTED``: the first event of a stream that starts at the run's beginning."""
        return {
            "type": "RUN_STARTED",
            "threadId": self.thread_id,
            "runId": self.run_id,
            "metadata": {"corral": dict(self.corral)},
        }

    def encode(self, event: dict[str, Any]) -> list[AguiEvent]:
        """The AG-UI events for one corral event (at least one)."""
        kind = event.get("type")
        data = event.get("data")
        data = data if isinstance(data, dict) else {}
        seq = event.get("seq")
        stamp = _millis(event.get("ts"))
        out: list[AguiEvent]
        if kind == "agent_update" and data.get("kind") in TEXT_KINDS:
            out = self._text(data.get("text"), seq, event)
        elif kind == "tool_executing":
            out = [*self._close_text(), *self._tool_call(data, seq)]
        elif kind == "tool_completed":
            out = [*self._close_text(), self._tool_result(data, seq)]
        elif kind in TERMINAL_TYPES:
            out = [*self._close_text(), self._terminal(kind, data)]
        else:
            out = [self._custom(event)]
        if stamp is not None:
            for item in out:
                item["timestamp"] = stamp
        return out

    # -- one kind each ----------------------------------------------------------------------

    def _custom(self, event: dict[str, Any]) -> AguiEvent:
        return {"type": "CUSTOM", "name": str(event.get("type")), "value": event}

    def _text(self, text: object, seq: object, event: dict[str, Any]) -> list[AguiEvent]:
        if not isinstance(text, str):
            return [self._custom(event)]  # not a text delta after all: keep it as it is
        out: list[AguiEvent] = []
        if self._message is None:
            self._message = f"{self._corral_run}-text-{seq}"
            out.append(
                {"type": "TEXT_MESSAGE_START", "messageId": self._message, "role": "assistant"}
            )
        out.append({"type": "TEXT_MESSAGE_CONTENT", "messageId": self._message, "delta": text})
        return out

    def _close_text(self) -> list[AguiEvent]:
        if self._message is None:
            return []
        message, self._message = self._message, None
        return [{"type": "TEXT_MESSAGE_END", "messageId": message}]

    def _call_id(self, data: dict[str, Any], seq: object) -> str:
        call_id = data.get("call_id")
        return call_id if isinstance(call_id, str) and call_id else f"{self._corral_run}-{seq}"

    def _tool_call(self, data: dict[str, Any], seq: object) -> list[AguiEvent]:
        call = self._call_id(data, seq)
        return [
            {"type": "TOOL_CALL_START", "toolCallId": call, "toolCallName": str(data.get("tool"))},
            {"type": "TOOL_CALL_ARGS", "toolCallId": call, "delta": _text(data.get("args", {}))},
            {"type": "TOOL_CALL_END", "toolCallId": call},
        ]

    def _tool_result(self, data: dict[str, Any], seq: object) -> AguiEvent:
        call = self._call_id(data, seq)
        if data.get("status") == "success":
            content = _text(data.get("result"))
        else:
            content = _text({"status": data.get("status"), "error": data.get("error")})
        return {
            "type": "TOOL_CALL_RESULT",
            "messageId": f"{self._corral_run}-result-{seq}",
            "toolCallId": call,
            "content": content,
            "role": "tool",
        }

    def _terminal(self, kind: str, data: dict[str, Any]) -> AguiEvent:
        ids = {"threadId": self.thread_id, "runId": self.run_id}
        if kind == "agent_completed":
            return {"type": "RUN_FINISHED", **ids, "result": data.get("output")}
        if kind == "agent_cancelled":
            return {"type": "RUN_FINISHED", **ids, "outcome": {"type": "cancelled"}}
        error = data.get("error")
        error = error if isinstance(error, dict) else {}
        return {
            "type": "RUN_ERROR",
            "message": str(error.get("message") or "the run failed"),
            "code": str(error.get("type") or "agent_failed"),
        }


class AguiFramer:
    """A :data:`corral.server.sse.Framer` that sends a run's events as AG-UI SSE messages:
    ``data: <AG-UI event JSON>`` each, ``id: <seq>`` on the last one made from a corral event.

    Events with ``seq <= skip_through`` (those a resuming client has) go through the encoder,
    so its state is what it was, but nothing of them is sent.
    """

    def __init__(self, encoder: AguiEncoder, skip_through: int = 0) -> None:
        self.encoder = encoder
        self.skip_through = skip_through

    def __call__(self, raw: bytes) -> tuple[bytes, bool]:
        event = loads(raw)
        out = self.encoder.encode(event)
        terminal = event.get("type") in TERMINAL_TYPES
        seq = event.get("seq")
        if isinstance(seq, int) and seq <= self.skip_through:
            return b"", terminal
        return frames(out, seq if isinstance(seq, int) else None), terminal


def frames(events: list[AguiEvent], last_id: int | None = None) -> bytes:
    """SSE messages for AG-UI events, one ``data:`` line each; ``last_id`` on the last one.

    Sent as one write, so a client rarely sees a group cut in two.
    """
    parts = []
    for n, item in enumerate(events):
        head = b"id: %d\n" % last_id if last_id is not None and n == len(events) - 1 else b""
        parts.append(head + b"data: " + dumps(item) + b"\n\n")
    return b"".join(parts)
