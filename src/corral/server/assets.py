"""``GET /corral-client.js``: the JavaScript client, served at the app's root beside the page.

The file is a copy of ``clients/js/corral-client.js`` (the npm package's source) kept inside the
package so wheels ship it; ``tests/clients/test_served_script.py`` fails when the two differ.
Served from the app's root, the module's own URL tells a page where the API is, so a page under a
mount prefix needs no configuration (contract §11, §13).
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

CLIENT_SCRIPT = Path(__file__).parent / "static" / "corral-client.js"


async def client_script(request: Request) -> Response:
    """The ES module, revalidated on every load (``no-cache`` with an ETag): a page never runs
    a client older than its server, and an unchanged one costs a 304."""
    headers = {"Cache-Control": "no-cache"}
    # One stat of a small file: FileResponse derives the ETag and Last-Modified from it.
    response = FileResponse(
        CLIENT_SCRIPT,
        media_type="text/javascript",
        headers=headers,
        stat_result=os.stat(CLIENT_SCRIPT),
    )
    etag = response.headers["etag"]
    if etag in {tag.strip() for tag in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers={**headers, "ETag": etag})
    return response


def asset_routes() -> list[Route]:
    """The routes to add to the app's root (new objects for every app)."""
    return [Route("/corral-client.js", client_script, methods=["GET", "HEAD"])]
