"""Log a dependency going away once and coming back once, however many retries in between.

A PostgreSQL or Redis outage makes several loops retry every second or faster (the writer, the
claim loop, lease renewals, the reaper, the pub/sub reader); a warning per retry would bury
the one line an operator needs. Each such place holds an :class:`Outage`: the first failure is
a WARNING, the retries are DEBUG, the first success after them is an INFO with how long it was.
"""

from __future__ import annotations

import logging
import time


class Outage:
    """The up/down state of one dependency as one component sees it. Not thread-safe: call it
    from the event loop (or from one thread only)."""

    __slots__ = ("_down", "_log", "_since", "_up")

    def __init__(self, logger: logging.Logger, down: str, up: str) -> None:
        self._log = logger
        self._down = down
        self._up = up
        self._since: float | None = None

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, reason: object) -> None:
        """A try failed: a WARNING the first time, DEBUG while it stays down."""
        if self._since is None:
            self._since = time.monotonic()
            self._log.warning("%s (%s); retrying, logged again once it works", self._down, reason)
        else:
            self._log.debug("%s (%s); still retrying", self._down, reason)

    def succeeded(self) -> None:
        """A try worked: an INFO if it had been down. Costs one comparison otherwise."""
        if self._since is not None:
            lasted = time.monotonic() - self._since
            self._since = None
            self._log.info("%s after %.1f s", self._up, lasted)
