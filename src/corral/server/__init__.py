"""The ASGI app: HTTP, WebSocket and SSE over the core. ``create_app(settings, registry)``."""

from corral.server.app import Runtime, create_app
from corral.settings import Settings

__all__ = ["Runtime", "Settings", "create_app"]
