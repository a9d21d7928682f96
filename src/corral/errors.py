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
    │   └── QueueFullError          the user's queue is full (HTTP 429)
    ├── RunError                    raised inside an agent to end its run
    │   ├── AgentFailed             the agent gave up: ``agent_error`` of its ``error_type``
    │   ├── ToolCallError           a tool call ended in ``error`` or ``timeout``
    │   └── SecretUnavailable       the per-user secret resolver failed (``secret_unavailable``)
    ├── OwnershipError              an object was handed to a component of another user
    ├── IllegalTransition           a lifecycle moved from a state it cannot leave that way
    ├── StoreError                  the database refused or is unreachable
    │   └── FencedError             a writer lost ownership of a run (stale attempt)
    └── LLMError                    a model endpoint failed (corral.llm.errors: unavailable,
                                    rate limited, server error, rejected, protocol, limits)

Each exception says what happened, what was expected, and what to do, and keeps the facts in
attributes so callers never parse messages.
"""

from __future__ import annotations


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


class QueueFullError(AdmissionError):
    """The user already has as many queued runs as allowed; retry after ``retry_after`` s."""

    def __init__(self, user_id: str, limit: int, retry_after: int = 1) -> None:
        self.user_id = user_id
        self.limit = limit
        self.retry_after = retry_after
        super().__init__(
            f"you already have {limit} runs waiting; wait for some to finish and retry"
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


class FencedError(StoreError):
    """A writer tried to append to a run it no longer owns (its attempt number is stale)."""

    def __init__(self, run_id: str, attempt: int) -> None:
        self.run_id = run_id
        self.attempt = attempt
        super().__init__(f"attempt {attempt} of run {run_id} lost its lease; nothing was written")
