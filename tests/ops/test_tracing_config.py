"""When corral traces: the OTEL_* variables decide; off costs no tracing code; configured
without the extra, `corral serve` and `corral worker` exit 2 naming it (contract §13)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from corral.telemetry import tracing_configured

# A whole app lifespan and one run through it; prints the tracing modules then loaded.
APP_AND_RUN = textwrap.dedent(
    """
    import asyncio, json, sys
    import httpx
    from corral.server.app import create_app
    from corral.server.auth import issue_token
    from corral.settings import Settings

    async def main() -> None:
        settings = Settings(data_dir=sys.argv[1], jwt_secret=sys.argv[2])
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            headers = {"Authorization": "Bearer " + issue_token(sys.argv[2], "ann")}
            async with httpx.AsyncClient(
                transport=transport, base_url="http://127.0.0.1", headers=headers
            ) as http:
                if sys.argv[3] == "run":
                    body = {"agent": "echo", "input": {"message": "m", "steps": 2}}
                    run = (await http.post("/v1/runs", json=body)).json()
                    for _ in range(600):
                        run = (await http.get("/v1/runs/" + run["run_id"])).json()
                        if run["status"] == "succeeded":
                            break
                        await asyncio.sleep(0.01)
                    assert run["status"] == "succeeded", run
        prefixes = ("corral.otel", "opentelemetry.sdk.trace", "opentelemetry.exporter")
        tracing = sorted(m for m in sys.modules if m.startswith(prefixes))
        print(json.dumps(tracing))

    asyncio.run(main())
    """
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return {**env, **extra}


def _loaded_tracing_modules(tmp_path: Path, mode: str, **env: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", APP_AND_RUN, str(tmp_path), secrets.token_hex(32), mode],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(**env),
    )
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


def test_with_tracing_off_a_run_loads_no_tracing_code(tmp_path: Path) -> None:
    """No OTEL_* endpoint: an app's whole life and a run import neither corral.otel nor the
    OpenTelemetry tracing SDK or exporter (the check can fail: see the next test)."""
    assert _loaded_tracing_modules(tmp_path, "run") == []


def test_with_an_endpoint_set_the_tracer_is_loaded(tmp_path: Path) -> None:
    """The counterpart: with OTEL_EXPORTER_OTLP_ENDPOINT the same program loads them."""
    loaded = _loaded_tracing_modules(
        tmp_path, "lifespan", OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9"
    )
    assert "corral.otel" in loaded
    assert any(m.startswith("opentelemetry.exporter.otlp.proto.http") for m in loaded)


# The OpenTelemetry packages made unimportable, as in an install without corral[otel].
WITHOUT_EXTRA = textwrap.dedent(
    """
    import sys
    for name in ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"):
        sys.modules[name] = None
    from corral.cli import main
    sys.argv = ["corral", *sys.argv[1:]]
    main()
    """
)


@pytest.mark.parametrize(
    ("variable", "command"),
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", ["serve", "--port", "0"]),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ["serve", "--port", "0"]),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", ["worker", "--redis-url", "redis://127.0.0.1:9/0"]),
    ],
)
def test_configured_without_the_extra_exits_2_naming_it(
    tmp_path: Path, variable: str, command: list[str]
) -> None:
    """OTEL endpoint set, OpenTelemetry missing: exit status 2 and a message naming
    `corral[otel]` and the variable, before anything starts."""
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRA, *command],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=_env(
            **{variable: "http://127.0.0.1:4318"},
            CORRAL_DATABASE_URL="postgresql+asyncpg://u@127.0.0.1:9/db",
            CORRAL_JWT_SECRET=secrets.token_hex(32),
        ),
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "pip install 'corral[otel]'" in result.stderr
    assert variable in result.stderr
    assert "corral listening" not in result.stdout


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),
    ],
)
def test_tracing_is_on_exactly_when_an_otlp_endpoint_is_set(env: dict[str, str], on: bool) -> None:
    """The standard variables decide; disabling them the standard ways turns tracing off."""
    assert tracing_configured(env) is on
