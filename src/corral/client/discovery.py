"""Which runs a reconnecting session must resume that its socket cannot tell it about.

A socket delivers the events published while it is open. A run that started — and perhaps ended
— while no socket was open, or that was queued (no events yet) when the session opened, is found
over HTTP: :class:`RunFinder` lists the runs created since its last look (``GET /v1/runs``,
newest first, down to a mark), and once the runs unfinished when the session opened.
"""

from __future__ import annotations

from typing import cast

from corral.client.errors import CorralAPIError
from corral.client.transport import Http
from corral.client.types import Run

UNFINISHED = ("queued", "running", "waiting")
PAGE = 200


class RunFinder:
    """The runs a session has not seen yet. One per session; one look at a time.

    The mark is the ``created_at`` of the newest run at the last look that succeeded; a look
    that fails (or is cancelled with its socket) leaves it, so the next one covers the same
    span again — a run is never skipped, at worst listed twice.
    """

    def __init__(self, http: Http, *, unfinished: bool) -> None:
        self._http = http
        self._mark = ""
        self._unfinished_pending = unfinished

    async def start(self) -> None:
        """Set the mark to now (the newest run): runs made from here on are the session's."""
        self._mark = await self._newest()

    async def look(self) -> list[Run]:
        """The runs created since the mark (and, the first time, those unfinished when the
        session opened), newest first; the mark moves when the look succeeds. Raises
        :class:`CorralAPIError` when the server cannot be asked."""
        mark = await self._newest()
        found: list[Run] = []
        if self._unfinished_pending:
            for status in UNFINISHED:
                found += await self._all(status=status)
        found += await self._all(since=self._mark)
        self._unfinished_pending = False
        self._mark = max(mark, self._mark)
        return found

    async def _newest(self) -> str:
        page = await self._http.request("GET", "/v1/runs", params={"limit": 1}, retry=True)
        runs = cast(list[Run], page["runs"])
        return runs[0]["created_at"] if runs else ""

    async def _all(self, *, status: str | None = None, since: str | None = None) -> list[Run]:
        """The caller's runs with ``status``, or created at or after ``since``, newest first."""
        found: list[Run] = []
        params: dict[str, str | int] = {"limit": PAGE}
        if status is not None:
            params["status"] = status
        while True:
            try:
                page = await self._http.request("GET", "/v1/runs", params=params, retry=True)
            except CorralAPIError as exc:
                if exc.code == "validation_error" and status is not None:
                    return found  # a server that does not know this status
                raise
            for run in page["runs"]:
                if since is not None and run["created_at"] < since:
                    return found
                found.append(run)
            if not page.get("next_cursor"):
                return found
            params["cursor"] = page["next_cursor"]
