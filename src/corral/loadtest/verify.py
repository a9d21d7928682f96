"""Isolation, completeness and order checks of what one connection receives. No I/O.

A :class:`ConnectionVerifier` sees every raw frame of one WebSocket connection of one user
(across reconnects: it checks the logical stream the user was promised). It finds:

- **isolation** — another user's canary anywhere in a frame (a substring count per frame,
  the regex runs only on a hit), an event of a run the user did not start, a ``ready`` for
  another user;
- **completeness** — a run of the user missing, a gap in its ``seq``, no terminal event, a
  ``tool_executing`` without its ``tool_completed``, an event count other than the agent's;
- **order** — an event that arrives after a later one of its run, a first event that is not
  ``agent_started``, anything after the terminal event, the same ``(run_id, seq)`` twice.

Semantic checks run in ``seq`` order through a small reorder buffer, so a late event is
reported once as an order violation rather than as a cascade of pairing errors. After a
``resume`` the contract allows live events to overtake the replay and to arrive twice; the
run is then marked *resyncing* and those two things are counted but not reported.
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Collection

CANARY_PREFIX = "ltcanary"
CANARY_RE = re.compile(rb"ltcanary[0-9a-f]{24}")
TERMINAL = frozenset({"agent_completed", "agent_error", "agent_cancelled"})
MAX_EXAMPLES = 5


class Category(enum.StrEnum):
    ISOLATION = "isolation"
    COMPLETENESS = "completeness"
    ORDER = "order"


class Kind(enum.StrEnum):
    """A violation kind; its value is ``<category>.<name>``."""

    FOREIGN_CANARY = "isolation.foreign_canary"
    FOREIGN_RUN = "isolation.foreign_run"
    WRONG_USER = "isolation.wrong_user"
    MISSING_RUN = "completeness.missing_run"
    MISSING_EVENTS = "completeness.missing_events"
    UNPAIRED_TOOL = "completeness.unpaired_tool"
    EVENT_COUNT = "completeness.event_count"
    CONNECTION_LOST = "completeness.connection_lost"
    OUT_OF_ORDER = "order.out_of_order"
    FIRST_NOT_STARTED = "order.first_not_agent_started"
    AFTER_TERMINAL = "order.after_terminal"
    DUPLICATE = "order.duplicate"

    @property
    def category(self) -> Category:
        return Category(self.value.split(".", 1)[0])


class Violations:
    """Counts per kind and the first few examples of each. One per loadtest, shared."""

    def __init__(self, max_examples: int = MAX_EXAMPLES) -> None:
        self.counts: Counter[Kind] = Counter()
        self.examples: dict[Kind, list[str]] = {}
        self._max_examples = max_examples

    def add(self, kind: Kind, example: str) -> None:
        self.counts[kind] += 1
        examples = self.examples.setdefault(kind, [])
        if len(examples) < self._max_examples:
            examples.append(example)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def by_category(self) -> dict[str, int]:
        out = {c.value: 0 for c in Category}
        for kind, n in self.counts.items():
            out[kind.category.value] += n
        return out

    def as_dict(self) -> dict[str, object]:
        return {
            kind.value: {"count": n, "examples": self.examples.get(kind, [])}
            for kind, n in sorted(self.counts.items())
        }


class RunTrack:
    """One run as one connection received it."""

    __slots__ = (
        "applied",
        "contiguous",
        "duplicates",
        "max_seq",
        "open_calls",
        "pending",
        "resyncing",
        "terminal_arrived",
        "terminal_arrived_type",
        "terminal_seq",
        "terminal_type",
    )

    def __init__(self) -> None:
        self.contiguous = 0  # every seq in 1..contiguous has been applied, in seq order
        self.max_seq = 0
        self.pending: dict[int, tuple[str, str | None]] = {}
        self.open_calls: set[str] = set()
        self.applied = 0
        self.duplicates = 0
        self.terminal_seq: int | None = None
        self.terminal_type: str | None = None
        self.terminal_arrived = 0  # seq of the first terminal event to arrive (0: none yet)
        self.terminal_arrived_type = ""
        self.resyncing = False

    @property
    def complete(self) -> bool:
        return self.terminal_seq is not None and not self.pending


class ConnectionVerifier:
    """Checks every frame one connection of ``user_id`` receives; see the module docstring.

    Not thread-safe and not meant to be: one connection's frames arrive in one task.
    """

    def __init__(self, user_id: str, canary: str, label: str, violations: Violations) -> None:
        self.user_id = user_id
        self.label = label
        self.canary = canary.encode()
        self.tracks: dict[str, RunTrack] = {}
        self.duplicates = 0
        self.duplicates_tolerated = 0
        self._violations = violations

    def _report(self, kind: Kind, detail: str) -> None:
        self._violations.add(kind, f"{self.label}: {detail}")

    # -- per frame ----------------------------------------------------------------------------

    def check_frame(self, raw: bytes) -> None:
        """Isolation by content: every canary-looking token in ``raw`` must be the user's."""
        seen = raw.count(b"ltcanary")
        if seen and seen != raw.count(self.canary):
            foreign = sorted({m.decode() for m in CANARY_RE.findall(raw)} - {self.canary.decode()})
            self._report(
                Kind.FOREIGN_CANARY,
                f"received another user's canary {', '.join(foreign) or '(malformed)'} "
                f"in {raw[:160].decode(errors='replace')}",
            )

    def check_ready(self, user_id: object) -> None:
        if user_id != self.user_id:
            self._report(Kind.WRONG_USER, f"ready names user {user_id!r}")

    def resyncing(self, run_id: str) -> int:
        """Mark ``run_id`` as resumed; returns the ``after`` to resume from."""
        track = self.tracks.get(run_id)
        if track is None:
            track = self.tracks[run_id] = RunTrack()
        track.resyncing = True
        return track.contiguous

    def is_complete(self, run_id: str) -> bool:
        track = self.tracks.get(run_id)
        return track is not None and track.complete

    def on_event(self, run_id: str, seq: int, kind: str, call_id: str | None) -> bool:
        """Record one event; True when it is the first terminal event of the run to arrive."""
        track = self.tracks.get(run_id)
        if track is None:
            track = self.tracks[run_id] = RunTrack()
        if seq <= track.contiguous or seq in track.pending:
            track.duplicates += 1
            if track.resyncing:
                self.duplicates_tolerated += 1
            else:
                self.duplicates += 1
                self._report(Kind.DUPLICATE, f"run {run_id}: seq {seq} ({kind}) arrived twice")
            return False
        if seq < track.max_seq and not track.resyncing:
            self._report(
                Kind.OUT_OF_ORDER,
                f"run {run_id}: seq {seq} ({kind}) arrived after seq {track.max_seq}",
            )
        if seq > track.max_seq:
            track.max_seq = seq
        first_terminal = kind in TERMINAL and not track.terminal_arrived
        if first_terminal:
            track.terminal_arrived, track.terminal_arrived_type = seq, kind
        if seq == track.contiguous + 1:
            self._apply(run_id, track, seq, kind, call_id)
            pending = track.pending
            while pending and track.contiguous + 1 in pending:
                nxt = track.contiguous + 1
                k, c = pending.pop(nxt)
                self._apply(run_id, track, nxt, k, c)
        else:
            track.pending[seq] = (kind, call_id)
        return first_terminal

    def _apply(
        self, run_id: str, track: RunTrack, seq: int, kind: str, call_id: str | None
    ) -> None:
        """One event in seq order: first, terminal-last and tool pairing rules."""
        track.contiguous = seq
        track.applied += 1
        if seq == 1 and kind != "agent_started" and kind not in TERMINAL:
            # A run cancelled while queued has only its terminal event; that one is fine.
            self._report(Kind.FIRST_NOT_STARTED, f"run {run_id}: seq 1 is {kind}")
        if track.terminal_seq is not None:
            self._report(
                Kind.AFTER_TERMINAL,
                f"run {run_id}: seq {seq} ({kind}) after the terminal "
                f"{track.terminal_type} at seq {track.terminal_seq}",
            )
            return
        if kind in TERMINAL:
            track.terminal_seq, track.terminal_type = seq, kind
        elif kind == "tool_executing" and call_id is not None:
            if call_id in track.open_calls:
                self._report(Kind.UNPAIRED_TOOL, f"run {run_id}: call {call_id} executing twice")
            track.open_calls.add(call_id)
        elif kind == "tool_completed" and call_id is not None:
            if call_id in track.open_calls:
                track.open_calls.discard(call_id)
            else:
                self._report(
                    Kind.UNPAIRED_TOOL,
                    f"run {run_id}: tool_completed of call {call_id} without tool_executing",
                )

    # -- at the end ---------------------------------------------------------------------------

    def finish(self, own_runs: Collection[str], expected_events: int | None) -> set[str]:
        """Report what is missing of ``own_runs``; returns the run ids that are not theirs."""
        for run_id in own_runs:
            track = self.tracks.get(run_id)
            if track is None or (track.applied == 0 and not track.pending):
                self._report(Kind.MISSING_RUN, f"run {run_id}: no event received")
                continue
            if not track.complete:
                missing = _missing(track)
                ending = (
                    f"terminal {track.terminal_arrived_type} at seq {track.terminal_arrived}"
                    if track.terminal_arrived
                    else "no terminal event"
                )
                self._report(
                    Kind.MISSING_EVENTS,
                    f"run {run_id}: received seq 1..{track.contiguous}"
                    f"{' and ' + _ranges(sorted(track.pending)) if track.pending else ''}"
                    f"; missing {missing}; {ending}",
                )
                continue
            if track.open_calls:
                self._report(
                    Kind.UNPAIRED_TOOL,
                    f"run {run_id}: tool calls never completed: {sorted(track.open_calls)}",
                )
            if (
                expected_events is not None
                and track.terminal_type == "agent_completed"
                and track.applied != expected_events
            ):
                self._report(
                    Kind.EVENT_COUNT,
                    f"run {run_id}: {track.applied} events, expected {expected_events}",
                )
        return {run_id for run_id in self.tracks if run_id not in own_runs}

    def connection_lost(self, runs: int) -> None:
        self._report(
            Kind.CONNECTION_LOST,
            f"the connection closed and could not be resumed; {runs} run(s) not verified",
        )


def _missing(track: RunTrack) -> str:
    gaps: list[int] = []
    expected_end = track.terminal_arrived or track.max_seq
    for seq in range(track.contiguous + 1, expected_end + 1):
        if seq not in track.pending:
            gaps.append(seq)
    if not gaps:
        return f"everything after seq {expected_end}"
    return "seq " + _ranges(gaps)


def _ranges(seqs: list[int]) -> str:
    """``[1, 2, 3, 7]`` → ``"1-3, 7"`` (at most a few groups)."""
    groups: list[str] = []
    start = prev = seqs[0]
    for s in [*seqs[1:], None]:
        if s is not None and s == prev + 1:
            prev = s
            continue
        groups.append(str(start) if start == prev else f"{start}-{prev}")
        if s is not None:
            start = prev = s
    return ", ".join(groups[:6]) + (" …" if len(groups) > 6 else "")
