"""``--secrets MODULE:ATTR``: per-user secrets, resolved for the run's :class:`Identity` (§2).

The resolver is the team's ``async def resolve(identity, name) -> str | None``; an agent
reaches it through ``await ctx.secret("NAME")``. Every value it returns must be handed to the
run's :class:`~corral.core.secrets.SecretRedactor` before anything of the run is stored or sent.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Self, cast

from corral.auth.identity import Identity
from corral.auth.loader import load_async_function
from corral.errors import SecretUnavailable

log = logging.getLogger("corral.auth")

SECRETS_SETTING = "--secrets / CORRAL_SECRETS"
RESOLVER_SIGNATURE = "async def resolve(identity: corral.Identity, name: str) -> str | None"
RESOLVE_TIMEOUT_S = 10.0
SECRET_NAME = re.compile(r"[A-Za-z0-9_.:/@-]{1,128}")

ResolveFunction = Callable[[Identity, str], Awaitable[str | None]]


class SecretResolver:
    """Asks the team's resolver for one secret of one user, and keeps its failures typed.

    :meth:`resolve` returns the value or None (the user has no such secret). It raises
    :class:`~corral.errors.SecretUnavailable` — which, left uncaught in an agent, ends the run
    with ``agent_error`` of type ``secret_unavailable`` — for a name that is not 1–128 of
    ``A-Za-z0-9_.:/@-``, and, with a log line naming the secret but never a value, when the
    resolver raises, takes longer than ``timeout_s``, or answers something not a str or None.
    Cancelling :meth:`resolve` cancels the resolver call; concurrent calls are independent.
    """

    def __init__(
        self, function: ResolveFunction, *, name: str = "", timeout_s: float = RESOLVE_TIMEOUT_S
    ) -> None:
        self._function = function
        self.name = name or getattr(function, "__qualname__", repr(function))
        self._timeout = timeout_s

    @classmethod
    def from_spec(cls, spec: str, *, timeout_s: float = RESOLVE_TIMEOUT_S) -> Self:
        """The resolver ``spec`` (``MODULE[:ATTR]``, ATTR defaulting to ``resolve``) names.

        Raises :class:`~corral.errors.ConfigurationError` when it cannot be loaded.
        """
        function = load_async_function(
            spec,
            setting=SECRETS_SETTING,
            default_attr="resolve",
            arity=2,
            signature=RESOLVER_SIGNATURE,
        )
        return cls(cast(ResolveFunction, function), name=spec, timeout_s=timeout_s)

    async def resolve(self, identity: Identity, name: str) -> str | None:
        if not isinstance(name, str) or not SECRET_NAME.fullmatch(name):
            raise SecretUnavailable(
                "?", "a secret name is 1-128 of the characters A-Z a-z 0-9 _ . : / @ -"
            )
        timeout = asyncio.timeout(self._timeout)
        try:
            async with timeout:
                value = await self._function(identity, name)
        except SecretUnavailable:
            raise
        except Exception as exc:
            if isinstance(exc, TimeoutError) and timeout.expired():
                log.error(
                    "the secrets resolver %s did not answer within %g s for %r",
                    self.name,
                    self._timeout,
                    name,
                )
                reason = "the resolver did not answer in time"
            else:
                log.exception("the secrets resolver %s raised for %r", self.name, name)
                reason = "the resolver failed"
            raise SecretUnavailable(name, reason) from None
        if value is None or isinstance(value, str):
            return value
        log.error(
            "the secrets resolver %s answered a %s for %r, not a str or None",
            self.name,
            type(value).__name__,
            name,
        )
        raise SecretUnavailable(name, "the resolver answered something that is not a string")
