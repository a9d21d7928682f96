"""What can go wrong talking to a model server, as one branch of corral's error tree.

::

    CorralError
    └── LLMError                    a model request failed; ``message`` says what to do
        ├── LLMUnavailable          refused, unreachable or timed out (retried first)
        ├── LLMRateLimited          HTTP 429, after the retries (``retry_after``)
        ├── LLMServerError          HTTP 5xx, after the retries, or an error inside the stream
        ├── LLMRequestRejected      another HTTP 4xx: bad key, unknown model, bad request
        ├── LLMProtocolError        a response that is not a chat-completions stream
        └── LLMLimitExceeded        the run's token or model-time budget is spent

Messages name the server by its URL without credentials, never carry the API key, and say
what a person can do about the failure.
"""

from __future__ import annotations

from corral.errors import CorralError


class LLMError(CorralError):
    """A model request failed. ``retryable`` says whether trying again may help."""

    retryable = False

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        self.message = message
        self.status_code = status_code
        super().__init__(message)


class LLMUnavailable(LLMError):
    """The server refused the connection, could not be reached, or did not answer in time."""

    retryable = True


class LLMRateLimited(LLMError):
    """The server answered 429; ``retry_after`` is its ``Retry-After`` in seconds, if any."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message, status_code=429)


class LLMServerError(LLMError):
    """The server answered 5xx (retryable), or reported an error in the middle of a stream."""

    retryable = True


class LLMRequestRejected(LLMError):
    """The server refused the request itself (4xx other than 429); retrying will not help."""


class LLMProtocolError(LLMError):
    """The response was not a well-formed chat-completions event stream."""


class LLMLimitExceeded(LLMError):
    """The run spent its token budget or its model time limit."""
