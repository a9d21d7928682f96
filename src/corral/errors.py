"""Every error corral raises, in one tree under :class:`CorralError`.

::

    CorralError
    ├── ConfigurationError          settings or wiring that cannot work
    ├── ContextError                an invalid field of a per-request object (carries ``field``):
    │   │                           UserExecutionContext, Identity, AuthRequest
    │   └── ContextDepthError       a child context past the depth limit
    ├── AuthRefused                 a credential was refused (HTTP 401); ``kind`` says why
    ├── AuthUnavailable             the authenticator cannot decide now (HTTP 503 ``unavailable``)
    ├── RegistryError               registering twice, or after the registry froze
    │   └── UnknownAgentError / UnknownToolError
    ├── AdmissionError              a run could not be admitted
    │   └── QueueFullError          the user's queue is full (also a RequestError: 429)
    ├── RequestError                what a caller asked for is refused; each front door maps
    │   │                           the subclass to its code through one table
    │   │                           (corral.server.errors)
    │   ├── NotFound                no such run, thread or agent — or not the caller's
    │   ├── Conflict                the resource's state does not allow it (finished, busy...)
    │   ├── InvalidRequest          a bad field; ``details`` names each one
    │   ├── PayloadTooLarge         a body over the limit
    │   ├── Unauthorized            no identity, or a token that is not acceptable
    │   ├── Forbidden               a request this server refuses to anyone (Host, dev tokens)
    │   ├── QueueFullError          (see AdmissionError)
    │   └── ServiceUnavailable      starting, draining, or a dependency is away; retry later
    ├── RunError                    raised inside an agent to end its run
    │   ├── AgentFailed             the agent gave up: ``agent_error`` of its ``error_type``
    │   ├── ToolCallError           a tool call ended in ``error`` or ``timeout``
    │   ├── InputTimeout            ``ctx.ask`` got no answer in time (``input_timeout``)
    │   └── SecretUnavailable       the per-user secret resolver failed (``secret_unavailable``)
    ├── OwnershipError              an object was handed to a component of another user
    ├── IllegalTransition           a lifecycle moved from a state it cannot leave that way
    ├── StoreError                  the database refused an operation
    │   ├── StoreUnavailable        the database cannot be reached (also ServiceUnavailable)
    │   └── FencedError             a writer lost ownership of a run (stale attempt)
    ├── LLMError                    a model endpoint failed (corral.llm.errors: unavailable,
    │                               rate limited, server error, rejected, protocol, limits)
    ├── CorralAPIError              corral.client: the server refused a request (its status,
    │                               code, message, details), or could not be reached
    └── CheckPathError              ``corral check`` was given a path that does not exist

Each exception says what happened, what was expected, and what to do, and keeps the facts in
attributes so callers never parse messages.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

NOT_FOUND_RUN = "no such run: check the run id (runs are visible only to the user who started them)"
NOT_FOUND_THREAD = (
    "no such thread: start a run without thread_id to begin one, or use a thread id of yours"
)


class CorralError(Exception):
    """Root of every corral error."""


class ConfigurationError(CorralError):
    """Settings or wiring that cannot work; the message names the setting to change."""


class ContextError(CorralError, ValueError):
    """A field of a per-request object (a :class:`~corral.UserExecutionContext`, an
    :class:`~corral.Identity`, an :class:`~corral.AuthRequest`) is not acceptable."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"invalid {field}: {reason}")


class ContextDepthError(ContextError):
    """A child context would be deeper than the limit (runaway sub-agent recursion)."""


class AuthRefused(CorralError):
    """A credential was refused: the front door answers 401 with this message.

    ``kind`` is one word a program can branch on (``malformed``, ``algorithm``, ``signature``,
    ``expired``, ``not_yet_valid``, ``claims``, ``issuer``, ``audience``, ``unknown_key``,
    ``user``, ``refused``); the message says why and what to do, and never holds the token, a
    key or a secret.
    """

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        self.message = message
        super().__init__(message)


class AuthUnavailable(CorralError):
    """The authenticator cannot decide now (a key set that cannot be fetched, a failing hook).

    Never a sign-in and never a 401: the front door answers 503 ``unavailable`` (an error and
    close code 1013 on a socket), and the client retries.
    """

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class RegistryError(CorralError):
    """An agent or tool cannot be registered (duplicate name, or the registry is frozen)."""


class UnknownAgentError(RegistryError, LookupError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no agent named {name!r} is registered")


class UnknownToolError(RegistryError, LookupError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no tool named {name!r} is registered")


class AdmissionError(CorralError):
    """A run could not be admitted."""


class RequestError(CorralError):
    """A caller's request that corral refuses. ``message`` is for the caller: it says what to
    do; nothing in it belongs to another user."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class NotFound(RequestError):
    """No such run, thread or agent — or one that is not the caller's (indistinguishable)."""


class Conflict(RequestError):
    """The resource's state does not allow the request (a finished run, a busy thread...)."""


class InvalidRequest(RequestError):
    """A request with bad fields; ``details`` has one ``{"field", "message", "type"}`` each."""

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        self.details = details
        super().__init__(message)

    @classmethod
    def from_validation(
        cls, exc: ValidationError, prefix: tuple[str | int, ...] = (), what: str = "the request"
    ) -> InvalidRequest:
        """One detail per field pydantic refused, named from ``prefix`` (``input.steps``)."""
        details = details_from(exc, prefix)
        fields = ", ".join(d["field"] for d in details[:5])
        return cls(f"{what} is not valid: check {fields}", details)


def details_from(exc: ValidationError, prefix: tuple[str | int, ...] = ()) -> list[dict[str, Any]]:
    """One entry per bad field: ``{"field": "input.steps", "message": ..., "type": ...}``."""
    out = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = (*prefix, *err["loc"])
        out.append(
            {
                "field": ".".join(str(p) for p in loc) or "(body)",
                "message": err["msg"],
                "type": err["type"],
            }
        )
    return out


class PayloadTooLarge(RequestError):
    """A body over the size limit."""


class Unauthorized(RequestError):
    """No identity, or a credential that is not acceptable."""


class Forbidden(RequestError):
    """A request this server refuses whoever asks (a foreign ``Host``, dev tokens)."""


class ServiceUnavailable(RequestError):
    """Corral cannot answer now (starting, draining, a dependency away); retry later."""

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class QueueFullError(AdmissionError, RequestError):
    """The user already has as many queued runs as allowed; retry after ``retry_after`` s."""

    def __init__(self, user_id: str, limit: int, retry_after: int = 1) -> None:
        self.user_id = user_id
        self.limit = limit
        self.retry_after = retry_after
        RequestError.__init__(
            self, f"you already have {limit} runs waiting; wait for some to finish and retry"
        )


class RunError(CorralError):
    """Raised inside an agent to end its run with a typed ``agent_error``."""

    error_type = "agent_error"


class AgentFailed(RunError):
    """The agent gave up; the run ends with ``agent_error`` of type ``error_type``."""

    def __init__(self, message: str, error_type: str = "agent_failed") -> None:
        self.error_type = error_type
        self.message = message
        super().__init__(message)


class ToolCallError(RunError):
    """A tool call ended with status ``error`` or ``timeout``; the event pair is already sent."""

    error_type = "tool_error"

    def __init__(self, tool: str, status: str, message: str) -> None:
        self.tool = tool
        self.status = status
        self.message = message
        super().__init__(f"tool {tool!r} ended with {status}: {message}")


class InputTimeout(RunError):
    """``ctx.ask`` got no answer within its timeout; the question is closed (a later answer is
    refused with 409). An agent may catch it and go on; left uncaught, the run ends with
    ``agent_error`` of type ``input_timeout``."""

    error_type = "input_timeout"

    def __init__(self, request_id: str, timeout_s: float) -> None:
        self.request_id = request_id
        self.timeout_s = timeout_s
        super().__init__(
            f"no answer to input request {request_id} within {timeout_s:g} s; ask again, or "
            "pass a longer timeout_s (default: CORRAL_INPUT_TIMEOUT_S)"
        )


class SecretUnavailable(RunError):
    """The per-user secret resolver (``--secrets``) failed or answered something not a string.

    The message names the secret, never a value; left uncaught, the run ends with
    ``agent_error`` of type ``secret_unavailable``.
    """

    error_type = "secret_unavailable"

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"the secret {name!r} cannot be resolved now: {reason}")


class OwnershipError(CorralError, PermissionError):
    """An object of one user was handed to a component bound to another user."""

    def __init__(self, expected_user: str, got_user: str, what: str) -> None:
        self.expected_user = expected_user
        self.got_user = got_user
        self.what = what
        super().__init__(f"{what} belongs to another user than this component's owner")


class IllegalTransition(CorralError):
    """A lifecycle was asked to move from a state that does not allow it."""

    def __init__(self, what: str, expected: object, got: object) -> None:
        self.expected = expected
        self.got = got
        super().__init__(f"{what}: expected {expected}, got {got}")


class StoreError(CorralError):
    """The database refused an operation or cannot be reached."""


class StoreUnavailable(StoreError, ServiceUnavailable):
    """The database cannot be reached (refused, dropped, timed out); retry shortly."""

    def __init__(self, detail: str = "") -> None:
        self.detail = detail
        ServiceUnavailable.__init__(
            self, "the database is unavailable; retry shortly", retry_after=1
        )


class FencedError(StoreError):
    """A writer tried to append to a run it no longer owns (its attempt number is stale)."""

    def __init__(self, run_id: str, attempt: int) -> None:
        self.run_id = run_id
        self.attempt = attempt
        super().__init__(f"attempt {attempt} of run {run_id} lost its lease; nothing was written")


class CheckPathError(CorralError, FileNotFoundError):
    """A path given to ``corral check`` is neither a file nor a folder."""

    def __init__(self, path: object) -> None:
        self.path = str(path)
        super().__init__(
            f"{self.path}: no such file or folder; give the Python files or folders to check"
        )
