"""A waiting run's question and answer in the store (contract §9), for every topology.

While a run waits, its row holds the open question (``input_request``, written with the
``input_requested`` event) and, once a user answered, the answer (``input_answer``). Any API
node accepts an answer by storing it (:class:`AcceptAnswer`, one transaction that also checks
the run still waits for exactly that request); the process executing the run reads it from
here (:func:`read_answer`), however the hint that woke it travelled. A question whose timeout
passed is closed (:class:`CloseInputRequest`) in a transaction that an answer cannot race.
A run that goes on takes a running slot again with :class:`ResumeRun`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from corral.core.events import Event, dumps, loads
from corral.errors import NOT_FOUND_RUN, Conflict, NotFound
from corral.store import statements as S
from corral.store.ops import Op
from corral.store.records import RunRecord
from corral.store.sql import Q, Sql

# Every process that moves runs to ``running`` in a cluster (claims, resumptions) takes this
# PostgreSQL advisory lock, so that per-user counts are read and acted on one at a time.
CLAIM_LOCK = 7_415_202_612

_LOCK = Q("SELECT pg_advisory_xact_lock(:key)")
_INPUT_OF = Q(
    "SELECT status, input_request, input_answer FROM runs "
    "WHERE run_id = :run_id AND user_id = :user_id"
)
# The same, locking the row until the transaction ends (SQLite: its one writer serializes).
_INPUT_OF_LOCKED = Q(
    _INPUT_OF.sqlite,
    pg="SELECT status, input_request, input_answer FROM runs "
    "WHERE run_id = :run_id AND user_id = :user_id FOR UPDATE",
)
_ANSWER_OF = Q("SELECT input_answer FROM runs WHERE run_id = :run_id")
_SET_ANSWER = Q(
    "UPDATE runs SET input_answer = :answer WHERE run_id = :run_id AND status = 'waiting' "
    "AND input_request IS NOT NULL AND input_answer IS NULL"
)
_CLOSE = Q(
    "UPDATE runs SET input_request = NULL WHERE run_id = :run_id AND status = 'waiting' "
    "AND input_request IS NOT NULL AND input_answer IS NULL"
)
_STATUS_ATTEMPT = Q("SELECT status, attempt FROM runs WHERE run_id = :run_id")
_RUNNING_OF_USER = Q("SELECT count(*) FROM runs WHERE user_id = :user_id AND status = 'running'")
_RESUME = Q(
    "UPDATE runs SET status = 'running' WHERE run_id = :run_id AND attempt = :attempt "
    "AND status = 'waiting'"
)

NOT_WAITING = "the run is not waiting for input (it is {status}); only a waiting run is answered"
NOT_OPEN = (
    "request_id is not the run's open input request; answer the request_id of the run's "
    "latest input_requested event"
)
ANSWERED = "this input request was already answered; the run goes on with the first answer"


@dataclass(frozen=True, slots=True)
class OpenInput:
    """What a caller's run waits for: its status, open request (or None) and whether an
    answer to it is already stored."""

    status: str
    request: dict[str, Any] | None
    answered: bool

    def check(self, request_id: str) -> dict[str, Any]:
        """The open request when ``request_id`` may be answered now, else :class:`Conflict`."""
        if self.status != "waiting":
            raise Conflict(NOT_WAITING.format(status=self.status))
        if self.request is None or self.request.get("request_id") != request_id:
            raise Conflict(NOT_OPEN)
        if self.answered:
            raise Conflict(ANSWERED)
        return self.request


def read_open_input(sql: Sql, user_id: str, run_id: str, *, lock: bool = False) -> OpenInput | None:
    """The caller's run's question and answer state; None for a missing run or another's.
    ``lock``: hold the row until the transaction ends (an answer being stored)."""
    row = sql.one(_INPUT_OF_LOCKED if lock else _INPUT_OF, {"run_id": run_id, "user_id": user_id})
    if row is None:
        return None
    status, request, answer = row
    return OpenInput(status, None if request is None else loads(request), answer is not None)


def read_answer(sql: Sql, run_id: str, request_id: str) -> tuple[Any] | None:
    """The stored answer to ``request_id`` as a 1-tuple ``(value,)``, or None (not yet)."""
    raw = sql.value(_ANSWER_OF, {"run_id": run_id})
    if raw is None:
        return None
    doc = loads(raw)
    return (doc["value"],) if doc.get("request_id") == request_id else None


class AcceptAnswer(Op[RunRecord]):
    """Store the caller's answer to their waiting run's open request; returns the run.

    Refusals, before anything is written: :class:`NotFound` for a run that is missing or not
    theirs, :class:`Conflict` for a run not waiting, another request id, or an answered one.
    The caller checked the value against the request's schema.
    """

    __slots__ = ("request_id", "run_id", "user_id", "value")

    def __init__(self, user_id: str, run_id: str, request_id: str, value: Any) -> None:
        self.user_id = user_id
        self.run_id = run_id
        self.request_id = request_id
        self.value = value

    def apply(self, sql: Sql, emitted: list[Event]) -> RunRecord:
        found = read_open_input(sql, self.user_id, self.run_id, lock=True)
        if found is None:
            raise NotFound(NOT_FOUND_RUN)
        found.check(self.request_id)
        answer = dumps({"request_id": self.request_id, "value": self.value}).decode()
        if sql.execute(_SET_ANSWER, {"run_id": self.run_id, "answer": answer}) != 1:
            raise Conflict(ANSWERED)  # unreachable: the row is locked (PostgreSQL) or ours
        row = sql.one(S.GET_RUN, {"run_id": self.run_id, "user_id": self.user_id})
        assert row is not None
        return RunRecord.from_row(row)


class CloseInputRequest(Op[bool]):
    """Close a run's open question whose timeout passed. False when an answer was stored
    first (then the run takes that answer instead)."""

    __slots__ = ("run_id",)

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def apply(self, sql: Sql, emitted: list[Event]) -> bool:
        return sql.execute(_CLOSE, {"run_id": self.run_id}) == 1


Resumed = Literal["resumed", "busy", "gone"]


class ResumeRun(Op[Resumed]):
    """A waiting run takes a running slot again: ``resumed`` (its row says ``running``),
    ``busy`` (its user already has ``per_user`` runs running: try again when one ends) or
    ``gone`` (the run is no longer this attempt's, or no longer waiting).

    ``per_user`` None: admission was decided elsewhere (a single node's scheduler).
    """

    __slots__ = ("attempt", "per_user", "run_id", "user_id")

    def __init__(self, run_id: str, user_id: str, attempt: int, per_user: int | None) -> None:
        self.run_id = run_id
        self.user_id = user_id
        self.attempt = attempt
        self.per_user = per_user

    def apply(self, sql: Sql, emitted: list[Event]) -> Resumed:
        if self.per_user is not None and sql.dialect == "postgresql":
            sql.value(_LOCK, {"key": CLAIM_LOCK})
        row = sql.one(_STATUS_ATTEMPT, {"run_id": self.run_id})
        if row is None or row[0] != "waiting" or int(row[1]) != self.attempt:
            return "gone"
        if self.per_user is not None:
            running = sql.value(_RUNNING_OF_USER, {"user_id": self.user_id})
            if int(running) >= self.per_user:
                return "busy"
        sql.execute(_RESUME, {"run_id": self.run_id, "attempt": self.attempt})
        return "resumed"
