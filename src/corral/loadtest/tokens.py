"""Bearer tokens for simulated users: minted from the server's secret, or from a command.

The loadtest is a client: it signs tokens itself with PyJWT exactly as the contract describes
(HS256, ``sub`` = user id, ``iat``, ``exp``) and never imports the server's auth module.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from pathlib import Path
from typing import Protocol

import jwt

from corral.errors import ConfigurationError
from corral.loadtest.config import LoadtestConfig

SECRET_ENV = "CORRAL_JWT_SECRET"
COMMAND_CONCURRENCY = 8


class TokenSource(Protocol):
    """Gives the bearer token of one user id."""

    description: str

    async def token_for(self, user_id: str) -> str: ...


class SecretTokens:
    """HS256 tokens signed with the server's secret, valid for ``ttl_s`` seconds."""

    def __init__(self, secret: str, origin: str, ttl_s: int) -> None:
        self._secret = secret
        self._ttl_s = ttl_s
        self.description = f"minted with the secret from {origin}"

    async def token_for(self, user_id: str) -> str:
        now = int(time.time())
        claims = {"sub": user_id, "iat": now, "exp": now + self._ttl_s}
        return jwt.encode(claims, self._secret, algorithm="HS256")


class CommandTokens:
    """Runs ``template`` (with ``{user}`` replaced) per user and reads the token from stdout.

    At most ``COMMAND_CONCURRENCY`` commands run at once: a thousand Python start-ups in
    parallel would only slow each other down.
    """

    def __init__(self, template: str, timeout_s: float) -> None:
        self._argv = shlex.split(template)
        self._timeout_s = timeout_s
        self._slots = asyncio.Semaphore(COMMAND_CONCURRENCY)
        self.description = f"from the command {template!r}"

    async def token_for(self, user_id: str) -> str:
        argv = [arg.replace("{user}", user_id) for arg in self._argv]
        async with self._slots:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            try:
                out, err = await asyncio.wait_for(proc.communicate(), self._timeout_s)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise ConfigurationError(
                    f"the token command {argv!r} did not finish in {self._timeout_s:g} s"
                ) from None
        token = out.decode().strip()
        if proc.returncode != 0 or not token:
            raise ConfigurationError(
                f"the token command {argv!r} exited {proc.returncode} without a token: "
                f"{err.decode().strip()[:200]}"
            )
        return token.splitlines()[-1]


def token_source(config: LoadtestConfig, ttl_s: int) -> TokenSource:
    """``--token-command``, else ``--token-secret``, else ``CORRAL_JWT_SECRET``, else the
    secret file a local ``corral serve`` keeps (``./.corral/secret``, like ``corral token``).
    """
    if config.token_command:
        return CommandTokens(config.token_command, config.timeout_s)
    if config.token_secret:
        return SecretTokens(config.token_secret, "--token-secret", ttl_s)
    env = os.environ.get(SECRET_ENV)
    if env:
        return SecretTokens(env, SECRET_ENV, ttl_s)
    path = Path(config.secret_file)
    if path.is_file():
        return SecretTokens(path.read_text().strip(), str(path), ttl_s)
    raise ConfigurationError(
        f"no way to get tokens: give --token-secret, set {SECRET_ENV}, give "
        f"--token-command 'corral token {{user}}', or run where {path} exists"
    )
