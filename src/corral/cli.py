"""The ``corral`` command: parses arguments and calls library factories, nothing more."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from corral.errors import ConfigurationError, ContextError

# --auth / --secrets (contract §2), shared by serve and worker.
AuthOption = Annotated[
    str | None,
    typer.Option(
        "--auth",
        help="MODULE:ATTR of an authentication hook replacing the JWT check (env CORRAL_AUTH).",
    ),
]
SecretsOption = Annotated[
    str | None,
    typer.Option(
        "--secrets",
        help="MODULE:ATTR of a per-user secrets resolver (env CORRAL_SECRETS).",
    ),
]

app = typer.Typer(
    name="corral",
    help="Run AI agents for many users at once; each user's events reach only that user.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _settings(**options: Any) -> Any:
    from pydantic import ValidationError

    from corral.settings import Settings

    given = {k: v for k, v in options.items() if v is not None and v != []}
    try:
        return Settings(**given)
    except ValidationError as exc:
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            typer.echo(f"corral: invalid setting {field}: {err['msg']}", err=True)
        raise typer.Exit(2) from None


@contextlib.contextmanager
def _configuration_errors() -> Iterator[None]:
    """A setting that cannot work ends the command with its message and status 2."""
    try:
        yield
    except (ConfigurationError, ContextError) as exc:
        typer.echo(f"corral: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (env CORRAL_HOST).")] = None,
    port: Annotated[
        int | None, typer.Option(help="Port; 0 picks a free one (env CORRAL_PORT).")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="sqlite+aiosqlite:///… or postgresql+asyncpg://…")
    ] = None,
    redis_url: Annotated[
        str | None, typer.Option(help="redis://… for several nodes; none: single node")
    ] = None,
    agents: Annotated[
        list[str] | None,
        typer.Option("--agents", help="MODULE[:ATTR] providing agents (repeatable)."),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where the default database and secret live.")
    ] = None,
    log_json: Annotated[
        bool | None, typer.Option("--log-json/--log-text", help="JSON log lines.")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING…")] = None,
    executor: Annotated[
        bool | None,
        typer.Option(
            "--executor/--no-executor",
            help="With --redis-url: also execute runs here (default), or only serve the API.",
        ),
    ] = None,
    auth: AuthOption = None,
    secrets: SecretsOption = None,
) -> None:
    """Start the HTTP, WebSocket and SSE server with the web page and an executor."""
    from corral.assembly import check_topology
    from corral.auth.factory import check_auth_settings
    from corral.loading import load_agents
    from corral.server.runner import run_server
    from corral.telemetry import check_tracing

    settings = _settings(
        host=host,
        port=port,
        database_url=database_url,
        redis_url=redis_url,
        agents=agents,
        data_dir=data_dir,
        log_json=log_json,
        log_level=log_level,
        executor=executor,
        auth=auth,
        secrets=secrets,
    )
    with _configuration_errors():
        check_auth_settings(settings)  # a bad --auth/--secrets/JWT setting exits 2 here
        check_tracing()  # OTEL_* set without corral[otel] exits 2 here
        check_topology(settings, execute=settings.executor)  # e.g. --no-executor, no Redis
        registry = load_agents(settings.agents)  # an --agents module that does not load
        run_server(settings, registry)


@app.command()
def worker(
    database_url: Annotated[
        str | None, typer.Option(help="postgresql+asyncpg://… (shared by the cluster)")
    ] = None,
    redis_url: Annotated[str | None, typer.Option(help="redis://… (shared by the cluster)")] = None,
    agents: Annotated[
        list[str] | None,
        typer.Option("--agents", help="MODULE[:ATTR] providing agents (repeatable)."),
    ] = None,
    log_json: Annotated[bool | None, typer.Option("--log-json/--log-text")] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING…")] = None,
    auth: AuthOption = None,
    secrets: SecretsOption = None,
) -> None:
    """Execute runs from the cluster's queue (needs --redis-url and a PostgreSQL database)."""
    from corral.auth.factory import check_auth_settings
    from corral.telemetry import check_tracing
    from corral.worker_main import run_worker

    settings = _settings(
        database_url=database_url,
        redis_url=redis_url,
        agents=agents,
        log_json=log_json,
        log_level=log_level,
        auth=auth,
        secrets=secrets,
    )
    with _configuration_errors():
        check_auth_settings(settings, tokens=False)  # a worker signs nobody in
        check_tracing()
        run_worker(settings)


@app.command()
def token(
    user: Annotated[str, typer.Argument(help="The user id (the token's `sub`).")],
    ttl: Annotated[int, typer.Option(min=1, help="Lifetime in seconds.")] = 3600,
    role: Annotated[
        list[str] | None, typer.Option("--role", help="Add a role (repeatable).")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where the secret lives.")] = None,
) -> None:
    """Print a bearer token for USER, signed with this machine's server secret."""
    from corral.auth.factory import dev_token_secret
    from corral.server.auth import issue_token
    from corral.settings import load_secret

    settings = _settings(data_dir=data_dir)
    with _configuration_errors():
        if dev_token_secret(settings) is None:
            # Still printed (it may be meant for another server), but said plainly.
            typer.echo(
                "corral: warning: these settings verify sign-ins with a hook, a public key, a "
                "JWKS or without HS256; an HS256 token from `corral token` will not sign in "
                "there",
                err=True,
            )
        secret = load_secret(settings)
        typer.echo(issue_token(secret, user, ttl_s=ttl, roles=tuple(role or ())))


@app.command()
def loadtest(
    url: Annotated[str, typer.Option(help="The server, e.g. http://127.0.0.1:8000.")],
    users: Annotated[int, typer.Option(min=1, help="Simulated users.")] = 20,
    runs_per_user: Annotated[int, typer.Option(min=1, help="Runs each user starts.")] = 2,
    connections_per_user: Annotated[
        int, typer.Option(min=1, help="WebSocket connections each user holds.")
    ] = 2,
    agent: Annotated[str, typer.Option(help="The agent to run.")] = "echo",
    steps: Annotated[int, typer.Option(help="echo: steps per run.")] = 3,
    delay_ms: Annotated[int, typer.Option(help="echo: milliseconds before each step.")] = 0,
    ramp_s: Annotated[float, typer.Option(help="Spread user arrivals over this many seconds.")] = 0,
    in_flight: Annotated[int, typer.Option(min=1, help="Runs of one user at a time.")] = 1,
    token_secret: Annotated[
        str | None,
        typer.Option(help="Mint HS256 tokens with this secret (env CORRAL_JWT_SECRET)."),
    ] = None,
    token_command: Annotated[
        str | None,
        typer.Option(help="Run per user for a token, e.g. 'corral token {user}'."),
    ] = None,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Write every result to this file.")
    ] = None,
    server_pid: Annotated[
        int | None, typer.Option(help="Measure this local server process's RSS.")
    ] = None,
    timeout_s: Annotated[float, typer.Option(help="Bound on every single wait.")] = 60.0,
    connect_concurrency: Annotated[
        int, typer.Option(min=1, help="WebSocket handshakes in flight at once.")
    ] = 200,
    http_connections: Annotated[int, typer.Option(min=1, help="HTTP connection pool size.")] = 256,
    fail_on_errors: Annotated[
        bool, typer.Option(help="Also exit 1 on errors (HTTP, WebSocket, timeouts).")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Live progress on a terminal.")] = True,
    drop_every_s: Annotated[
        float,
        typer.Option(
            help="Chaos: each connection drops its socket about this often (s), then "
            "reconnects and resumes; 0: never."
        ),
    ] = 0.0,
) -> None:
    """Prove isolation under load: simulated users over real HTTP and WebSocket connections.

    Exit status 1 on any isolation, completeness or order violation; 0 otherwise.
    """
    from corral.loadtest import LoadtestConfig, run_cli

    try:
        config = LoadtestConfig(
            url=url,
            users=users,
            runs_per_user=runs_per_user,
            connections_per_user=connections_per_user,
            agent=agent,
            steps=steps,
            delay_ms=delay_ms,
            ramp_s=ramp_s,
            in_flight=in_flight,
            token_secret=token_secret,
            token_command=token_command,
            server_pid=server_pid,
            timeout_s=timeout_s,
            connect_concurrency=connect_concurrency,
            http_connections=http_connections,
            fail_on_errors=fail_on_errors,
            drop_every_s=drop_every_s,
        )
    except ConfigurationError as exc:
        typer.echo(f"corral: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(run_cli(config, json_path=json_file, progress=progress))


# corral check (contract §14): the whole command; the checker lives in corral.check.
@app.command()
def check(
    paths: Annotated[
        list[Path],
        typer.Argument(metavar="PATH", help="Python files, or folders searched recursively."),
    ],
    output_format: Annotated[
        str, typer.Option("--format", metavar="text|json", help="One line per finding, or JSON.")
    ] = "text",
) -> None:
    """Report state that one user's run could leave for another's in agent and tool code.

    Exit status 0 when clean, 1 with findings, 2 for bad usage or a file that does not parse.
    `# corral: shared-ok <reason>` on a line accepts its finding.
    """
    from corral.check import run_check

    raise typer.Exit(run_check(paths, output_format))


def main() -> None:
    app(prog_name="corral")


if __name__ == "__main__":  # pragma: no cover
    main()
