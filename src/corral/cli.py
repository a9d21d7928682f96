"""The ``corral`` command: parses arguments and calls library factories, nothing more."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from corral.errors import ConfigurationError

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


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind [env CORRAL_HOST].")] = None,
    port: Annotated[
        int | None, typer.Option(help="Port; 0 picks a free one [env CORRAL_PORT].")
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
) -> None:
    """Start the HTTP, WebSocket and SSE server with the web page and an executor."""
    from corral.server.runner import run_server

    settings = _settings(
        host=host,
        port=port,
        database_url=database_url,
        redis_url=redis_url,
        agents=agents,
        data_dir=data_dir,
        log_json=log_json,
        log_level=log_level,
    )
    try:
        run_server(settings)
    except ConfigurationError as exc:
        typer.echo(f"corral: {exc}", err=True)
        raise typer.Exit(2) from None


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
    from corral.server.auth import issue_token
    from corral.settings import load_secret

    settings = _settings(data_dir=data_dir)
    try:
        secret = load_secret(settings)
        typer.echo(issue_token(secret, user, ttl_s=ttl, roles=tuple(role or ())))
    except (ConfigurationError, ValueError) as exc:
        typer.echo(f"corral: {exc}", err=True)
        raise typer.Exit(2) from None


def main() -> None:
    app(prog_name="corral")


if __name__ == "__main__":  # pragma: no cover
    main()
