"""Host, Origin and the metrics token: a DNS-rebinding page gets nothing from a loopback
server, CORRAL_ALLOWED_HOSTS names the server, CORRAL_METRICS_TOKEN guards /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
import websockets
from fastapi import FastAPI

from conftest import LiveServer, StartServer, _TestServer
from corral.errors import ConfigurationError
from corral.server.app import create_app
from corral.server.hosts import HostName, HostPolicy, is_loopback_name, parse_host
from corral.server.runner import uvicorn_config
from corral.settings import Settings
from support_sockets import host_of, raw, upgrade_head


@pytest.fixture
async def database_url(sqlite_url: str) -> str:
    """Host checks never reach the store: SQLite only."""
    return sqlite_url


async def upgrade_status(server_url: str, host: str, *headers: str) -> int:
    """The status a raw WebSocket upgrade naming ``host`` gets (101 when accepted)."""
    async with raw(server_url) as conn:
        await conn.send(upgrade_head(host=host, headers=headers))
        return (await conn.read_response()).status


def forbidden(response: httpx.Response) -> bool:
    return response.status_code == 403 and response.json()["error"]["code"] == "forbidden"


# -- names, pure --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Example.COM:8000", HostName("example.com", 8000)),
        ("example.com", HostName("example.com")),
        ("[::1]:8000", HostName("::1", 8000)),
        ("[::1]", HostName("::1")),
        ("localhost.", HostName("localhost")),
        ("::1", None),  # an IPv6 literal needs brackets
        ("http://example.com", None),
        ("example.com/path", None),
        ("user@example.com", None),
        ("example.com:http", None),
        ("example.com:70000", None),
        ("", None),
    ],
)
def test_host_values_parse_to_a_name_and_port_or_nothing(
    value: str, expected: HostName | None
) -> None:
    """`Host` values and CORRAL_ALLOWED_HOSTS entries: name and optional port, else None."""
    assert parse_host(value) == expected


@pytest.mark.parametrize(
    ("value", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.1:8000", True),
        ("localhost:1234", True),
        ("[::1]:8000", True),
        ("evil.example", False),
        ("localhost.evil.example", False),
        ("10.0.0.1", False),
        ("127.0.0.1.evil.example", False),
    ],
)
def test_loopback_names_are_localhost_and_loopback_literals(value: str, loopback: bool) -> None:
    """Only `localhost` and loopback IP literals are loopback names, whatever the port."""
    assert is_loopback_name(parse_host(value)) is loopback


@pytest.mark.parametrize(
    ("settings", "origin", "host", "allowed"),
    [
        ({}, None, "127.0.0.1:8000", True),  # not a browser
        ({}, "http://127.0.0.1:8000", "127.0.0.1:8000", True),
        ({}, "http://localhost:8000", "localhost:8000", True),
        ({}, "http://evil.example:8000", "evil.example:8000", False),  # DNS rebinding
        ({}, "http://localhost:3000", "127.0.0.1:8000", False),  # another origin
        ({"allowed_origins": ["http://localhost:3000"]}, "http://localhost:3000", "x", True),
        ({"allowed_hosts": ["corral.test"]}, "https://corral.test", "corral.test", True),
        ({"allowed_hosts": ["corral.test"]}, "http://localhost:8000", "localhost:8000", False),
        ({"host": "10.0.0.5"}, "http://10.0.0.5:8000", "10.0.0.5:8000", True),
        ({"host": "10.0.0.5"}, "http://evil.example:8000", "evil.example:8000", False),
        ({"host": "0.0.0.0"}, "http://corral.lan:8000", "corral.lan:8000", True),
        ({"host": "0.0.0.0"}, "http://corral.lan:8000", "other.lan:8000", False),
    ],
)
def test_websocket_origins_must_be_the_same_origin_under_the_servers_own_names(
    settings: dict[str, object], origin: str | None, host: str, allowed: bool
) -> None:
    """Same origin is not enough: the origin must also be one of the server's names (allowed
    hosts, else loopback names on a loopback server, else the bound host); a wildcard bind
    without allowed hosts compares with the request's own Host."""
    policy = HostPolicy.from_settings(Settings(**settings))  # type: ignore[arg-type]
    assert policy.origin_allowed(origin, host) is allowed


def test_a_malformed_allowed_host_fails_create_app_naming_the_setting() -> None:
    """A URL in CORRAL_ALLOWED_HOSTS is a configuration error at create_app, not at a request."""
    with pytest.raises(ConfigurationError, match="CORRAL_ALLOWED_HOSTS"):
        create_app(Settings(allowed_hosts="https://corral.example.com"))  # type: ignore[arg-type]


def test_corral_serve_with_a_malformed_allowed_host_exits_2(tmp_path: Path) -> None:
    """`corral serve` refuses the setting with status 2 and says what to write instead."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env["CORRAL_ALLOWED_HOSTS"] = "https://corral.example.com"
    result = subprocess.run(
        [sys.executable, "-m", "corral.cli", "serve", "--port", "0", "--data-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "CORRAL_ALLOWED_HOSTS" in result.stderr


# -- CORRAL_ALLOWED_HOSTS -----------------------------------------------------------------------


async def test_allowed_hosts_are_enforced_on_http(start_server: StartServer) -> None:
    """With CORRAL_ALLOWED_HOSTS, a request naming another Host is 403 forbidden; its names
    (any port unless one is given) are answered."""
    server = await start_server(allowed_hosts="corral.test, 127.0.0.1, api.test:8443")
    async with server.client() as client:
        assert forbidden(await client.get("/healthz", headers={"Host": "evil.example"}))
        assert forbidden(await client.get("/healthz", headers={"Host": "api.test:8444"}))
        assert (await client.get("/healthz", headers={"Host": "corral.test:1234"})).is_success
        assert (await client.get("/healthz", headers={"Host": "api.test:8443"})).is_success
        assert (await client.get("/healthz")).is_success  # 127.0.0.1:<port>
        refused = await client.get("/healthz", headers={"Host": "evil.example"})
        assert "CORRAL_ALLOWED_HOSTS" in refused.json()["error"]["message"]


async def test_allowed_hosts_refuse_requests_without_exactly_one_host(
    start_server: StartServer,
) -> None:
    """No Host header, or two of them, is no allowed Host."""
    server = await start_server(allowed_hosts="127.0.0.1")
    for head in (
        b"GET /healthz HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n",
    ):
        async with raw(server.url) as conn:
            await conn.send(head)
            response = await conn.read_response()
        assert response.status == 403
        assert response.json()["error"]["code"] == "forbidden"


async def test_allowed_hosts_are_enforced_on_websocket_upgrades(
    start_server: StartServer,
) -> None:
    """An upgrade naming another Host is refused 403; one naming the server is accepted."""
    server = await start_server(allowed_hosts="corral.test, 127.0.0.1")
    assert await upgrade_status(server.url, "evil.example") == 403
    assert await upgrade_status(server.url, "corral.test") == 101
    headers = server.headers("hal")
    async with websockets.connect(server.ws_url, additional_headers=headers) as ws:
        assert orjson.loads(await ws.recv()) == {"type": "ready", "user_id": "hal"}


# -- development tokens and WebSocket origins on a loopback server -------------------------------


async def test_dev_tokens_go_only_to_requests_addressed_to_a_loopback_name(
    server: LiveServer,
) -> None:
    """POST /v1/dev/token with Host evil.example is 403; with localhost:1234, [::1] or the
    server's own address it mints a token."""
    async with server.client() as client:
        body = {"user": "bob"}
        refused = await client.post("/v1/dev/token", json=body, headers={"Host": "evil.example"})
        assert forbidden(refused)
        assert "token" not in refused.text.replace("tokens", "")
        for host in ("localhost:1234", "[::1]:8000", host_of(server.url)):
            answer = await client.post("/v1/dev/token", json=body, headers={"Host": host})
            assert answer.status_code == 200, (host, answer.text)
            assert answer.json()["user_id"] == "bob"


async def test_websocket_from_a_rebinding_origin_is_refused(server: LiveServer) -> None:
    """Origin http://evil.example with Host evil.example (same origin, foreign name) is refused
    403 on a loopback server; the page's own origin is accepted; another local origin is not."""
    own = host_of(server.url)
    assert await upgrade_status(server.url, "evil.example", "Origin: http://evil.example") == 403
    assert await upgrade_status(server.url, own, f"Origin: http://{own}") == 101
    assert await upgrade_status(server.url, own, "Origin: http://localhost:3000") == 403
    assert await upgrade_status(server.url, own) == 101  # no Origin: not a browser


# -- CORRAL_METRICS_TOKEN ---------------------------------------------------------------------


async def test_metrics_need_the_metrics_token_when_one_is_set(start_server: StartServer) -> None:
    """With CORRAL_METRICS_TOKEN, /metrics is 401 (WWW-Authenticate: Bearer) without it or with
    another token — a user's token included — and Prometheus text with it."""
    token = secrets.token_urlsafe(24)
    server = await start_server(metrics_token=token)
    async with server.client() as client:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Bearer {token}x"},
            server.headers("mia"),
        ):
            refused = await client.get("/metrics", headers=headers)
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "unauthorized"
            assert refused.headers["www-authenticate"] == "Bearer"
        answer = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200
        assert "corral_runs_started_total" in answer.text
        assert (await client.get("/healthz")).status_code == 200  # nothing else changes


async def test_metrics_stay_open_without_a_metrics_token(server: LiveServer) -> None:
    """Without CORRAL_METRICS_TOKEN, /metrics answers as before."""
    async with server.client() as client:
        assert (await client.get("/metrics")).status_code == 200


# -- under a mount ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def mounted(settings: Settings) -> AsyncIterator[str]:
    """corral mounted at /corral in a parent app on a real server; yields the base URL."""
    corral_app = create_app(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with corral_app.router.lifespan_context(corral_app):
            yield

    parent = FastAPI(lifespan=lifespan)
    parent.mount("/corral", corral_app)
    server = _TestServer(uvicorn_config(settings, parent))
    task = asyncio.create_task(server.serve())
    try:
        await asyncio.wait_for(server.ready_event.wait(), 30)
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def test_checks_hold_under_a_mount_prefix(tmp_path: Path, sqlite_url: str) -> None:
    """Mounted at /corral, the dev-token Host check and the metrics token still apply."""
    token = secrets.token_urlsafe(24)
    settings = Settings(
        data_dir=tmp_path,
        database_url=sqlite_url,
        jwt_secret=secrets.token_hex(32),
        port=0,
        metrics_token=token,  # type: ignore[arg-type]
    )
    async with mounted(settings) as url, httpx.AsyncClient(base_url=url) as client:
        dev = await client.post(
            "/corral/v1/dev/token", json={"user": "bob"}, headers={"Host": "evil.example"}
        )
        assert forbidden(dev)
        assert (await client.post("/corral/v1/dev/token", json={"user": "bob"})).is_success
        assert (await client.get("/corral/metrics")).status_code == 401
        metrics = await client.get("/corral/metrics", headers={"Authorization": f"Bearer {token}"})
        assert metrics.status_code == 200
