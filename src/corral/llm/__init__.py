"""Talking to a language model: any OpenAI-compatible chat-completions endpoint.

:class:`LLMSettings` reads ``CORRAL_LLM_*``; :class:`ChatModel` streams completions with
retries over one connection pool per app; errors form the :class:`LLMError` branch. The
``chat`` agent in :mod:`corral.agents.chat` is built on these.
"""

from corral.llm.client import ChatModel
from corral.llm.config import LLMSettings, safe_url
from corral.llm.errors import (
    LLMError,
    LLMLimitExceeded,
    LLMProtocolError,
    LLMRateLimited,
    LLMRequestRejected,
    LLMServerError,
    LLMUnavailable,
)
from corral.llm.stream import Completion, CompletionBuilder, SSEDecoder, ToolCall

__all__ = [
    "ChatModel",
    "Completion",
    "CompletionBuilder",
    "LLMError",
    "LLMLimitExceeded",
    "LLMProtocolError",
    "LLMRateLimited",
    "LLMRequestRejected",
    "LLMServerError",
    "LLMSettings",
    "LLMUnavailable",
    "SSEDecoder",
    "ToolCall",
    "safe_url",
]
