"""``CORRAL_LLM_*``: which model server to use and the limits every chat run keeps to."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_TOOLS = ("calculator", "search_docs", "convert_units", "current_date")
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant. Answer briefly and plainly. When a tool can work something "
    "out exactly (arithmetic, unit conversions, today's date, the reference documents), call it "
    "and base your answer on its result."
)


class LLMSettings(BaseSettings):
    """An OpenAI-compatible chat-completions endpoint and the per-run limits of ``chat``.

    Every field reads ``CORRAL_LLM_<FIELD>`` from the environment (``CORRAL_LLM_BASE_URL``,
    ``CORRAL_LLM_MAX_TOOL_ROUNDS``...). The API key is a :class:`~pydantic.SecretStr`: it is
    sent in the ``Authorization`` header and nowhere else, and its ``repr`` hides it.
    """

    model_config = SettingsConfigDict(env_prefix="CORRAL_LLM_", extra="ignore", frozen=True)

    base_url: str | None = Field(
        None, description="The API root, ending in /v1 for most servers (http://host:port/v1)."
    )
    api_key: SecretStr | None = Field(None, description="Sent as 'Authorization: Bearer …'.")
    model: str | None = Field(None, description="The model name the server knows.")

    max_tokens: int = Field(512, ge=1, description="Tokens one model response may generate.")
    max_run_tokens: int = Field(
        4096, ge=1, description="Tokens all model responses of one run may generate together."
    )
    model_time_limit_s: float = Field(
        120.0, gt=0, description="Seconds one run may spend waiting for the model, in total."
    )
    max_tool_rounds: int = Field(
        4, ge=0, description="Model responses that may call tools before it must answer."
    )
    retries: int = Field(
        3, ge=0, description="Retries of a request refused, timed out, or answered 429/5xx."
    )
    retry_backoff_s: float = Field(0.5, ge=0, description="First retry delay; doubles after.")
    retry_max_wait_s: float = Field(
        20.0, ge=0, description="Longest wait before one retry, even when Retry-After says more."
    )
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(
        60.0, gt=0, description="Longest silence while waiting for the next part of a response."
    )
    max_connections: int = Field(64, ge=1, description="The app's connection pool size.")
    temperature: float | None = Field(None, ge=0, le=2)
    tools: Annotated[tuple[str, ...], NoDecode] = Field(
        DEFAULT_TOOLS, description="Registry tools offered to the model (comma-separated)."
    )
    tool_choice: str = Field(
        "auto",
        description="'auto', 'none', 'required', or a tool name to force on the first response.",
    )
    history_runs: int = Field(
        20, ge=0, description="Earlier exchanges of the thread sent with each message."
    )
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    delta_interval_s: float = Field(
        0.05, ge=0, description="Text arriving faster than this is sent in one text_delta."
    )

    @field_validator("tools", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        return value

    @field_validator("model")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @property
    def configured(self) -> bool:
        """True when both the endpoint and the model are set: the ``chat`` agent can run."""
        return self.base_url is not None and self.model is not None

    @property
    def display_url(self) -> str:
        """``base_url`` without credentials or query, safe for messages and logs."""
        return safe_url(self.base_url or "")

    @property
    def completions_url(self) -> str:
        return f"{self.base_url}/chat/completions"


def safe_url(url: str) -> str:
    """``url`` without user info, query or fragment: what may appear in a message or log."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
