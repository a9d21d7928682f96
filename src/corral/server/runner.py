"""``corral serve``: uvicorn with corral's socket settings and graceful shutdown."""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any

import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from corral import logs
from corral.core.registry import AgentRegistry
from corral.heap import freeze_startup_heap
from corral.server.app import create_app
from corral.server.edge import KEEP_ALIVE_TIMEOUT_S, edge_protocols
from corral.settings import Settings

log = logging.getLogger("corral.server")


class CorralServer(uvicorn.Server):
    """On SIGTERM/SIGINT: close sockets with 1001 and let runs finish, then stop uvicorn."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        app = self.config.loaded_app
        runtime = getattr(getattr(_unwrap(app), "state", None), "runtime", None)
        if runtime is not None:
            log.info("shutting down: closing sockets, letting runs finish")
            await runtime.begin_shutdown()
        await super().shutdown(sockets)
        # uvicorn re-raises the captured signal on exit; a completed graceful shutdown is a
        # clean exit, so corral exits 0 (systemd and supervisors read that as "stopped").
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list):
            captured.clear()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            freeze_startup_heap()
            for server in self.servers:
                for sock in server.sockets:
                    host, port = sock.getsockname()[:2]
                    # One machine-readable line: tests and scripts read the port from it.
                    print(f"corral listening on http://{_fmt(host)}:{port}", flush=True)


def _fmt(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _unwrap(app: object) -> object:
    while hasattr(app, "app") and not hasattr(app, "state"):
        app = app.app
    return app


def bounded_websocket_protocol(max_buffered_bytes: int) -> type[WebSocketsSansIOProtocol]:
    """uvicorn's WebSocket protocol with a small kernel send buffer and a hard drop.

    The contract's bound on what a slow client costs covers bytes written to the socket but
    not yet read; the kernel's send buffer would otherwise hold megabytes unseen by the
    connection's own queue. And a peer that stops answering pings is aborted, not closed
    gracefully: a graceful close never completes against a peer that does not read.
    """
    sndbuf = max(16 * 1024, min(max_buffered_bytes // 4, 256 * 1024))

    class BoundedWebSocketProtocol(WebSocketsSansIOProtocol):
        def connection_made(self, transport: Any) -> None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            super().connection_made(transport)

        def keepalive_timeout(self) -> None:
            super().keepalive_timeout()
            self.transport.abort()

    return BoundedWebSocketProtocol


def uvicorn_config(settings: Settings, app: Any) -> uvicorn.Config:
    """uvicorn settings for one corral server, with protocols and connection counts of its own."""
    protocols = edge_protocols(settings, bounded_websocket_protocol(settings.ws_max_buffered_bytes))
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        http=protocols.http,
        ws=protocols.websocket,
        timeout_keep_alive=KEEP_ALIVE_TIMEOUT_S,
        ws_max_size=settings.ws_max_message_bytes,
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_interval_s,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 5,
        log_config=None,
        access_log=False,
        server_header=False,
        # The peer address is what it is: X-Forwarded-For is not believed (a loopback client
        # could forge it), and the middleware it needs costs every request a layer.
        proxy_headers=False,
    )


def run_server(settings: Settings, registry: AgentRegistry | None = None) -> None:
    logs.configure(settings.log_level, settings.log_json)
    app = create_app(settings, registry)
    server = CorralServer(uvicorn_config(settings, app))
    server.run()
    if not server.started:
        sys.exit(1)
