"""``--auth MODULE:ATTR``: a team's own ``async def authenticate(request)`` replaces the JWT check.

The hook is trusted to decide, never to crash the front door: whatever goes wrong in it — it
raises, hangs, or answers something that is not an :class:`Identity` or None — is logged and
becomes :class:`~corral.errors.AuthUnavailable` (503), never a 500 and never a sign-in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self, cast

from corral.auth.identity import Identity
from corral.auth.loader import load_async_function
from corral.auth.request import AuthRequest
from corral.errors import AuthRefused, AuthUnavailable

log = logging.getLogger("corral.auth")

AUTH_SETTING = "--auth / CORRAL_AUTH"
HOOK_SIGNATURE = "async def authenticate(request: corral.AuthRequest) -> corral.Identity | None"
HOOK_TIMEOUT_S = 10.0
_UNAVAILABLE = "sign-in cannot be checked now; retry shortly"

AuthHook = Callable[[AuthRequest], Awaitable[Identity | None]]


def load_auth_hook(spec: str) -> AuthHook:
    """The hook ``spec`` (``MODULE[:ATTR]``, ATTR defaulting to ``authenticate``) names.

    Raises :class:`~corral.errors.ConfigurationError` when it cannot be loaded or has the
    wrong shape (the CLI exits 2).
    """
    function = load_async_function(
        spec, setting=AUTH_SETTING, default_attr="authenticate", arity=1, signature=HOOK_SIGNATURE
    )
    return cast(AuthHook, function)


class HookAuthenticator:
    """An :class:`~corral.auth.Authenticator` that asks a hook.

    A hook may raise :class:`~corral.errors.AuthRefused` itself to refuse with a reason (401)
    or :class:`~corral.errors.AuthUnavailable` (503); anything else it raises, a call longer
    than ``timeout_s``, or an answer that is not an Identity or None is logged and becomes
    AuthUnavailable. Cancelling :meth:`authenticate` cancels the hook call. Safe to call
    concurrently as far as the hook is.
    """

    def __init__(self, hook: AuthHook, *, name: str = "", timeout_s: float = HOOK_TIMEOUT_S):
        self._hook = hook
        self.name = name or getattr(hook, "__qualname__", repr(hook))
        self._timeout = timeout_s

    @classmethod
    def from_spec(cls, spec: str, *, timeout_s: float = HOOK_TIMEOUT_S) -> Self:
        return cls(load_auth_hook(spec), name=spec, timeout_s=timeout_s)

    async def authenticate(self, request: AuthRequest) -> Identity | None:
        timeout = asyncio.timeout(self._timeout)
        try:
            async with timeout:
                result = await self._hook(request)
        except AuthRefused:
            raise
        except AuthUnavailable:
            log.warning(
                "the authentication hook %s cannot decide now (%s request); answering 503",
                self.name,
                request.transport,
            )
            raise
        except Exception as exc:
            if isinstance(exc, TimeoutError) and timeout.expired():
                log.error(
                    "the authentication hook %s did not answer within %g s (%s request); "
                    "answering 503",
                    self.name,
                    self._timeout,
                    request.transport,
                )
            else:
                # The traceback is what the hook's author needs; the request (and so its
                # token) is not in the log line.
                log.exception(
                    "the authentication hook %s raised (%s request); answering 503",
                    self.name,
                    request.transport,
                )
            raise AuthUnavailable(_UNAVAILABLE) from None
        if result is None or isinstance(result, Identity):
            return result
        log.error(
            "the authentication hook %s returned a %s, not a corral.Identity or None; "
            "answering 503",
            self.name,
            type(result).__name__,
        )
        raise AuthUnavailable(_UNAVAILABLE)

    async def aclose(self) -> None:
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
