"""Settings: options win over ``CORRAL_*`` environment variables, which win over defaults."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from corral.errors import ConfigurationError

DEFAULT_DATA_DIR = ".corral"
MIN_SECRET_BYTES = 32


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Everything a corral process can be told (contract §1); see the README's table."""

    model_config = SettingsConfigDict(env_prefix="CORRAL_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    database_url: str | None = None
    redis_url: str | None = None
    agents: Annotated[list[str], NoDecode] = Field(default_factory=list)
    jwt_secret: str | None = None
    # Bring-your-own identity (contract §2; corral.auth.authenticator_from reads these).
    jwt_public_key: Path | None = None
    jwt_jwks_url: str | None = None
    jwt_algorithms: Annotated[list[str], NoDecode] = Field(default_factory=list)
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_user_claim: str = "sub"
    # The least time between two fetches of the JWKS for unknown kids (contract §2: 30 s);
    # internal, so tests can watch a rotation without waiting half a minute.
    jwt_jwks_refetch_s: float = Field(30.0, gt=0)
    auth: str | None = None  # MODULE:ATTR of an authentication hook
    secrets: str | None = None  # MODULE:ATTR of a per-user secrets resolver
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # The server's own names (``host`` or ``host:port``); empty: any Host (contract §3).
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    metrics_token: SecretStr | None = None  # when set, GET /metrics needs it as a bearer token
    max_running_per_user: int = Field(4, ge=1)
    max_queued_per_user: int = Field(100, ge=0)
    max_running_total: int = Field(256, ge=1)
    max_connections_per_user: int = Field(10, ge=1)
    max_connections_per_ip: int = Field(256, ge=0)  # 0: no limit (behind a trusted proxy)
    # A connection must send a complete request head (or WebSocket upgrade) this soon after
    # it opens or after its previous response; internal, so tests can use a shorter one.
    request_timeout_s: float = Field(10.0, gt=0)
    run_timeout_s: float = Field(300.0, gt=0)
    tool_timeout_s: float = Field(60.0, gt=0)
    input_timeout_s: float = Field(3600.0, gt=0)  # ctx.ask's default wait for an answer
    # Threads with no run for this many days are deleted with their runs and events (None:
    # keep everything); the sweep runs every retention_sweep_s on API nodes.
    retention_days: float | None = Field(None, gt=0)
    retention_sweep_s: float = Field(3600.0, gt=0)
    max_body_bytes: int = 1024 * 1024
    ws_max_message_bytes: int = 64 * 1024
    ws_max_buffered_bytes: int = 2 * 1024 * 1024
    ws_ping_interval_s: float = 20.0
    ws_auth_timeout_s: float = 10.0
    shutdown_grace_s: float = 10.0
    dev_tokens: bool | None = None  # None: only when bound to a loopback address
    executor: bool = True
    lease_s: float = Field(10.0, gt=0)
    log_json: bool = False
    log_level: str = "INFO"

    @field_validator("agents", "allowed_origins", "allowed_hosts", "jwt_algorithms", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split(value)

    @field_validator(
        "jwt_public_key",
        "jwt_jwks_url",
        "jwt_issuer",
        "jwt_audience",
        "auth",
        "secrets",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # CORRAL_JWT_PUBLIC_KEY= (set but empty) means "not set", not the current folder.
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'corral.db'}"

    @property
    def is_loopback(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")

    @property
    def dev_tokens_enabled(self) -> bool:
        return self.is_loopback if self.dev_tokens is None else self.dev_tokens

    def summary(self) -> dict[str, object]:
        """What a start-up log line shows: where the data is and the limits, never a secret
        (passwords in URLs become ``***``; secrets and keys are only said to be set)."""
        if self.auth:
            identity = f"hook {self.auth}"
        elif self.jwt_jwks_url:
            identity = f"JWT (JWKS {hide_password(self.jwt_jwks_url)})"
        elif self.jwt_public_key:
            identity = f"JWT (public key {self.jwt_public_key})"
        else:
            identity = "JWT (HS256 secret)"
        return {
            "database": hide_password(self.resolved_database_url),
            "redis": hide_password(self.redis_url) if self.redis_url else None,
            "agents": ",".join(self.agents) or "built-in",
            "identity": identity,
            "secrets": self.secrets,
            "executor": self.executor,
            "max_running_per_user": self.max_running_per_user,
            "max_queued_per_user": self.max_queued_per_user,
            "max_running_total": self.max_running_total,
            "run_timeout_s": self.run_timeout_s,
            "allowed_hosts": ",".join(self.allowed_hosts) or None,
            "allowed_origins": ",".join(self.allowed_origins) or None,
            "metrics_token": "set" if self.metrics_token is not None else None,
            "log_json": self.log_json,
        }


def hide_password(url: str) -> str:
    """``url`` with the password of its user part, if any, replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "(unparsable URL)"
    if not password:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def load_secret(settings: Settings) -> str:
    """The JWT secret: ``CORRAL_JWT_SECRET``, else ``<data_dir>/secret`` (made once, mode 0600)."""
    if settings.jwt_secret:
        if len(settings.jwt_secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigurationError(
                f"CORRAL_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes long "
                "(HS256 keys shorter than the hash are weak); try `openssl rand -hex 32`"
            )
        return settings.jwt_secret
    path = settings.data_dir / "secret"
    if path.exists():
        secret = path.read_text().strip()
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigurationError(f"{path} holds a secret shorter than {MIN_SECRET_BYTES} bytes")
        return secret
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text().strip()
    try:
        os.write(fd, secret.encode())
    finally:
        os.close(fd)
    return secret
