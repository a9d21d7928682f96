"""What one loadtest does: how many users, connections and runs, which input, which limits."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from corral.errors import ConfigurationError

ECHO = "echo"
# Hard limits of the contract's echo agent (§6); checked here so a typo fails before the
# first connection instead of as N thousand 422 responses.
ECHO_MAX_STEPS = 100
ECHO_MAX_DELAY_MS = 10_000


@dataclass(frozen=True, slots=True)
class LoadtestConfig:
    """One loadtest invocation. Immutable; validated on construction.

    ``users`` simulated users, each holding ``connections_per_user`` WebSocket connections and
    starting ``runs_per_user`` runs (alternately over HTTP and WebSocket), at most
    ``in_flight`` at a time. Users start evenly spread over ``ramp_s`` seconds.
    ``timeout_s`` bounds every single wait (connect, HTTP request, run acceptance, run
    completion), so a loadtest against a stuck server ends instead of hanging.
    """

    url: str
    users: int = 20
    runs_per_user: int = 2
    connections_per_user: int = 2
    agent: str = ECHO
    steps: int = 3
    delay_ms: int = 0
    ramp_s: float = 0.0
    in_flight: int = 1
    token_secret: str | None = None
    token_command: str | None = None
    secret_file: Path = Path(".corral/secret")
    server_pid: int | None = None
    timeout_s: float = 60.0
    connect_concurrency: int = 200
    http_connections: int = 256
    reconnect_attempts: int = 3
    fail_on_errors: bool = False
    user_prefix: str = ""
    # Chaos: every connection drops its own socket (no close handshake, like a lost network)
    # about this often, then reconnects and resumes; 0 never. The soak of a stream that must
    # stay whole through disconnects.
    drop_every_s: float = 0.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(
                f"--url must be an http:// or https:// server address, got {self.url!r}"
            )
        for name in ("users", "runs_per_user", "connections_per_user", "in_flight"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"--{_flag(name)} must be at least 1")
        for name in ("connect_concurrency", "http_connections"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"--{_flag(name)} must be at least 1")
        if self.reconnect_attempts < 0:
            raise ConfigurationError("--reconnect-attempts must be 0 or more")
        if self.ramp_s < 0:
            raise ConfigurationError("--ramp-s must be 0 or more")
        if self.drop_every_s < 0:
            raise ConfigurationError("--drop-every-s must be 0 (never) or more")
        if self.timeout_s <= 0:
            raise ConfigurationError("--timeout-s must be more than 0")
        if self.agent == ECHO:
            if not 1 <= self.steps <= ECHO_MAX_STEPS:
                raise ConfigurationError(f"--steps must be 1..{ECHO_MAX_STEPS} for echo")
            if not 0 <= self.delay_ms <= ECHO_MAX_DELAY_MS:
                raise ConfigurationError(f"--delay-ms must be 0..{ECHO_MAX_DELAY_MS} for echo")
        if self.token_secret and self.token_command:
            raise ConfigurationError("give --token-secret or --token-command, not both")
        if self.token_command is not None and "{user}" not in self.token_command:
            raise ConfigurationError(
                "--token-command must contain {user}, e.g. 'corral token {user}'"
            )
        if self.server_pid is not None and self.server_pid < 1:
            raise ConfigurationError("--server-pid must be a process id")

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/")

    @property
    def ws_url(self) -> str:
        base = self.base_url
        scheme = "wss" if base.startswith("https") else "ws"
        return scheme + base[base.index(":") :] + "/v1/ws"

    @property
    def total_runs(self) -> int:
        return self.users * self.runs_per_user

    @property
    def expected_events(self) -> int | None:
        """Events per run when the agent's event count is known (echo: 1 + 3*steps + 1)."""
        return 2 + 3 * self.steps if self.agent == ECHO else None

    def run_input(self, canary: str, index: int) -> dict[str, object]:
        """The input of a user's ``index``-th run; it carries the user's canary."""
        message = f"{canary} run {index}"
        if self.agent == ECHO:
            return {"message": message, "steps": self.steps, "delay_ms": self.delay_ms}
        return {"message": message}

    def user_ids(self) -> list[str]:
        """``lt-<invocation>-<n>``: unique per invocation, so reruns never share a user."""
        prefix = self.user_prefix or f"lt-{secrets.token_hex(4)}"
        return [f"{prefix}-{n}" for n in range(self.users)]

    def public(self) -> dict[str, object]:
        """The settings for a report: everything except the secret."""
        return {
            "url": self.url,
            "users": self.users,
            "runs_per_user": self.runs_per_user,
            "connections_per_user": self.connections_per_user,
            "agent": self.agent,
            "steps": self.steps,
            "delay_ms": self.delay_ms,
            "ramp_s": self.ramp_s,
            "in_flight": self.in_flight,
            "token_source": "command" if self.token_command else "secret",
            "server_pid": self.server_pid,
            "timeout_s": self.timeout_s,
        }


def _flag(name: str) -> str:
    return name.replace("_", "-")
