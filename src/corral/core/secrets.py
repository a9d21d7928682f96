"""Redaction by value: every resolved per-user secret becomes ``[REDACTED]`` (contract §2, §4).

:func:`corral.core.events.redact` masks values under secret-looking *keys*; this module masks
the *values* a run resolved through ``ctx.secret(...)`` wherever they turn up — in any string
of an event, a dict key, a stored output or an error message, and in streamed text deltas.
Pure: no I/O, no clock. One :class:`SecretRedactor` per run, never shared between runs.

How occurrences are replaced: every place where any secret occurs is found, overlapping places
are merged, and each merged stretch becomes one ``[REDACTED]``. So with the secrets ``abcdef``
and ``cdefgh``, ``xxabcdefghyy`` is ``xx[REDACTED]yy``: no character of either leaks, which a
replace-one-secret-after-another approach would not promise (it would leave ``gh``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any

import orjson

REDACTED = "[REDACTED]"

# Values shorter than this are not redacted. Masking every "a", "1" or "ok" in a run's events
# would shred the output (and reveal the value anyway: where the holes are, it was), while a
# secret that short is guessed in a few thousand tries whatever corral does. Resolvers hand
# out API keys, tokens and passwords, which are far longer.
MIN_SECRET_CHARS = 4

# The redactor of the run whose agent task is logging: log metadata (contract §2: a resolved
# value never reaches a log line either). Set only through :func:`redacting`; tasks an agent
# starts inherit it.
CURRENT_REDACTOR: ContextVar[SecretRedactor | None] = ContextVar(
    "corral_secret_redactor", default=None
)


def _variants(value: str) -> set[str]:
    """``value`` and the forms it takes inside JSON text (quotes, backslashes and controls
    escaped; non-ASCII as is, or as ``\\uXXXX``), so a tool that returns JSON *text* holding
    the secret is covered too."""
    variants = {value, json.dumps(value)[1:-1]}
    with contextlib.suppress(TypeError):  # orjson refuses lone surrogates; json took them
        variants.add(orjson.dumps(value).decode()[1:-1])
    return variants


def find_spans(text: str, secrets: Iterable[str]) -> list[tuple[int, int]]:
    """Every ``(start, end)`` where one of ``secrets`` occurs in ``text``, overlaps included."""
    spans: list[tuple[int, int]] = []
    for secret in secrets:
        start = text.find(secret)
        while start != -1:
            spans.append((start, start + len(secret)))
            start = text.find(secret, start + 1)  # + 1: overlapping occurrences count too
    return spans


def merge_spans(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """``spans`` in order, those that overlap or touch merged into one."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


class SecretRedactor:
    """The secret values one run resolved, and the masking of them.

    Add each resolved value with :meth:`add` before anything that may hold it is stored or
    sent; :meth:`redact` and :meth:`redact_text` never change their argument. Synchronous
    (nothing awaits), so calls from tasks of one event loop never interleave; not for threads.
    """

    __slots__ = ("_longest", "_secrets")

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._longest = 0
        for value in values:
            self.add(value)

    def add(self, value: str) -> bool:
        """Mask ``value`` from now on; False (and nothing masked) when it is shorter than
        :data:`MIN_SECRET_CHARS` characters or not a string."""
        if not isinstance(value, str) or len(value) < MIN_SECRET_CHARS:
            return False
        for variant in _variants(value):
            self._secrets.add(variant)
            self._longest = max(self._longest, len(variant))
        return True

    def __bool__(self) -> bool:
        return bool(self._secrets)

    @property
    def longest(self) -> int:
        """The length of the longest form of a secret held (0 when there is none)."""
        return self._longest

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where secrets occur in ``text``: merged ``(start, end)`` stretches, in order."""
        return merge_spans(find_spans(text, self._secrets)) if self._secrets else []

    def open_prefix(self, text: str) -> int:
        """How many trailing characters of ``text`` could be the start of a secret (the
        longest suffix that is a proper prefix of one): at most :attr:`longest` - 1."""
        best = 0
        for secret in self._secrets:
            limit = min(len(secret) - 1, len(text))
            # Candidate starts are the secret's first character among the last ``limit``
            # characters; the earliest that fits is the longest suffix for this secret.
            i = text.find(secret[0], len(text) - limit)
            while i != -1 and len(text) - i > best:
                if secret.startswith(text[i:]):
                    best = len(text) - i
                    break
                i = text.find(secret[0], i + 1)
        return best

    def redact_text(self, text: str) -> str:
        """``text`` with each merged stretch of secret occurrences replaced by ``[REDACTED]``."""
        return render(text, self.spans(text))

    def redact(self, value: Any) -> Any:
        """A copy of the JSON value ``value`` with every secret masked (``value`` itself while
        no secret is held).

        Strings anywhere (dict values, list items, dict keys) are masked; an int or float whose
        JSON text holds a secret (a numeric PIN) becomes the string ``[REDACTED]``. A masked key
        that meets another key of its dict gets `` (2)``, `` (3)``… appended, so no item is
        lost. Tuples become lists (their JSON form).
        """
        if not self._secrets:
            return value
        return self._redact(value)

    def _redact(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, dict):
            return {name: self._redact(item) for name, item in self._keys(value).items()}
        if isinstance(value, list | tuple):
            return [self._redact(item) for item in value]
        if isinstance(value, int | float) and not isinstance(value, bool):
            return REDACTED if self.spans(_number_text(value)) else value
        return value

    def _keys(self, value: dict[Any, Any]) -> dict[Any, Any]:
        """Masked key → item, in order; a masked key that meets a key already there (kept
        as it was, or masked earlier) gets `` (2)``, `` (3)``… so no item is lost."""
        masked = {k: self.redact_text(k) if isinstance(k, str) else k for k in value}
        taken = {k for k, m in masked.items() if m == k}
        names: dict[Any, Any] = {}
        for key, name in masked.items():
            if name != key:
                base, n = name, 2
                while name in taken:
                    name, n = f"{base} ({n})", n + 1
                taken.add(name)
            names[key] = name
        return {names[k]: item for k, item in value.items()}

    def stream(self) -> StreamRedactor:
        """A masker for one stream of text deltas (one streamed answer) of this run."""
        return StreamRedactor(self)


def _number_text(value: int | float) -> str:
    """How a number is written in the JSON corral sends (orjson), e.g. ``1e+20``."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # an int past 64 bits: orjson refuses it, the store would stringify it
        return str(value)


def render(text: str, spans: list[tuple[int, int]], *, continued: int | None = None) -> str:
    """``text`` with each of ``spans`` replaced by ``[REDACTED]``; a span starting at 0 when
    ``continued`` is not None continues a ``[REDACTED]`` already emitted and becomes ``""``."""
    parts: list[str] = []
    position = 0
    for start, end in spans:
        parts.append(text[position:start])
        parts.append("" if continued is not None and start == 0 else REDACTED)
        position = end
    parts.append(text[position:])
    return "".join(parts)


class StreamRedactor:
    """Masks secrets in a stream of text deltas, even when a secret is split across them.

    :meth:`feed` returns what can be emitted now. It holds back only trailing characters that
    could be the start of a secret the next delta completes — at most ``longest - 1`` of them
    (``longest`` being the longest secret form held), none while the text ends in nothing
    secret-like — and :meth:`flush` returns the rest at the end.
    The concatenation of everything emitted equals ``redactor.redact_text`` of the whole text,
    however it was split. A secret added to the redactor mid-stream is masked from the held
    text on. Emitting "" for a delta is normal (everything was held back).
    """

    __slots__ = ("_continued", "_held", "_redactor")

    def __init__(self, redactor: SecretRedactor) -> None:
        self._redactor = redactor
        self._held = ""
        # Not None when the text emitted so far ended in a [REDACTED] that may go on: the
        # first ``_continued`` held characters are part of it (0: it ended right at the cut).
        self._continued: int | None = None

    def feed(self, delta: str) -> str:
        """The part of ``self``'s text up to ``delta`` that is safe to emit now, masked."""
        text = self._held + delta
        # Everything before the cut is final: an occurrence starting there would make the
        # text after it a proper prefix of a secret longer than the one held back.
        cut = len(text) - self._redactor.open_prefix(text)
        if cut <= 0:
            self._held = text
            return ""
        spans = self._spans(text)
        emitted: list[tuple[int, int]] = []
        continued: int | None = None
        for start, end in spans:
            if start >= cut:
                break
            emitted.append((start, min(end, cut)))
            if end >= cut:  # this [REDACTED] may go on past the cut
                continued = end - cut
        out = render(text[:cut], emitted, continued=self._continued)
        self._held = text[cut:]
        self._continued = continued
        return out

    def flush(self) -> str:
        """Everything still held, masked; the stream starts afresh afterwards."""
        text, self._held = self._held, ""
        out = render(text, self._spans(text), continued=self._continued)
        self._continued = None
        return out

    def _spans(self, text: str) -> list[tuple[int, int]]:
        spans = self._redactor.spans(text)
        if self._continued is None:
            return spans
        # The held head that belongs to the last emitted [REDACTED] is a span of its own,
        # merged with every occurrence that overlaps or touches it.
        return merge_spans([(0, self._continued), *spans])


@contextlib.contextmanager
def redacting(redactor: SecretRedactor) -> Iterator[None]:
    """Within the block (and the tasks it starts), log lines are masked with ``redactor``
    by :class:`corral.logs.SecretLogFilter`; the previous value is restored on leaving."""
    token = CURRENT_REDACTOR.set(redactor)
    try:
        yield
    finally:
        CURRENT_REDACTOR.reset(token)
