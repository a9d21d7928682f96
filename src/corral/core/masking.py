"""One run's events masked by value, as the engine emits them (contract §2, §4).

The engine hands every event of its run to an :class:`EventMasker` before numbering it: the
one place all of a run's events pass, so a secret the run resolved (``ctx.secret``) is masked in
whatever carries it — a tool's result or error, a thought, the output, an error message. Text
deltas (``agent_update`` kinds ``text_delta`` and ``answer_delta``) are one stream per kind: a
:class:`~corral.core.secrets.StreamRedactor` sees consecutive deltas of a stream, so a secret
split across them is masked too. Pure and synchronous, one per run.
"""

from __future__ import annotations

from typing import Any

from corral.core.events import EventType
from corral.core.secrets import SecretRedactor, StreamRedactor

# ``agent_update`` kinds whose ``text`` is one stream of deltas (contract §12).
DELTA_KINDS = frozenset({"text_delta", "answer_delta"})

Emission = tuple[EventType, dict[str, Any]]


class EventMasker:
    """Masks the events of one run with its ``redactor``.

    :meth:`mask` returns what to emit in place of one event, in order: the end of a delta
    stream the event closes (text held back because it could begin a secret), then the event
    masked — or nothing for a delta whose text is all held back. :meth:`close` returns what an
    open stream still holds (before a terminal event). While no secret was resolved and no
    stream is open, :attr:`active` is False and events need no masking at all.
    """

    __slots__ = ("_stream", "redactor")

    def __init__(self, redactor: SecretRedactor | None = None) -> None:
        self.redactor = redactor if redactor is not None else SecretRedactor()
        self._stream: tuple[str, StreamRedactor] | None = None

    @property
    def active(self) -> bool:
        return bool(self.redactor) or self._stream is not None

    def mask(self, type_: EventType, data: dict[str, Any]) -> list[Emission]:
        kind, text = data.get("kind"), data.get("text")
        delta = (
            type_ is EventType.AGENT_UPDATE
            and isinstance(kind, str)
            and kind in DELTA_KINDS
            and isinstance(text, str)
        )
        out: list[Emission] = []
        if self._stream is not None and not (delta and kind == self._stream[0]):
            out += self.close()
        if not (delta and isinstance(kind, str) and isinstance(text, str)):  # (narrowing)
            return [*out, (type_, self.redactor.redact(data))]
        if self._stream is None:
            self._stream = (kind, self.redactor.stream())
        sent = self._stream[1].feed(text)
        others = {k: v for k, v in data.items() if k != "text"}
        if not sent and set(others) == {"kind"}:
            return out  # held back whole: it goes out with the next delta, or at the end
        return [*out, (type_, {**self.redactor.redact(others), "text": sent})]

    def close(self) -> list[Emission]:
        """End the open delta stream: one delta with what it still holds, if anything."""
        if self._stream is None:
            return []
        kind, stream = self._stream
        self._stream = None
        rest = stream.flush()
        return [(EventType.AGENT_UPDATE, {"kind": kind, "text": rest})] if rest else []
