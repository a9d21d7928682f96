"""A real cluster for tests: PostgreSQL, a private Redis, API nodes and workers as processes."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from support import ServerProcess, spawn, spawn_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of this test's own on a free port, so it can be restarted."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):  # bounded wait for the port to accept
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.1):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("redis-server exited at start") from None
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class Cluster:
    database_url: str
    redis_url: str
    secret: str
    data_dir: Path
    redis: PrivateRedis
    nodes: list[ServerProcess] = field(default_factory=list)
    workers: list[ServerProcess] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def _env(self, extra: dict[str, str]) -> dict[str, str]:
        return {
            "CORRAL_REDIS_URL": self.redis_url,
            "CORRAL_JWT_SECRET": self.secret,
            **self.env,
            **extra,
        }

    async def add_node(self, *args: str, **env: str) -> ServerProcess:
        node = await asyncio.to_thread(
            spawn_server, self.data_dir, self.database_url, *args, **self._env(env)
        )
        self.nodes.append(node)
        return node

    async def add_worker(self, *args: str, **env: str) -> ServerProcess:
        """``corral worker ARGS`` (``--agents MODULE``...) as a child process, once ready."""
        full = {"CORRAL_DATABASE_URL": self.database_url, **self._env(env)}
        proc, _line, output = await asyncio.to_thread(
            spawn, ["worker", *args], "corral worker ", **full
        )
        worker = ServerProcess(proc, "", self.data_dir, self.secret, output)
        self.workers.append(worker)
        return worker

    def token(self, user: str) -> str:
        from corral.server.auth import issue_token

        return issue_token(self.secret, user)

    def client(self, node: ServerProcess, user: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=node.url, headers={"Authorization": f"Bearer {self.token(user)}"}, timeout=30
        )


def user(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class TcpProxy:
    """A loopback TCP proxy in the test's loop, to make a real server unreachable and back."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Refuse new connections and drop every open one."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update({writer, up_writer})

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()
                self._writers.discard(dst)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
